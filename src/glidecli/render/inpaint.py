"""Inpainting: repainting part of a picture with GLIDE's inpainting models, the base one at
its size (or the stage's width x height), then the inpainting upsampler. The kept region of
each result is the source picture, fitted to the output size, exactly.

`InpaintStages` runs those two stages for batches of jobs and records them; render_inpaint
here, render_inpaint_region (region_inpaint.py) and render_outpaint (outpaint.py) share it.

    source = InpaintSource(Path("photo.png"), Path("mask.png"))
    for done in render_inpaint(session, [Job("a red hat", seed=1)], source):
        write_png(done.image, "hat.png", done.record)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion.noise import ImageNoise
from ..files.images import check_same_size, load_image, load_image_rgba, load_mask, mask_from_alpha
from ..files.pngfile import ImageError
from ..files.record import PictureRecord, Settings, StageRecord, StageRole
from ..nets.kinds import ModelKind
from .engine import Renderer, batches, stage_size
from .jobs import DEFAULT_INPAINT_BASE, DEFAULT_INPAINT_UPSAMPLE, DEFAULT_OPTIONS, Job, RenderedImage, RenderOptions, Stage
from .pipeline import Inpainting, StageInputs, job_noise, quantize_to_8bit
from .session import Reporter, Session


@dataclass(frozen=True)
class InpaintSource:
    """The picture to edit and what to repaint: a mask file (white = repaint), or without
    one the picture's transparent pixels. Both are fitted to each stage's size."""

    image: Path
    mask: Path | None = None
    fit: str = "crop"
    invert_mask: bool = False

    def record(self) -> Settings:
        """What a picture records of its source, after the stages' settings."""
        record: dict[str, object] = {"image": str(self.image), "mask": str(self.mask) if self.mask else "alpha", "fit": self.fit}
        if self.invert_mask:
            record["invert_mask"] = True
        return record


def load_inpaint_inputs(source: InpaintSource, size: int | tuple[int, int]) -> Inpainting:
    """The picture [1, 3, size, size] and its keep mask [1, 1, size, size] (1 = keep); for a
    (width, height) `size`, [1, 3, height, width] and [1, 1, height, width] (sample_stage
    then samples at that size)."""
    if source.mask is not None:
        check_same_size(source.image, source.mask)
        picture = load_image(source.image, size, source.fit)
        keep = load_mask(source.mask, size, source.fit, invert=source.invert_mask)
    else:
        picture, alpha = load_image_rgba(source.image, size, source.fit)
        if alpha is None:
            raise ImageError(f"image {source.image} has no transparency to use as a mask; give a mask file")
        keep = mask_from_alpha(source.image, size, source.fit)
        if source.invert_mask:
            keep = 1 - keep
    return Inpainting(picture, keep)


class InpaintStages:
    """The base inpainting stage and (unless `upsample` is None) the inpainting upsampler,
    run for batches of jobs with one render call's options."""

    def __init__(self, session: Session, base: Stage, upsample: Stage | None, options: RenderOptions):
        self.renderer = Renderer(session, options)
        self.session, self.base, self.upsample = session, base, upsample

    @property
    def reporter(self) -> Reporter:
        return self.renderer.reporter

    def batches(self, jobs: Sequence[Job]) -> Iterator[list[Job]]:
        """`jobs` in batches of the options' size ("auto": measured for both stages)."""
        stages = [(self.base, ModelKind.BASE_INPAINT), (self.upsample, ModelKind.UPSAMPLE_INPAINT)]
        return batches(jobs, self.renderer.batch_size(self.renderer.options.batch_size, len(jobs), stages))

    def paint(self, batch: list[Job], noise: ImageNoise, low: Inpainting, high: Inpainting | None) -> torch.Tensor:
        """One batch through the base inpainting model on `low`, then the inpainting
        upsampler on `high` (None where there is no upsampler); inputs hold one row or one
        per job."""
        device = self.session.device
        with torch.no_grad():
            images = self.renderer.run_stage(self.base, ModelKind.BASE_INPAINT, batch, noise, StageInputs(inpainting=_on_device(low, device, len(batch))))
            if self.upsample is not None and high is not None:
                inputs = StageInputs(low_res=quantize_to_8bit(images), inpainting=_on_device(high, device, len(batch)))
                images = self.renderer.run_stage(self.upsample, ModelKind.UPSAMPLE_INPAINT, batch, noise, inputs)
        return images

    def settings(self, source: Settings) -> tuple[StageRecord | Settings, ...]:
        """What a picture records of the stages (their models' hashes once they are loaded),
        then of its `source`."""
        base = self.renderer.stage_record(StageRole.BASE, self.base, scale=self.base.scale)
        if self.upsample is None:
            return (base, source)
        return (base, self.renderer.stage_record(StageRole.UPSAMPLE, self.upsample, temperature=self.upsample.temperature), source)

    def record(self, job: Job, settings: tuple[StageRecord | Settings, ...]) -> PictureRecord:
        """The record of a picture whose settings give its size (width and height)."""
        return self.renderer.picture_record(job, settings)


def _on_device(inputs: Inpainting, device: torch.device, batch: int) -> Inpainting:
    return Inpainting(_rows(inputs.source, device, batch), _rows(inputs.keep_mask, device, batch))


def _rows(tensor: torch.Tensor, device: torch.device, batch: int) -> torch.Tensor:
    """`tensor` [1 or batch, C, H, W] on `device` with `batch` rows (a view where it had one)."""
    return tensor.to(device).expand(batch, -1, -1, -1)


def render_inpaint(
    session: Session, jobs: Sequence[Job], source: InpaintSource, base: Stage = DEFAULT_INPAINT_BASE,
    upsample: Stage | None = DEFAULT_INPAINT_UPSAMPLE, *, options: RenderOptions = DEFAULT_OPTIONS,
) -> Iterator[RenderedImage]:
    """Repaint part of a picture (see the module's docstring)."""
    stages = InpaintStages(session, base, upsample, options)
    low = load_inpaint_inputs(source, _inpaint_size(session, base, ModelKind.BASE_INPAINT))
    high = None
    if upsample is not None:
        high = load_inpaint_inputs(source, _inpaint_size(session, upsample, ModelKind.UPSAMPLE_INPAINT))
    if not bool((low.keep_mask < 0.5).any()):
        stages.reporter.warn("the mask leaves nothing to repaint; the result is the source picture")
    for batch in stages.batches(jobs):
        images = stages.paint(batch, job_noise(batch), low, high)
        yield from stages.renderer.outputs(images, batch, stages.settings(source.record()))


def _inpaint_size(session: Session, stage: Stage, kind: ModelKind) -> int | tuple[int, int]:
    """The size to fit an inpainting stage's picture and mask to: the model's square side,
    or (width, height) for a stage with its own sides."""
    height, width = stage_size(session, stage, kind)
    if not (stage.width or stage.height):
        return width
    return width, height
