"""Outpainting: a bigger canvas whose new border the inpainting models paint.

The picture is placed on a canvas grown by `Extension` pixels on each side. Windows of the
final model's size (256 with GLIDE's upsampler, the base model's size without it; stages
with their own width x height paint windows of that rectangle) are painted one after
another in the order of `regions.plan_windows`: rings stepping outward from the picture,
each window keeping `context` pixels of what is already there, so every window sees the
picture or the border painted before it and continues it. A window
repaints only canvas pixels not yet painted; the picture's own pixels are never written,
so the canvas holds them bit for bit at their offset.

Noise: image i of a run owns one generator seeded with its seed S + i (as every glide
picture does); its windows draw from it in painting order, so a rerun, alone or in any
batch, paints the same canvas.

    source = OutpaintSource(Path("photo.png"), Extension(right=128))
    for done in render_outpaint(session, [Job("a beach", seed=1)], source):
        write_png(done.image, "wider.png", done.record)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..files.file_facts import sha256_file
from ..files.images import batch_to_pil
from ..files.pixels import load_pixels
from ..files.record import Settings
from ..nets.kinds import ModelKind
from .engine import stage_size
from .inpaint import InpaintStages
from .jobs import DEFAULT_INPAINT_BASE, DEFAULT_INPAINT_UPSAMPLE, DEFAULT_OPTIONS, Job, RenderedImage, RenderOptions, Stage
from .pipeline import job_noise
from .region_inpaint import output_sizes, stage_inputs
from .regions import MAX_CANVAS, Box, Extension, crop, fill_unknown, paste, plan_windows, sides
from .session import Session


@dataclass(frozen=True)
class OutpaintSource:
    """The picture, how far to grow it, and how many pixels of each window must already be
    painted towards the picture (None: half the window)."""

    image: Path
    extension: Extension
    context: int | None = None


def window_context(window: int | tuple[int, int], context: int | None) -> int:
    """The context a window (a square's side or (width, height)) keeps: by default half its
    shorter side; ValueError when it leaves no room to paint."""
    shorter = min(sides(window))
    context = shorter // 2 if context is None else context
    if not 0 < context < shorter:
        label = f"{window}-pixel" if isinstance(window, int) else "{}x{}".format(*window)
        raise ValueError(f"--context must be between 1 and {shorter - 1} pixels for {label} windows, got {context}")
    return context


def window_sizes(session: Session, base: Stage, upsample: Stage | None) -> tuple[int | tuple[int, int], int | tuple[int, int]]:
    """(the base model's input size, the window's size): the models' squares (sides), or
    (width, height) when the stages have their own sides (Stage.width/height)."""
    if not any(stage is not None and (stage.width or stage.height) for stage in (base, upsample)):
        return output_sizes(session, base, upsample)
    low = stage_size(session, base, ModelKind.BASE_INPAINT)[::-1]
    return low, (stage_size(session, upsample, ModelKind.UPSAMPLE_INPAINT)[::-1] if upsample is not None else low)


def render_outpaint(
    session: Session, jobs: Sequence[Job], source: OutpaintSource, base: Stage = DEFAULT_INPAINT_BASE,
    upsample: Stage | None = DEFAULT_INPAINT_UPSAMPLE, *, options: RenderOptions = DEFAULT_OPTIONS,
) -> Iterator[RenderedImage]:
    """Outpaint `source.image` (see the module's docstring): one canvas per job."""
    stages = InpaintStages(session, base, upsample, options)
    pixels = load_pixels(source.image)
    height, width = pixels.shape[:2]
    extension = source.extension
    if extension.empty:
        raise ValueError("nothing to extend: the canvas would be the picture itself")
    canvas_w, canvas_h = extension.canvas(width, height)
    if max(canvas_w, canvas_h) > MAX_CANVAS:
        raise ValueError(f"the canvas would be {canvas_w}x{canvas_h}; at most {MAX_CANVAS} pixels per side")
    base_size, window = window_sizes(session, base, upsample)
    context = window_context(window, source.context)
    windows = plan_windows(width, height, extension, window, context)
    canvas: Settings = {
        "width": canvas_w,
        "height": canvas_h,
        "image": str(source.image),
        "image_sha256": sha256_file(source.image),
        "image_size": [width, height],
        "left": extension.left,
        "right": extension.right,
        "top": extension.top,
        "bottom": extension.bottom,
        "window": window if isinstance(window, int) else list(window),
        "context": context,
        "windows": len(windows),
    }
    for batch in stages.batches(jobs):
        canvases = _paint_canvases(stages, batch, pixels, extension, windows, (base_size, window))
        settings = stages.settings(canvas)
        for picture, job in zip(canvases, batch):
            yield RenderedImage(Image.fromarray(picture, "RGB"), job, stages.record(job, settings))


def _paint_canvases(
    stages: InpaintStages,
    batch: list[Job],
    pixels: np.ndarray,
    extension: Extension,
    windows: Sequence[Box],
    sizes: tuple[int | tuple[int, int], int | tuple[int, int]],
) -> list[np.ndarray]:
    """The canvases of one batch: the picture at its offset, then each window painted in
    turn; `sizes` are the base model's input size and the window's (window_sizes)."""
    base_size, window = sizes
    height, width = pixels.shape[:2]
    canvas_w, canvas_h = extension.canvas(width, height)
    noise = job_noise(batch)  # one generator per image, for all its windows
    canvases = [np.zeros((canvas_h, canvas_w, 3), dtype=np.uint8) for _ in batch]
    painted = np.zeros((canvas_h, canvas_w), dtype=bool)
    for canvas in canvases:
        canvas[extension.top : extension.top + height, extension.left : extension.left + width] = pixels
    painted[extension.top : extension.top + height, extension.left : extension.left + width] = True
    for box in windows:
        known, inside = crop(painted, box)
        new = inside & ~known
        if not new.any():
            continue  # every pixel of this window is already painted (the same for every image)
        repaint = ~known  # outside the canvas too: painted freely, then dropped
        squares = [fill_unknown(crop(canvas, box)[0], known) for canvas in canvases]
        low = stage_inputs(squares, repaint, base_size)
        high = stage_inputs(squares, repaint, window) if stages.upsample is not None else None
        images = stages.paint(batch, noise, low, high)
        for canvas, image in zip(canvases, batch_to_pil(images)):
            paste(canvas, box, np.asarray(image), new)
        paste(painted, box, new, new)
    if not painted.all():  # plan_windows covers every new pixel; this guards its promise
        raise RuntimeError("outpainting left canvas pixels unpainted")
    return canvases
