"""Plans of the commands that start from a picture: upsample, inpaint and outpaint."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..files.manifest import Manifest
from ..nets.kinds import ModelKind
from ..render import defaults
from ..render.defaults import MAX_CANVAS
from . import options as o
from .commands import PROMPT, InpaintRequest, OutpaintRequest, UpsampleRequest, chosen
from .jobs import make_jobs
from .plan import RenderPlan
from .stages import StageSpec, build_stage, glide_stages, sized_fit, sized_stages, unet_arch
from .values import RequestError, required

if TYPE_CHECKING:
    from ..render.jobs import Job, RenderedImage
    from ..render.region_inpaint import RegionSource
    from ..render.regions import Extension
    from ..render.session import Session


def plan_upsample(request: UpsampleRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..files.images import load_image
    from ..render.engine import render_upsample

    r = request
    model = chosen(r.model)
    stage = build_stage(manifest, StageSpec(model, ModelKind.UPSAMPLE, r.sampler, r.steps, temperature=r.temp, steps_option="--upsample-steps"))
    # GLIDE's upsampler was trained on 4x (64 -> 256).
    picture = load_image(required(o.IMAGE, r.image), max(1, unet_arch(manifest, model, ModelKind.UPSAMPLE).image_size // defaults.UPSAMPLE_FACTOR), r.fit)
    jobs = make_jobs([required(PROMPT, r.prompt)], r.num, r.seed, None, shard=shard, language=r, composable=False, command=UpsampleRequest.command)
    extra = {"image": str(r.image), "fit": r.fit}
    return RenderPlan(
        command=UpsampleRequest.command, manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        render=lambda session, todo, options: render_upsample(
            session, todo, picture, stage, options=options.with_meta(extra)
        ),
    )


def plan_inpaint(request: InpaintRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.inpaint import InpaintSource, render_inpaint
    from ..render.jobs import RenderOptions
    from ..render.region_inpaint import render_inpaint_region

    r = request
    warnings: list[str] = []
    base, upsample = glide_stages(manifest, r, ModelKind.BASE_INPAINT, warnings, scale=r.scale)
    fit = sized_fit(r.fit, r.width, r.height)
    base, upsample = sized_stages(manifest, base, upsample, ModelKind.BASE_INPAINT, ModelKind.UPSAMPLE_INPAINT, r.width, r.height)
    final = unet_arch(manifest, upsample.model, ModelKind.UPSAMPLE_INPAINT) if upsample else unet_arch(manifest, base.model, ModelKind.BASE_INPAINT)
    image = required(o.IMAGE, r.image)
    region = inpaint_region(image, r.mask, r.invert_mask, fit, r.context, r.feather, final.image_size)
    source = InpaintSource(image, r.mask, "crop" if fit in ("auto", "region") else fit, r.invert_mask)
    jobs = make_jobs([required(PROMPT, r.prompt)], r.num, r.seed, r.negative, shard=shard, language=r)

    def render(session: Session, todo: list[Job], options: RenderOptions) -> Iterator[RenderedImage]:
        if region is not None:
            return render_inpaint_region(session, todo, region, base, upsample, options=options)
        return render_inpaint(session, todo, source, base, upsample, options=options)

    return RenderPlan(command="inpaint", manifest=manifest, jobs=jobs, batch_size=r.batch_size, render=render, warnings=warnings)


def inpaint_region(image: Path, mask: Path | None, invert: bool, fit: str, context: int, feather: int, final_size: int) -> RegionSource | None:
    """For inpaint: the RegionSource when the picture is inpainted at its own size (--fit
    region, or auto with a picture larger than final_size), else None. Either way a mask
    that selects nothing or everything is refused here, before any model loads."""
    from ..files.images import _open
    from ..files.pixels import check_repaints_something, load_repaint_mask
    from ..render.region_inpaint import RegionSource

    check_repaints_something(load_repaint_mask(image, mask, invert), mask or image)
    width, height = _open(image).size
    if fit == "region" or (fit == "auto" and max(width, height) > final_size):
        return RegionSource(image, mask, invert, context, feather)
    return None


def plan_outpaint(request: OutpaintRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.outpaint import OutpaintSource, render_outpaint, window_context

    r = request
    warnings: list[str] = []
    image = required(o.IMAGE, r.image)
    extension = canvas_extension(image, r.left, r.right, r.top, r.bottom, r.to)
    base, upsample = glide_stages(manifest, r, ModelKind.BASE_INPAINT, warnings, scale=r.scale)
    if r.window is not None:
        width, height = parse_size(r.window, "--window")
        base, upsample = sized_stages(manifest, base, upsample, ModelKind.BASE_INPAINT, ModelKind.UPSAMPLE_INPAINT, width, height, "--window")
    final = upsample or base
    window: int | tuple[int, int] = unet_arch(manifest, final.model, ModelKind.UPSAMPLE_INPAINT if upsample else ModelKind.BASE_INPAINT).image_size
    if final.width is not None and final.height is not None:  # sized_stages sets both or neither
        window = (final.width, final.height)
    try:
        window_context(window, r.context)
    except ValueError as error:
        raise RequestError(str(error).replace("--context ", ""), "--context") from None
    source = OutpaintSource(image, extension, r.context)
    jobs = make_jobs([required(PROMPT, r.prompt)], r.num, r.seed, r.negative, shard=shard, language=r)
    return RenderPlan(
        command="outpaint", manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        render=lambda session, todo, options: render_outpaint(
            session, todo, source, base, upsample, options=options
        ),
        warnings=warnings,
    )


def parse_size(text: str, option: str = "--to") -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise RequestError(f"{text!r} is not WIDTHxHEIGHT, e.g. 512x256", option)
    width, height = int(match.group(1)), int(match.group(2))
    if not (0 < width <= MAX_CANVAS and 0 < height <= MAX_CANVAS):
        raise RequestError(f"{text} is outside 1..{MAX_CANVAS} pixels per side", option)
    return width, height


def canvas_extension(image: Path, left: int, right: int, top: int, bottom: int, to: str | None) -> Extension:
    """How far to grow IMAGE, checked before any model loads."""
    from ..files.images import _open
    from ..render.regions import Extension

    sides = (left, right, top, bottom)
    if to is not None and any(sides):
        raise RequestError("give --to or --left/--right/--top/--bottom, not both")
    width, height = _open(image).size
    if to is not None:
        new_width, new_height = parse_size(to)
        if new_width < width or new_height < height:
            raise RequestError(f"{to} is smaller than the picture ({width}x{height})", "--to")
        extension = Extension.to_size(width, height, new_width, new_height)
    else:
        extension = Extension(*sides)
    if extension.empty:
        raise RequestError(f"nothing to extend: {image} is already {width}x{height}; give --left/--right/--top/--bottom or a larger --to")
    canvas = extension.canvas(width, height)
    if max(canvas) > MAX_CANVAS:
        raise RequestError(f"the canvas would be {canvas[0]}x{canvas[1]}; at most {MAX_CANVAS} pixels per side")
    return extension
