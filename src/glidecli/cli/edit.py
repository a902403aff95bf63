"""`glide upsample` and `glide inpaint`: pictures made from a picture and a prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..files.manifest import load_manifest
from . import editing
from . import options as opt
from .outpaint import Context, Feather, InpaintFit, inpaint_region
from .run import (
    RunOptions,
    build_stage,
    click_errors,
    make_jobs,
    render_to_files,
    upsampler_stage,
)


@opt.with_run_options(compile_networks=True)
def upsample(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="The picture to upsample (any size).", show_default=False)],
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What the picture shows.", show_default=False)],
    steps: Annotated[str, typer.Option("--upsample-steps", "--steps", help="Steps: a count, sections, 'ddimN' or 'fast27' (the reference's, with ddim).", rich_help_panel=opt.SAMPLING)] = "15",
    sampler: Annotated[opt.SamplerName, typer.Option("--upsample-sampler", "--sampler", help="Sampler.", rich_help_panel=opt.SAMPLING)] = "dpmpp_2m",
    temp: Annotated[float, typer.Option("--upsample-temp", "--temp", min=0.0, help="Scales the starting noise.", rich_help_panel=opt.SAMPLING)] = 0.997,
    fit: opt.Fit = "crop",
    num: opt.Num = 1,
    batch_size: opt.BatchSize = "auto",
    seed: opt.Seed = None,
    opts: RunOptions = opt.RUN_OPTIONS,
    model: Annotated[str, typer.Option("--upsample-model", "--model", help="Upsampler (manifest name).", rich_help_panel=opt.MODELS)] = "upsample",
) -> None:
    """Upsample IMAGE 4x (64 -> 256) with the text-conditional upsampler.

    IMAGE may be any size: it is fitted (--fit) to 64x64 and rounded to 8 bits, like the
    base model's output, before upsampling.
    """
    from ..files.images import load_image
    from ..render.engine import model_entry, render_upsample

    manifest = load_manifest(opts.weights)
    stage = build_stage(manifest, model, "upsample", sampler, steps, temperature=temp, steps_option="--upsample-steps")
    # GLIDE's upsampler was trained on 4x (64 -> 256).
    picture = load_image(image, max(1, model_entry(manifest, model, "upsample").arch.image_size // 4), fit)
    jobs = make_jobs([prompt], num, seed, None, shard=opts.shard)
    extra = {"image": str(image), "fit": fit}
    render_to_files(
        "upsample",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_upsample(
            session, todo, picture, stage, batch_size=batch_size, reporter=reporter, extra_meta={**meta, **extra}
        ),
    )


@opt.with_run_options(compile_networks=True)
def inpaint(
    arguments: Annotated[list[str], typer.Argument(metavar="IMAGE [MASK] PROMPT", help="The picture, an optional mask the same size (WHITE = repaint, black = keep), and the prompt. Without MASK, IMAGE's transparent pixels are repainted.", show_default=False)],
    scale: opt.Scale = 5.0,
    negative: opt.Negative = None,
    steps: opt.Steps = "100",
    sampler: opt.Sampler = "ddpm",
    eta: opt.Eta = 0.0,
    threshold: opt.Threshold = None,
    invert_mask: Annotated[bool, typer.Option("--invert-mask", help="Repaint the black (or opaque) part instead.", rich_help_panel=opt.SAMPLING)] = False,
    fit: InpaintFit = "auto",
    context: Context = 64,
    feather: Feather = 8,
    upsample_steps: opt.UpsampleSteps = "fast27",
    upsample_sampler: opt.UpsampleSampler = "ddpm",
    upsample_temp: opt.UpsampleTemp = 0.997,
    size: opt.Size = None,
    width: editing.Width = None,
    height: editing.Height = None,
    num: opt.Num = 1,
    batch_size: opt.BatchSize = "auto",
    seed: opt.Seed = None,
    opts: RunOptions = opt.RUN_OPTIONS,
    model: Annotated[str, typer.Option("--model", help="Base inpainting model (manifest name).", rich_help_panel=opt.MODELS)] = "base-inpaint",
    upsample_model: Annotated[str, typer.Option("--upsample-model", help="Inpainting upsampler (manifest name).", rich_help_panel=opt.MODELS)] = "upsample-inpaint",
) -> None:
    """Repaint part of IMAGE from PROMPT (inpainting at 64x64, then 256x256).

    MASK is a picture the size of IMAGE: WHITE = repaint, BLACK = keep (the usual
    convention; --invert-mask swaps them). Without MASK, IMAGE's transparent pixels are
    repainted. A picture larger than the models' output (256) is edited at its own size: a
    square around the mask (plus --context pixels) is repainted and pasted back with a
    --feather edge (--fit region); --fit crop/pad/stretch instead fit the picture to the
    models' square, or to the rectangle --width/--height ask for (then --fit auto means
    crop). Pixels outside the (feathered) mask are the source's exactly. Defaults follow
    the reference notebook: scale 5, ddpm 100 steps; upsampler ddpm fast27, temperature
    0.997.
    """
    from ..render.engine import InpaintSource, model_entry, render_inpaint
    from ..render.region_inpaint import render_inpaint_region

    if len(arguments) not in (2, 3):
        raise click_errors.UsageError(f"expected IMAGE [MASK] PROMPT, got {len(arguments)} arguments")
    image, mask, prompt = (arguments[0], None, arguments[1]) if len(arguments) == 2 else arguments
    manifest = load_manifest(opts.weights)
    base = build_stage(manifest, model, "base-inpaint", sampler, steps, eta=eta, threshold=threshold, scale=scale)
    upsample = upsampler_stage(
        manifest, size, model, "base-inpaint", upsample_model, "upsample-inpaint", upsample_sampler, upsample_steps, upsample_temp
    )
    fit = editing.sized_fit(fit, width, height)
    base, upsample = editing.sized_stages(manifest, base, upsample, "base-inpaint", "upsample-inpaint", width, height)
    final = model_entry(manifest, upsample.model, "upsample-inpaint") if upsample else model_entry(manifest, model, "base-inpaint")
    region = inpaint_region(Path(image), Path(mask) if mask else None, invert_mask, fit, context, feather, final.arch.image_size)
    source = InpaintSource(Path(image), Path(mask) if mask else None, "crop" if fit in ("auto", "region") else fit, invert_mask)
    jobs = make_jobs([prompt], num, seed, negative, shard=opts.shard)
    render_to_files(
        "inpaint",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: (
            render_inpaint_region(session, todo, region, base, upsample, batch_size=batch_size, reporter=reporter, extra_meta=meta)
            if region is not None
            else render_inpaint(session, todo, source, base, upsample, batch_size=batch_size, reporter=reporter, extra_meta=meta)
        ),
    )
