"""The options of `glide generate` for editing workflows: img2img (--init-image and its
strengths), other sizes (--width/--height, which `glide inpaint` takes too) and best of N
(--best-of, --rank-model); each checked before any model loads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..files.manifest import Manifest
from . import options as opt
from .run import click_errors

if TYPE_CHECKING:
    from ..render.engine import Stage
    from ..render.img2img import InitImage
    from ..render.ranking import BestOf

IMG2IMG = "Starting from a picture (img2img)"

InitImageOption = Annotated[
    Optional[Path],
    typer.Option("--init-image", help="Start from this picture instead of pure noise (img2img); needs --strength and/or --upsample-strength.", show_default=False, rich_help_panel=IMG2IMG),
]
Strength = Annotated[
    Optional[float],
    typer.Option("--strength", help="How much of the init picture the base model redraws, 0 < S <= 1 (1: plain generation). It is noised to the timestep at fraction S of the schedule and sampled from there.", show_default=False, rich_help_panel=IMG2IMG),
]
UpsampleStrength = Annotated[
    Optional[float],
    typer.Option("--upsample-strength", help="The upsampler too starts from the init picture (meant for one at the upsampler's size), noised at this strength. Without --strength the base model does not run: the upsampler alone redraws the picture.", show_default=False, rich_help_panel=IMG2IMG),
]
InitFit = Annotated[opt.FitMode, typer.Option("--init-fit", help="Fitting the init picture to the size made: crop (centre), pad (black borders), stretch.", rich_help_panel=IMG2IMG)]
Width = Annotated[
    Optional[int],
    typer.Option("--width", help="Width of the pictures (default --size): with the upsampler a multiple of 32 from 128 to 512 for GLIDE's models (base model alone: of 8, from 32 to 128).", show_default=False, rich_help_panel=opt.OUTPUT),
]
Height = Annotated[Optional[int], typer.Option("--height", help="Height of the pictures (as --width).", show_default=False, rich_help_panel=opt.OUTPUT)]
BestOfOption = Annotated[
    int,
    typer.Option("--best-of", min=1, help="Draw N candidates per picture (from its seed) and keep the one --rank-model scores highest for the prompt.", rich_help_panel=opt.SAMPLING),
]
RankModel = Annotated[
    str,
    typer.Option("--rank-model", help="Judge for --best-of: an open_clip NAME:PRETRAINED (or NAME:FILE, hf-hub:REPO), or 'noised-clip' (GLIDE's noised CLIP at t=0, no extra download).", rich_help_panel=opt.MODELS),
]


def sized_stages(
    manifest: Manifest,
    base: "Stage",
    upsample: Optional["Stage"],
    base_kind: str,
    up_kind: str,
    width: Optional[int],
    height: Optional[int],
    param_hint: str = "'--width' / '--height'",
) -> tuple["Stage", Optional["Stage"]]:
    """The stages with the sides --width/--height ask for (the models' own when both are None)."""
    from ..render.engine import model_entry
    from ..render.sizes import stage_sizes

    base_arch = model_entry(manifest, base.model, base_kind).arch
    up_arch = model_entry(manifest, upsample.model, up_kind).arch if upsample is not None else None
    try:
        base_size, up_size = stage_sizes(width, height, base_arch, up_arch)
    except ValueError as error:
        raise click_errors.BadParameter(str(error), param_hint=param_hint) from None
    if base_size is not None:
        base = dataclasses.replace(base, height=base_size[0], width=base_size[1])
    if up_size is not None:
        upsample = dataclasses.replace(upsample, height=up_size[0], width=up_size[1])
    return base, upsample


def sized_fit(fit: str, width: Optional[int], height: Optional[int]) -> str:
    """glide inpaint's --fit with --width/--height: the whole picture is fitted to that
    rectangle, so 'auto' means crop and 'region' (which keeps the picture's size) is refused."""
    if width is None and height is None:
        return fit
    if fit == "region":
        raise click_errors.UsageError("--width/--height fit the whole picture to a rectangle: use --fit crop, pad or stretch, not region")
    return "crop" if fit == "auto" else fit


def init_image(
    image: Optional[Path], strength: Optional[float], upsample_strength: Optional[float], fit: str, has_upsampler: bool
) -> Optional["InitImage"]:
    """The img2img settings, or None without --init-image; the picture is read once here, so
    an unreadable one fails before anything is written."""
    if image is None:
        if strength is not None or upsample_strength is not None:
            flag = "--strength" if strength is not None else "--upsample-strength"
            raise click_errors.UsageError(f"{flag} needs --init-image")
        return None
    from ..diffusion.partial import check_strength
    from ..files.images import load_image
    from ..render.img2img import InitImage

    if strength is None and upsample_strength is None:
        raise click_errors.UsageError("--init-image needs --strength S (0 < S <= 1), --upsample-strength S or both")
    for value, flag in ((strength, "--strength"), (upsample_strength, "--upsample-strength")):
        if value is not None:
            try:
                check_strength(value, flag)
            except ValueError as error:
                raise click_errors.BadParameter(str(error), param_hint=f"'{flag}'") from None
    if upsample_strength is not None and not has_upsampler:
        raise click_errors.UsageError("--upsample-strength needs the upsampler, but --size asks for the base model's pictures alone")
    load_image(image, 8, fit)  # readable, whole: ImageError (one line, exit 1) otherwise
    return InitImage(image, strength, upsample_strength, fit)


def best_of_choice(count: int, rank_model: str, init: Optional["InitImage"]) -> Optional["BestOf"]:
    """The best-of-N settings, or None for one candidate (plain generation)."""
    from ..render.ranking import MAX_BEST_OF, BestOf

    if count > MAX_BEST_OF:
        raise click_errors.BadParameter(f"{count} is more than {MAX_BEST_OF} candidates", param_hint="'--best-of'")
    if count == 1:
        return None
    if init is not None and init.skips_base:
        raise click_errors.UsageError("--best-of compares the base model's pictures: with --init-image give --strength too")
    return BestOf(count, rank_model)
