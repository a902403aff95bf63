"""Inpainting a region of a picture at its own resolution, however large.

GLIDE repaints squares of its models' sizes (64, then 256). For a bigger picture glide
crops a square around the mask's bounding box plus a context margin, inpaints that square
at the models' sizes, scales the result back to the square's size, and pastes it only over
the mask and a feathered edge around it. Every pixel outside that feathered region is the
source's, bit for bit, and the picture keeps its size.

    source = RegionSource(Path("photo.png"), Path("mask.png"), context=64, feather=8)
    for done in render_inpaint_region(session, [Job("a red hat", seed=1)], source):
        write_png(done.image, "hat.png", done.record)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files.file_facts import sha256_file
from ..files.images import batch_to_pil, pil_to_tensor
from ..files.pixels import check_repaints_something, load_pixels, load_repaint_mask
from ..files.record import Settings
from ..nets.kinds import ModelKind
from .engine import unet_config
from .inpaint import InpaintStages
from .jobs import DEFAULT_INPAINT_BASE, DEFAULT_INPAINT_UPSAMPLE, DEFAULT_OPTIONS, Job, RenderedImage, RenderOptions, Stage
from .pipeline import Inpainting, job_noise
from .regions import Box, blend, coverage_mask, crop, feather_weights, fill_unknown, mask_box, resize_picture, square_around
from .session import Session


@dataclass(frozen=True)
class RegionSource:
    """The picture, what to repaint (a mask file, white = repaint, or the picture's
    transparency), the context margin around the mask and the feather width, in pixels of
    the picture."""

    image: Path
    mask: Path | None = None
    invert_mask: bool = False
    context: int = 64
    feather: int = 8


def stage_inputs(crops: Sequence[np.ndarray], repaint: np.ndarray, size: int | tuple[int, int]) -> Inpainting:
    """A stage's inputs from uint8 crops (one per image, or one for all) and their repaint
    mask: the crops resized to size x size or a (width, height) size (bicubic), and a keep
    mask in which a pixel is kept only when none of its footprint is repainted."""
    pictures = torch.stack([pil_to_tensor(Image.fromarray(resize_picture(c, size), "RGB")) for c in crops])
    keep = ~coverage_mask(repaint, size)
    return Inpainting(pictures, torch.from_numpy(keep.astype(np.float32))[None, None].expand(len(crops), 1, *keep.shape))


def output_sizes(session: Session, base: Stage, upsample: Stage | None) -> tuple[int, int]:
    """(base model's size, size of the final pictures). Windows and crops are the models'
    own squares, so stages with other sides (Stage.width/height) are refused."""
    if any(stage is not None and (stage.width or stage.height) for stage in (base, upsample)):
        raise ValueError("region inpainting and outpainting work in the models' own squares; give stages without width/height")
    base_size = unet_config(session, base.model, ModelKind.BASE_INPAINT).image_size
    if upsample is None:
        return base_size, base_size
    return base_size, unet_config(session, upsample.model, ModelKind.UPSAMPLE_INPAINT).image_size


@dataclass(frozen=True)
class RegionPlan:
    """Where the square goes and how its result is pasted back."""

    box: Box  # the square, in the picture's pixels (may reach outside a non-square picture)
    repaint: np.ndarray  # bool, the square's pixels the models repaint (the mask, and outside the picture)
    paste_box: Box  # the mask's bounds plus the feather, inside the picture and the square
    weights: np.ndarray  # float over paste_box: 1 on the mask, feathered, 0 elsewhere


def plan_region(repaint: np.ndarray, context: int, feather: int, min_side: int) -> RegionPlan:
    """The square around the mask (margin: the larger of context and feather, so that the
    feathered edge lies inside it) and the paste weights, computed only where they can be
    above 0 (a big picture's other pixels are never touched)."""
    height, width = repaint.shape
    bounds = mask_box(repaint)
    if bounds is None:
        raise ValueError("the mask selects nothing")
    box = square_around(bounds, max(context, feather), width, height, min_side)
    inner, inside = crop(repaint, box)
    paste_box = Box(
        max(bounds.left - feather, 0, box.left),
        max(bounds.top - feather, 0, box.top),
        min(bounds.right + feather, width, box.right),
        min(bounds.bottom + feather, height, box.bottom),
    )
    local, _ = crop(repaint, paste_box)
    return RegionPlan(box, inner | ~inside, paste_box, feather_weights(local, feather))


def render_inpaint_region(
    session: Session, jobs: Sequence[Job], source: RegionSource, base: Stage = DEFAULT_INPAINT_BASE,
    upsample: Stage | None = DEFAULT_INPAINT_UPSAMPLE, *, options: RenderOptions = DEFAULT_OPTIONS,
) -> Iterator[RenderedImage]:
    """Repaint the masked region of `source.image` at its own resolution (see the module's
    docstring); each job's seed drives all of its noise, as in render_inpaint."""
    stages = InpaintStages(session, base, upsample, options)
    pixels = load_pixels(source.image)
    repaint = load_repaint_mask(source.image, source.mask, source.invert_mask)
    check_repaints_something(repaint, source.mask or source.image)
    base_size, final_size = output_sizes(session, base, upsample)
    plan = plan_region(repaint, source.context, source.feather, final_size)
    square, inside = crop(pixels, plan.box)
    square = fill_unknown(square, inside)  # a square reaching past a non-square picture
    low = stage_inputs([square], plan.repaint, base_size)
    high = stage_inputs([square], plan.repaint, final_size) if upsample is not None else None
    region = _region_settings(source, repaint.shape, plan)
    target = plan.paste_box
    rows, cols = slice(target.top, target.bottom), slice(target.left, target.right)
    inner = (slice(target.top - plan.box.top, target.bottom - plan.box.top), slice(target.left - plan.box.left, target.right - plan.box.left))
    for batch in stages.batches(jobs):
        images = stages.paint(batch, job_noise(batch), low, high)
        settings = stages.settings(region)
        for picture, job in zip(batch_to_pil(images), batch):
            scaled = np.asarray(picture.resize((plan.box.width, plan.box.height), Image.Resampling.BICUBIC))
            result = pixels.copy()
            result[rows, cols] = blend(pixels[rows, cols], scaled[inner], plan.weights)
            yield RenderedImage(Image.fromarray(result, "RGB"), job, stages.record(job, settings))


def _region_settings(source: RegionSource, shape: tuple[int, ...], plan: RegionPlan) -> Settings:
    """What a picture records of its source and the square repainted, after the stages."""
    height, width = shape
    settings: dict[str, object] = {
        "width": width,
        "height": height,
        "image": str(source.image),
        "image_sha256": sha256_file(source.image),
        "mask": str(source.mask) if source.mask else "alpha",
        "fit": "region",
        "context": source.context,
        "feather": source.feather,
        "region": plan.box.as_list(),
    }
    if source.mask is not None:
        settings["mask_sha256"] = sha256_file(source.mask)
    if source.invert_mask:
        settings["invert_mask"] = True
    return settings
