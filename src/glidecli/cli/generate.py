"""`glide generate` and `glide clip-guide`: pictures from text alone."""

from __future__ import annotations

from typing import Annotated

import typer

from ..files.manifest import load_manifest
from . import editing
from . import options as opt
from .run import (
    RunOptions,
    build_stage,
    click_errors,
    collect_prompts,
    make_jobs,
    render_to_files,
    upsampler_stage,
)


@opt.with_run_options(compile_networks=True)
def generate(
    prompt: opt.Prompt = None,
    scale: opt.Scale = 3.0,
    negative: opt.Negative = None,
    steps: opt.Steps = "20",
    sampler: opt.Sampler = "dpmpp_2m_sde",
    eta: opt.Eta = 0.0,
    threshold: opt.Threshold = None,
    upsample_steps: opt.UpsampleSteps = "15",
    upsample_sampler: opt.UpsampleSampler = "dpmpp_2m",
    upsample_temp: opt.UpsampleTemp = 0.997,
    size: opt.Size = None,
    width: editing.Width = None,
    height: editing.Height = None,
    init_image: editing.InitImageOption = None,
    strength: editing.Strength = None,
    upsample_strength: editing.UpsampleStrength = None,
    init_fit: editing.InitFit = "crop",
    best_of: editing.BestOfOption = 1,
    rank_model: editing.RankModel = "ViT-B-32:laion2b_s34b_b79k",
    prompts_file: opt.PromptsFile = None,
    num: opt.Num = 1,
    batch_size: opt.BatchSize = "auto",
    seed: opt.Seed = None,
    opts: RunOptions = opt.RUN_OPTIONS,
    model: opt.BaseModel = "base",
    upsample_model: opt.UpsampleModel = "upsample",
) -> None:
    """Draw PROMPT: the base model at 64x64, then the upsampler to 256x256.

    --init-image starts from a picture (img2img, --strength); --width/--height make other
    sizes; --best-of N keeps the best of N candidates by a CLIP score.

    The base model uses classifier-free guidance (--scale 3). Default sampling is fast and
    matches the reference notebook's on the project's measures: dpmpp_2m_sde with 20 steps,
    then the upsampler with dpmpp_2m, 15 steps, temperature 0.997. The notebook's own:
    --sampler ddpm --steps 100 --upsample-sampler ddim --upsample-steps fast27.
    Image i of each prompt uses seed + i, whatever --batch-size is.
    """
    from ..render.engine import render_generate

    manifest = load_manifest(opts.weights)
    base = build_stage(manifest, model, "base", sampler, steps, eta=eta, threshold=threshold, scale=scale)
    upsample = upsampler_stage(
        manifest, size, model, "base", upsample_model, "upsample", upsample_sampler, upsample_steps, upsample_temp
    )
    base, upsample = editing.sized_stages(manifest, base, upsample, "base", "upsample", width, height)
    init = editing.init_image(init_image, strength, upsample_strength, init_fit, upsample is not None)
    ranking = editing.best_of_choice(best_of, rank_model, init)
    jobs = make_jobs(collect_prompts(prompt, prompts_file), num, seed, negative, shard=opts.shard)
    render_to_files(
        "generate",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_generate(
            session, todo, base, upsample, batch_size=batch_size, reporter=reporter, extra_meta=meta, init=init, best_of=ranking
        ),
    )


@opt.with_run_options(compile_networks=True)
def clip_guide(
    prompt: opt.Prompt = None,
    clip_scale: Annotated[float, typer.Option("--clip-scale", min=0.0, help="Strength of the CLIP gradient.", rich_help_panel=opt.SAMPLING)] = 3.0,
    steps: opt.Steps = "100",
    sampler: opt.Sampler = "ddpm",
    eta: opt.Eta = 0.0,
    threshold: opt.Threshold = None,
    upsample_steps: opt.UpsampleSteps = "15",
    upsample_sampler: opt.UpsampleSampler = "dpmpp_2m",
    upsample_temp: opt.UpsampleTemp = 0.997,
    size: opt.Size = None,
    prompts_file: opt.PromptsFile = None,
    num: opt.Num = 1,
    batch_size: opt.BatchSize = "auto",
    seed: opt.Seed = None,
    opts: RunOptions = opt.RUN_OPTIONS,
    model: opt.BaseModel = "base",
    upsample_model: opt.UpsampleModel = "upsample",
    clip_image_model: Annotated[str, typer.Option("--clip-image-model", help="Noised CLIP image encoder.", rich_help_panel=opt.MODELS)] = "clip-image",
    clip_text_model: Annotated[str, typer.Option("--clip-text-model", help="Noised CLIP text encoder.", rich_help_panel=opt.MODELS)] = "clip-text",
) -> None:
    """Draw PROMPT with the base model steered by the noised CLIP, then upsample.

    The gradient of CLIP's image-text similarity shifts every step (--clip-scale); there
    is no classifier-free guidance, as in the reference notebook (ddpm, 100 steps; CLIP
    guidance needs ddpm). The upsampler runs as in `glide generate`.
    """
    from ..render.engine import ClipSteering, model_entry, render_generate

    manifest = load_manifest(opts.weights)
    model_entry(manifest, clip_image_model, "clip-image")
    model_entry(manifest, clip_text_model, "clip-text")
    if sampler != "ddpm":
        raise click_errors.BadParameter("CLIP guidance shifts each step's mean: use --sampler ddpm", param_hint="'--sampler'")
    base = build_stage(manifest, model, "base", sampler, steps, eta=eta, threshold=threshold)
    upsample = upsampler_stage(
        manifest, size, model, "base", upsample_model, "upsample", upsample_sampler, upsample_steps, upsample_temp
    )
    steering = ClipSteering(clip_image_model, clip_text_model, clip_scale)
    jobs = make_jobs(collect_prompts(prompt, prompts_file), num, seed, None, shard=opts.shard)
    render_to_files(
        "clip-guide",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_generate(
            session, todo, base, upsample, clip=steering, batch_size=batch_size, reporter=reporter, extra_meta=meta
        ),
    )
