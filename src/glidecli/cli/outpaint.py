"""`glide outpaint`: grow a picture's canvas and paint the new border from a prompt; and the
options `glide inpaint` gains for big pictures (--fit region, --context, --feather)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from ..files.manifest import load_manifest
from . import editing
from . import options as opt
from .run import RunOptions, build_stage, click_errors, make_jobs, render_to_files, upsampler_stage

MAX_CANVAS = 8192  # as render.regions.MAX_CANVAS (not imported: --help stays free of numpy); a test keeps them equal

Side = Annotated[int, typer.Option(min=0, max=MAX_CANVAS, help="Pixels to add on this side.", rich_help_panel="Canvas")]

# --fit of glide inpaint: "region" works at the picture's own size; the others fit the
# picture to the model's square as before. "auto" picks region for pictures bigger than
# the final model's size.
InpaintFitMode = Literal["auto", "region", "crop", "pad", "stretch"]
InpaintFit = Annotated[
    InpaintFitMode,
    typer.Option(
        "--fit",
        help="auto: 'region' for pictures larger than the model's output, else 'crop'. region: repaint a square around the"
        " mask at the models' size and paste it back feathered; the picture keeps its size and every other pixel."
        " crop/pad/stretch: fit the whole picture to the model's square (the output is that square).",
        rich_help_panel=opt.SAMPLING,
    ),
]
Context = Annotated[
    int, typer.Option("--context", min=0, max=MAX_CANVAS, help="--fit region: pixels of the picture around the mask that the models see.", rich_help_panel=opt.SAMPLING)
]
Feather = Annotated[
    int, typer.Option("--feather", min=0, max=256, help="--fit region: pixels over which the repainted region fades into the picture around the mask.", rich_help_panel=opt.SAMPLING)
]


def parse_size(text: str, option: str = "--to") -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise click_errors.BadParameter(f"{text!r} is not WIDTHxHEIGHT, e.g. 512x256", param_hint=f"'{option}'")
    width, height = int(match.group(1)), int(match.group(2))
    if not (0 < width <= MAX_CANVAS and 0 < height <= MAX_CANVAS):
        raise click_errors.BadParameter(f"{text} is outside 1..{MAX_CANVAS} pixels per side", param_hint=f"'{option}'")
    return width, height


def canvas_extension(image: Path, left: int, right: int, top: int, bottom: int, to: Optional[str]):
    """How far to grow IMAGE, checked before any model loads."""
    from ..files.images import _open
    from ..render.regions import Extension

    sides = (left, right, top, bottom)
    if to is not None and any(sides):
        raise click_errors.UsageError("give --to or --left/--right/--top/--bottom, not both")
    width, height = _open(image).size
    if to is not None:
        new_width, new_height = parse_size(to)
        if new_width < width or new_height < height:
            raise click_errors.BadParameter(f"{to} is smaller than the picture ({width}x{height})", param_hint="'--to'")
        extension = Extension.to_size(width, height, new_width, new_height)
    else:
        extension = Extension(*sides)
    if extension.empty:
        raise click_errors.UsageError(f"nothing to extend: {image} is already {width}x{height}; give --left/--right/--top/--bottom or a larger --to")
    canvas = extension.canvas(width, height)
    if max(canvas) > MAX_CANVAS:
        raise click_errors.UsageError(f"the canvas would be {canvas[0]}x{canvas[1]}; at most {MAX_CANVAS} pixels per side")
    return extension


@opt.with_run_options(compile_networks=True)
def outpaint(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="The picture to extend (any size).", show_default=False)],
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What the whole, bigger picture shows.", show_default=False)],
    left: Side = 0,
    right: Side = 0,
    top: Side = 0,
    bottom: Side = 0,
    to: Annotated[Optional[str], typer.Option("--to", metavar="WxH", help="The canvas size instead of the four sides; the picture stays centred.", rich_help_panel="Canvas")] = None,
    context: Annotated[Optional[int], typer.Option("--context", min=1, help="Pixels of each window already painted, towards the picture (default: half the window's shorter side).", show_default=False, rich_help_panel="Canvas")] = None,
    scale: opt.Scale = 5.0,
    negative: opt.Negative = None,
    steps: opt.Steps = "100",
    sampler: opt.Sampler = "ddpm",
    eta: opt.Eta = 0.0,
    threshold: opt.Threshold = None,
    upsample_steps: opt.UpsampleSteps = "fast27",
    upsample_sampler: opt.UpsampleSampler = "ddpm",
    upsample_temp: opt.UpsampleTemp = 0.997,
    size: Annotated[Optional[int], typer.Option("--size", help="Window size: the base model's (64: base model only) or the upsampler's (256, default).", show_default=False, rich_help_panel=opt.OUTPUT)] = None,
    window_size: Annotated[Optional[str], typer.Option("--window", metavar="WxH", help="Rectangular windows instead of the models' squares, sides as glide generate's --width/--height (e.g. 384x256; with --size 64 of the base model's).", show_default=False, rich_help_panel="Canvas")] = None,
    num: opt.Num = 1,
    batch_size: opt.BatchSize = "auto",
    seed: opt.Seed = None,
    opts: RunOptions = opt.RUN_OPTIONS,
    model: Annotated[str, typer.Option("--model", help="Base inpainting model (manifest name).", rich_help_panel=opt.MODELS)] = "base-inpaint",
    upsample_model: Annotated[str, typer.Option("--upsample-model", help="Inpainting upsampler (manifest name).", rich_help_panel=opt.MODELS)] = "upsample-inpaint",
) -> None:
    """Extend IMAGE beyond its borders: the canvas grows by --left/--right/--top/--bottom
    pixels (or to --to WxH) and the inpainting models paint the new border from PROMPT.

    The border is painted in windows of the final model's size (256x256 with the upsampler,
    the base model's size with --size 64; --window WxH for rectangles) that step outward
    from the picture, each keeping --context pixels of what is already painted, so every
    window continues its neighbours.
    IMAGE's own pixels are kept bit for bit at their place in the canvas. Image i uses seed
    S + i for all its windows. Defaults as glide inpaint: scale 5, ddpm 100, upsampler ddpm fast27.
    """
    from ..render.engine import model_entry
    from ..render.outpaint import OutpaintSource, render_outpaint, window_context

    extension = canvas_extension(image, left, right, top, bottom, to)
    manifest = load_manifest(opts.weights)
    base = build_stage(manifest, model, "base-inpaint", sampler, steps, eta=eta, threshold=threshold, scale=scale)
    upsample = upsampler_stage(
        manifest, size, model, "base-inpaint", upsample_model, "upsample-inpaint", upsample_sampler, upsample_steps, upsample_temp
    )
    if window_size is not None:
        width, height = parse_size(window_size, "--window")
        base, upsample = editing.sized_stages(manifest, base, upsample, "base-inpaint", "upsample-inpaint", width, height, "'--window'")
    final = upsample or base
    window = model_entry(manifest, final.model, "upsample-inpaint" if upsample else "base-inpaint").arch.image_size
    if final.width or final.height:
        window = (final.width, final.height)
    try:
        window_context(window, context)
    except ValueError as error:
        raise click_errors.BadParameter(str(error).replace("--context ", ""), param_hint="'--context'") from None
    source = OutpaintSource(image, extension, context)
    jobs = make_jobs([prompt], num, seed, negative, shard=opts.shard)
    render_to_files(
        "outpaint",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_outpaint(
            session, todo, source, base, upsample, batch_size=batch_size, reporter=reporter, extra_meta=meta
        ),
    )


def inpaint_region(image: Path, mask: Optional[Path], invert: bool, fit: str, context: int, feather: int, final_size: int):
    """For glide inpaint: the RegionSource when the picture is inpainted at its own size
    (--fit region, or auto with a picture larger than final_size), else None. Either way
    a mask that selects nothing or everything is refused here, before any model loads."""
    from ..files.images import _open
    from ..files.pixels import check_repaints_something, load_repaint_mask
    from ..render.region_inpaint import RegionSource

    check_repaints_something(load_repaint_mask(image, mask, invert), mask or image)
    width, height = _open(image).size
    if fit == "region" or (fit == "auto" and max(width, height) > final_size):
        return RegionSource(image, mask, invert, context, feather)
    return None
