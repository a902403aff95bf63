"""`glide generate` and `glide clip-guide`: pictures from text alone."""

from __future__ import annotations

from typing import Any

from ..request.commands import ClipGuideRequest, GenerateRequest
from . import options as opt
from .run import RunOptions, collect_prompts, render_request


@opt.rendering_command(GenerateRequest, compile_networks=True)
def generate(
    prompt: opt.Prompt = None, prompts_file: opt.PromptsFile = None, values: Any = opt.REQUEST, opts: RunOptions = opt.RUN_OPTIONS
) -> None:
    """Draw PROMPT: the base model at 64x64, then the upsampler to 256x256.

    --init-image starts from a picture (img2img, --strength); --width/--height make other
    sizes; --best-of N keeps the best of N candidates by a CLIP score.

    The base model uses classifier-free guidance (--scale {GENERATE_BASE.scale:g}). Default sampling is fast and
    matches the reference notebook's on the project's measures: {GENERATE_BASE.sampler} with {GENERATE_BASE.steps} steps,
    then the upsampler with {GENERATE_UPSAMPLE.sampler}, {GENERATE_UPSAMPLE.steps} steps, temperature {UPSAMPLE_TEMPERATURE}. The notebook's own:
    --sampler {REFERENCE_BASE.sampler} --steps {REFERENCE_BASE.steps} --upsample-sampler {REFERENCE_UPSAMPLE.sampler} --upsample-steps {REFERENCE_UPSAMPLE.steps}.
    Image i of each prompt uses seed + i, whatever --batch-size is.
    """
    render_request(GenerateRequest, {**values, "prompts": collect_prompts(prompt, prompts_file)}, opts)


@opt.rendering_command(ClipGuideRequest, compile_networks=True)
def clip_guide(
    prompt: opt.Prompt = None, prompts_file: opt.PromptsFile = None, values: Any = opt.REQUEST, opts: RunOptions = opt.RUN_OPTIONS
) -> None:
    """Draw PROMPT with the base model steered by the noised CLIP, then upsample.

    The gradient of CLIP's image-text similarity shifts every step (--clip-scale); there
    is no classifier-free guidance, as in the reference notebook ({CLIP_GUIDE_BASE.sampler}, {CLIP_GUIDE_BASE.steps} steps; CLIP
    guidance needs ddpm). The upsampler runs as in `glide generate`.
    """
    render_request(ClipGuideRequest, {**values, "prompts": collect_prompts(prompt, prompts_file)}, opts)
