"""One diffusion stage from prompt to image tensor, usable from Python and driven by the CLI.

prompt -> tokens -> text embedding (once per batch) -> sampling loop (network + guidance)
-> image tensor in [-1, 1]. A full 256x256 picture is two stages: the base model at 64x64,
then the upsampler conditioned on the (8-bit quantized) base output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.guidance import (
    chain_x0_transforms,
    clip_gradient,
    clip_guided_denoiser,
    composed_model_fn,
    guided_model_fn,
    keep_known_region,
)
from ..diffusion.noise import ImageNoise
from ..diffusion.partial import partial_timesteps
from ..diffusion.samplers import (
    SAMPLERS,
    Callback,
    denoiser_from_model,
    dynamic_threshold,
    sample,
)
from ..diffusion.schedule import Schedule
from ..diffusion.vocabulary import SamplerName
from ..nets.clip import NoisedClip
from ..nets.tokenizer import GlideTokenizer
from ..nets.unet import Text2ImUNet, TextEmbedding
from .composition import is_composed, parse_prompt


@dataclass(frozen=True)
class SamplerChoice:
    """Which sampler, how many steps, and how x0 estimates are kept in range.

    `steps` is a respacing spec for ddpm/ddim/plms ("100", "fast27", "ddim50", "10,10,5");
    a count given to a solver (plms, dpmpp_2m, dpmpp_2m_sde) means the solvers' own grid
    (`samplers.solver_timesteps`), evenly spaced in t ("time20") or in log-SNR ("logsnr20");
    a bare count takes the solver's default grid. DPM-Solver++ takes counts only.
    `threshold` is a dynamic-thresholding percentile (e.g. 0.995); None clips x0 to [-1, 1]."""

    name: str = SamplerName.DDPM
    steps: str = "100"
    eta: float = 0.0
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; choose from {', '.join(SAMPLERS)}")
        if self.eta and self.name != SamplerName.DDIM:
            raise ValueError("eta applies to the ddim sampler only")
        if self.threshold is not None and not 0.5 <= self.threshold <= 1.0:
            raise ValueError(f"threshold percentile must be in [0.5, 1], got {self.threshold}")

    def schedule(self, noise_schedule: str, diffusion_steps: int = 1000, strength: float = 1.0) -> Schedule:
        """The schedule this choice walks; `strength` < 1 starts it part-way (img2img)."""
        timesteps = partial_timesteps(self.name, noise_schedule, str(self.steps), strength, diffusion_steps)
        return Schedule.from_timesteps(noise_schedule, timesteps, diffusion_steps)


@dataclass(frozen=True)
class Inpainting:
    """The source image and its keep mask (1 = keep) at the stage's resolution, [B,3,H,W] / [B,1,H,W]."""

    source: Tensor
    keep_mask: Tensor


@dataclass(frozen=True)
class ClipGuidance:
    clip: NoisedClip
    text_embeddings: Tensor  # [B, D], normalized
    scale: float


@dataclass(frozen=True)
class Composition:
    """Which image each row of a composed batch's text belongs to, and its weight."""

    owner: Tensor  # [rows] image index
    weights: Tensor  # [rows]


@dataclass(frozen=True)
class Conditioning:
    """The encoded prompts of a batch: one row per image, or with `composition` one row per
    component of a composed prompt; `uncond` (one row per image) for classifier-free guidance."""

    text: TextEmbedding
    uncond: TextEmbedding | None
    truncated: list[bool]  # per text row
    composition: Composition | None = None
    texts: tuple[str, ...] = ()  # the text of each row

    @property
    def batch(self) -> int:
        return self.uncond.pooled.shape[0] if self.composition is not None else self.text.pooled.shape[0]


def encode_prompts(
    model: Text2ImUNet,
    tokenizer: GlideTokenizer,
    prompts: Sequence[str],
    *,
    guided: bool,
    negative: Sequence[str] | None = None,
    compose: bool = False,
) -> Conditioning:
    """Tokenize and encode a batch once. The unconditional half uses the empty prompt, or the
    negative prompts when given (one per image). When `compose` and a prompt is composed
    with AND (render/composition.py), every component gets a row, and the batch is guided
    whatever the scale."""
    device = next(model.parameters()).device
    parsed = [parse_prompt(prompt) for prompt in prompts] if compose else None
    composition = None
    texts = list(prompts)
    if parsed is not None and any(is_composed(components) for components in parsed):
        texts = [component.text for components in parsed for component in components]
        owner = [b for b, components in enumerate(parsed) for _ in components]
        weights = [component.weight for components in parsed for component in components]
        composition = Composition(torch.tensor(owner, device=device), torch.tensor(weights, device=device))
        guided = True
    elif parsed is not None:
        texts = [components[0].text for components in parsed]
    batch = tokenizer.batch(texts)
    with torch.no_grad():
        text = model.encode_text(batch.tokens.to(device), batch.mask.to(device))
        uncond = None
        truncated = list(batch.truncated)
        if guided:
            negatives = list(negative) if negative is not None else [""] * len(prompts)
            uncond_batch = tokenizer.batch(negatives)
            uncond = model.encode_text(uncond_batch.tokens.to(device), uncond_batch.mask.to(device))
    return Conditioning(text, uncond, truncated, composition, tuple(texts))


def job_noise(jobs: Sequence) -> ImageNoise:
    """The noise of a batch of jobs: each job's seed, turned by its seed walk's angle when it
    has one (engine.WalkJob)."""
    return ImageNoise([job.seed for job in jobs], [getattr(job, "angle", None) for job in jobs])


def quantize_to_8bit(x: Tensor) -> Tensor:
    """Round an image to the 256 levels a PNG holds (the reference does this before upsampling)."""
    return ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1


def sample_stage(
    model: Text2ImUNet,
    conditioning: Conditioning,
    noise: ImageNoise,
    sampler: SamplerChoice,
    *,
    scale: float = 1.0,
    low_res: Tensor | None = None,
    inpainting: Inpainting | None = None,
    clip_guidance: ClipGuidance | None = None,
    temperature: float = 1.0,
    callback: Callback | None = None,
    init: Tensor | None = None,
    strength: float = 1.0,
    size: tuple[int, int] | None = None,
    network: Callable[..., Tensor] | None = None,
) -> Tensor:
    """Sample one batch of images [B, 3, H, W] in [-1, 1] from `model`.

    (H, W) is `size`, else the inpainting source's, else the model's square image size.
    With `init` [B, 3, H, W] and `strength` < 1 (img2img), the picture is diffused to the
    timestep at fraction `strength` of the sampler's grid and sampled from there
    (diffusion/partial.py); strength 1 ignores `init`: plain generation. `network`, when
    given, is called in place of `model` with its signature (a CUDA-graphed or compiled
    version of it, render/accel.py)."""
    cfg = model.config
    device = next(model.parameters()).device
    batch = conditioning.batch
    if len(noise) != batch:
        raise ValueError(f"{len(noise)} seeds for a batch of {batch} prompts")
    partial = init is not None and strength < 1.0
    schedule = sampler.schedule(cfg.noise_schedule, cfg.diffusion_steps, strength if partial else 1.0)
    if size is None:
        size = tuple(inpainting.source.shape[-2:]) if inpainting is not None else (cfg.image_size, cfg.image_size)

    images: dict[str, Tensor | None] = {"low_res": low_res}
    known_region = None
    if inpainting is not None:
        images["inpaint_image"] = inpainting.source * inpainting.keep_mask
        images["inpaint_mask"] = inpainting.keep_mask
        known_region = keep_known_region(inpainting.source, inpainting.keep_mask)
    if conditioning.composition is not None:
        parts = conditioning.composition
        model_fn = composed_model_fn(network or model, conditioning.text, conditioning.uncond, parts.owner, parts.weights, scale=scale, **images)
    else:
        model_fn = guided_model_fn(network or model, conditioning.text, uncond_text=conditioning.uncond, scale=scale, **images)

    # Threshold first, then paste the source, so the known region stays exact.
    threshold = None
    if sampler.threshold is not None:
        percentile = sampler.threshold
        threshold = lambda x0, i: dynamic_threshold(x0, percentile)  # noqa: E731
    denoise = denoiser_from_model(
        model_fn, schedule, x0_transform=chain_x0_transforms(threshold, known_region), prediction=cfg.prediction
    )

    mean_shift = None
    if clip_guidance is not None:
        grad = clip_gradient(clip_guidance.clip, clip_guidance.text_embeddings, clip_guidance.scale, schedule)
        if sampler.name == SamplerName.DDPM:
            mean_shift = grad
        else:
            denoise = clip_guided_denoiser(denoise, schedule, grad)

    x = noise.initial((3, *size), device, torch.float32) * temperature
    if partial:
        # The same first draw as plain generation, as the noise of q(x_t | x0) at the top.
        x = schedule.q_sample(init.to(device, torch.float32), len(schedule) - 1, x)
    result = sample(
        sampler.name, denoise, x, schedule, noise=noise, eta=sampler.eta, mean_shift=mean_shift, callback=callback
    )
    # Multistep solvers may land a hair outside the clipped range; images live in [-1, 1].
    result = result.clamp(-1.0, 1.0)
    if inpainting is not None:
        # The last x0 estimate already holds the source there; make it exact to the bit.
        result = result * (1 - inpainting.keep_mask) + inpainting.source * inpainting.keep_mask
    return result
