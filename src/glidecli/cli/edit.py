"""`glide upsample`, `glide inpaint` and `glide outpaint`: pictures made from a picture and a prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..request.commands import InpaintRequest, OutpaintRequest, UpsampleRequest
from . import options as opt
from .run import RunOptions, click_errors, render_request

Picture = Annotated[Path | None, typer.Argument(metavar="IMAGE", help="The picture (any size).", show_default=False)]
Prompt = Annotated[str | None, typer.Argument(metavar="PROMPT", help="What the picture shows.", show_default=False)]


@opt.rendering_command(UpsampleRequest, compile_networks=True)
def upsample(image: Picture = None, prompt: Prompt = None, values: Any = opt.REQUEST, opts: RunOptions = opt.RUN_OPTIONS) -> None:
    """Upsample IMAGE 4x (64 -> 256) with the text-conditional upsampler.

    IMAGE may be any size: it is fitted (--fit) to 64x64 and rounded to 8 bits, like the
    base model's output, before upsampling.
    """
    render_request(UpsampleRequest, {**values, "image": image, "prompt": prompt}, opts)


@opt.rendering_command(InpaintRequest, compile_networks=True)
def inpaint(
    arguments: Annotated[list[str] | None, typer.Argument(metavar="IMAGE [MASK] PROMPT", help="The picture, an optional mask the same size (WHITE = repaint, black = keep), and the prompt. Without MASK, IMAGE's transparent pixels are repainted.", show_default=False)] = None,
    values: Any = opt.REQUEST,
    opts: RunOptions = opt.RUN_OPTIONS,
) -> None:
    """Repaint part of IMAGE from PROMPT (inpainting at 64x64, then 256x256).

    MASK is a picture the size of IMAGE: WHITE = repaint, BLACK = keep (the usual
    convention; --invert-mask swaps them). Without MASK, IMAGE's transparent pixels are
    repainted. A picture larger than the models' output (256) is edited at its own size: a
    square around the mask (plus --context pixels) is repainted and pasted back with a
    --feather edge (--fit region); --fit crop/pad/stretch instead fit the picture to the
    models' square, or to the rectangle --width/--height ask for (then --fit auto means
    crop). Pixels outside the (feathered) mask are the source's exactly. Defaults follow
    the reference notebook: scale {INPAINT_BASE.scale:g}, {INPAINT_BASE.sampler} {INPAINT_BASE.steps} steps; upsampler {INPAINT_UPSAMPLE.sampler} {INPAINT_UPSAMPLE.steps}, temperature
    {UPSAMPLE_TEMPERATURE}.
    """
    arguments = arguments or []
    if len(arguments) not in (0, 2, 3) or (not arguments and opts.from_image is None):
        raise click_errors.UsageError(f"expected IMAGE [MASK] PROMPT, got {len(arguments)} arguments")
    image, mask, prompt = (None, None, None) if not arguments else (arguments[0], None, arguments[1]) if len(arguments) == 2 else arguments
    render_request(InpaintRequest, {**values, "image": image, "mask": mask, "prompt": prompt}, opts)


@opt.rendering_command(OutpaintRequest, compile_networks=True)
def outpaint(
    image: Annotated[Path | None, typer.Argument(metavar="IMAGE", help="The picture to extend (any size).", show_default=False)] = None,
    prompt: Annotated[str | None, typer.Argument(metavar="PROMPT", help="What the whole, bigger picture shows.", show_default=False)] = None,
    values: Any = opt.REQUEST,
    opts: RunOptions = opt.RUN_OPTIONS,
) -> None:
    """Extend IMAGE beyond its borders: the canvas grows by --left/--right/--top/--bottom
    pixels (or to --to WxH) and the inpainting models paint the new border from PROMPT.

    The border is painted in windows of the final model's size (256x256 with the upsampler,
    the base model's size with --size 64; --window WxH for rectangles) that step outward
    from the picture, each keeping --context pixels of what is already painted, so every
    window continues its neighbours.
    IMAGE's own pixels are kept bit for bit at their place in the canvas. Image i uses seed
    S + i for all its windows. Defaults as glide inpaint: scale {INPAINT_BASE.scale:g}, {INPAINT_BASE.sampler} {INPAINT_BASE.steps}, upsampler {INPAINT_UPSAMPLE.sampler} {INPAINT_UPSAMPLE.steps}.
    """
    render_request(OutpaintRequest, {**values, "image": image, "prompt": prompt}, opts)
