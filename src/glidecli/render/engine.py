"""Rendering pictures with GLIDE from Python: the engine behind the `glide` commands.

The `render_*` generators take a list of `Job`s (prompt, seed, output index) and yield one
`RenderedImage` per job, batch by batch, so a caller can save each picture as soon as its
batch is done: an interruption loses at most the batch in flight. Models come from a
`Session` (see session.py), which loads each one once, on first use.

Every image of a batch shares ONE `ImageNoise` for all of its stages (base, then
upsampler), so image i depends on its own seed alone, whatever the batch it ran in.

    session = Session(load_manifest())          # device and dtype "auto"
    for done in render_generate(session, [Job("a corgi", seed=0)]):
        done.image.save("corgi.png")            # or images.write_png(..., done.meta)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .. import __version__
from ..diffusion.noise import ImageNoise
from ..files.images import (
    batch_to_pil,
    check_same_size,
    load_image,
    load_image_rgba,
    load_mask,
    mask_from_alpha,
)
from ..files.pngfile import ImageError
from ..nets.config import ClipConfig, UNetConfig
from ..nets.kinds import COMPOSING_KINDS, ModelKind
from . import defaults
from .batching import Probe, auto_batch_size, clip_probe, unet_probe
from .composition import is_composed, parse_prompt, plain_text
from .composition import record as composition_record
from .img2img import InitImage
from .pipeline import (
    ClipGuidance,
    Inpainting,
    SamplerChoice,
    encode_prompts,
    job_noise,
    quantize_to_8bit,
    sample_stage,
)
from .ranking import BestOf, first_stage_images, load_ranker
from .session import (  # noqa: F401 - re-exported: the Python API lives here
    DEVICES,
    DTYPES,
    RenderError,
    Reporter,
    Session,
    dtype_name,
    model_entry,
    resolve_device,
    resolve_dtype,
)

# --- what to render ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One diffusion stage: which manifest model, how to sample it, how hard to guide it."""

    model: str
    sampler: SamplerChoice = SamplerChoice()
    scale: float = 1.0  # classifier-free guidance; 1 runs the conditional model alone
    temperature: float = 1.0  # multiplies the starting noise (defaults.UPSAMPLE_TEMPERATURE to upsample)
    # The pictures' sides when not the model's training size (render/sizes.py says which work).
    width: int | None = None
    height: int | None = None

    @classmethod
    def of(cls, stage: defaults.StageDefaults) -> Stage:
        """A command's default stage (render/defaults.py)."""
        return cls(stage.model, SamplerChoice(stage.sampler, stage.steps), scale=stage.scale, temperature=stage.temperature)


DEFAULT_BASE = Stage.of(defaults.GENERATE_BASE)
DEFAULT_UPSAMPLE = Stage.of(defaults.GENERATE_UPSAMPLE)
REFERENCE_BASE = Stage.of(defaults.REFERENCE_BASE)
REFERENCE_UPSAMPLE = Stage.of(defaults.REFERENCE_UPSAMPLE)
DEFAULT_INPAINT_BASE = Stage.of(defaults.INPAINT_BASE)
DEFAULT_INPAINT_UPSAMPLE = Stage.of(defaults.INPAINT_UPSAMPLE)


@dataclass(frozen=True)
class ClipSteering:
    """CLIP guidance of the base stage with the noised CLIP's two halves."""

    image_model: str = defaults.CLIP_IMAGE_MODEL
    text_model: str = defaults.CLIP_TEXT_MODEL
    scale: float = defaults.CLIP_GUIDE_SCALE


@dataclass(frozen=True)
class InpaintSource:
    """The picture to edit and what to repaint: a mask file (white = repaint), or without
    one the picture's transparent pixels. Both are fitted to each stage's size."""

    image: Path
    mask: Path | None = None
    fit: str = "crop"
    invert_mask: bool = False


@dataclass(frozen=True)
class Job:
    """One picture: its prompt, its own seed and its output index."""

    prompt: str
    seed: int
    index: int = 0
    negative: str | None = None


@dataclass(frozen=True)
class WalkJob(Job):
    """A frame of a seed walk: its noise is turned by `angle` from seed's towards seed + 1's
    (diffusion/noise.py); angle 0 is the plain picture of `seed`."""

    angle: float = 0.0


@dataclass(frozen=True)
class RenderedImage:
    """One finished picture, the job it answers, and the settings to record in its PNG."""

    image: Image.Image
    job: Job
    meta: dict[str, Any] = field(default_factory=dict)  # everything to record in the PNG


def check_sampler(choice: SamplerChoice, arch: UNetConfig) -> None:
    """Raise ValueError now if `choice`'s steps do not fit the model's diffusion (so a bad
    spec fails before any weights load)."""
    choice.schedule(arch.noise_schedule, arch.diffusion_steps)


def batches(jobs: Sequence[Job], size: int) -> Iterator[list[Job]]:
    """`jobs` in consecutive batches of `size` (the last one may be smaller)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(jobs), size):
        yield list(jobs[start : start + size])


def _sampler_meta(prefix: str, stage: Stage) -> dict[str, Any]:
    choice = stage.sampler
    meta: dict[str, Any] = {f"{prefix}sampler": choice.name, f"{prefix}steps": choice.steps}
    if choice.eta:
        meta[f"{prefix}eta"] = choice.eta
    if choice.threshold is not None:
        meta[f"{prefix}threshold"] = choice.threshold
    return meta


class Renderer:
    """Runs stages for batches of jobs; shared by the render_* functions."""

    def __init__(self, session: Session, reporter: Reporter | None):
        self.session = session
        self.reporter = reporter or Reporter()
        self._warned: set[str] = set()

    def run_stage(self, stage: Stage, kind: str, jobs: list[Job], noise: ImageNoise, **conditions: Any) -> torch.Tensor:
        model = self.session.unet(stage.model, kind)
        tokenizer = self.session.tokenizer(model.config.text_ctx, stage.model)
        # The base models compose prompts joined with AND; the upsamplers, which run without
        # guidance and mostly sharpen, read the components drawn (render/composition.py).
        compose = kind in COMPOSING_KINDS
        prompts = [job.prompt if compose else plain_text(parse_prompt(job.prompt)) for job in jobs]
        negatives = [job.negative or "" for job in jobs]
        conditioning = encode_prompts(model, tokenizer, prompts, guided=stage.scale != 1.0, negative=negatives, compose=compose)
        for text, cut in zip(conditioning.texts, conditioning.truncated):
            self.warn_truncated(text, cut, tokenizer.text_ctx)
        if stage.width or stage.height:
            side = model.config.image_size
            conditions.setdefault("size", (stage.height or side, stage.width or side))
        return sample_stage(
            model,
            conditioning,
            noise,
            stage.sampler,
            scale=stage.scale,
            temperature=stage.temperature,
            callback=lambda info: self.reporter.step(kind, info),
            network=self.session.sampling_call(stage.model, kind),
            **conditions,
        )

    def batch_size(
        self, requested: int | str, count: int, stages: Sequence[tuple[Stage | None, str]], clip: Any = None,
        more_probes: Callable[[], list[Probe]] | None = None, best_of: BestOf | None = None,
    ) -> int:
        """`requested`, or for "auto" the largest batch that fits the GPU (1 on the CPU).
        `more_probes()` gives probes of networks that are not U-Net stages (unCLIP's). With
        `best_of`, every picture is that many candidates through the first stage, batched
        together (ranking.pick_best): they count."""
        if requested != "auto":
            return int(requested)
        count *= best_of.count if best_of is not None else 1
        device = self.session.device
        if device.type != "cuda" or count <= 1:
            return 1
        offload = self.session.offload
        on = device if offload.enabled else None  # offloaded weights are not where the probes run
        probes = [
            unet_probe(self.session.unet(s.model, kind), s.scale != 1.0, _stage_size(self.session, s, kind), device=on)
            for s, kind in stages
            if s is not None
        ]
        if clip is not None:
            probes.append(clip_probe(self.session.clip(clip.image_model, clip.text_model), on))
        if more_probes is not None:
            probes += more_probes()
        size = auto_batch_size(count, device, probes, evict=offload.evict if offload.enabled else None)
        self.session.note(f"batch size {size} for {count} pictures (measured to fit the GPU's free memory)")
        return size

    def warn_truncated(self, prompt: str, truncated: bool, limit: int) -> None:
        if truncated and prompt not in self._warned:
            self._warned.add(prompt)
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            self.reporter.warn(f"prompt is longer than the model's {limit} tokens and was cut: {shown!r}")

    def stage_meta(self, prefix: str, stage: Stage) -> dict[str, Any]:
        meta = {f"{prefix}model": stage.model, **_sampler_meta(prefix, stage)}
        digest = self.session.model_hash(stage.model)
        if digest:
            meta[f"{prefix}model_hash"] = digest
        return meta

    def outputs(
        self, images: torch.Tensor, jobs: list[Job], meta: dict[str, Any], per_image: list[dict[str, Any]] | None = None
    ) -> Iterator[RenderedImage]:
        height, width = (int(side) for side in images.shape[-2:])
        for k, (picture, job) in enumerate(zip(batch_to_pil(images), jobs)):
            record = picture_record(job, size=width if width == height else [width, height])
            record.update(meta)
            if per_image is not None:
                record.update(per_image[k])
            yield RenderedImage(picture, job, record)


def picture_record(job: Job, **more: Any) -> dict[str, Any]:
    """What a PNG records first about its job: the prompt (with its components when composed
    with AND), the negative prompt, the seed and the index; then `more`."""
    record: dict[str, Any] = {"prompt": job.prompt}
    components = parse_prompt(job.prompt)
    if is_composed(components):
        record["components"] = composition_record(components)
    if job.negative:
        record["negative_prompt"] = job.negative
    record.update(seed=job.seed, index=job.index)
    if isinstance(job, WalkJob):
        record.update(walk_seed=job.seed + 1, walk_angle=round(job.angle, 6))
    record.update(more)
    return record


def common_meta(session: Session, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """What every picture records about where it was made, with the command's `extra` settings."""
    return {
        "device": session.device.type,
        "dtype": dtype_name(session.dtype),
        "glidecli_version": __version__,
        **dict(extra or {}),
    }


def render_generate(
    session: Session,
    jobs: Sequence[Job],
    base: Stage = DEFAULT_BASE,
    upsample: Stage | None = DEFAULT_UPSAMPLE,
    *,
    clip: ClipSteering | None = None,
    batch_size: int | str = 1,
    reporter: Reporter | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    init: InitImage | None = None,
    best_of: BestOf | None = None,
) -> Iterator[RenderedImage]:
    """Text to image: the base model (with classifier-free guidance, or steered by CLIP when
    `clip` is given), then the upsampler unless `upsample` is None. With `init`, stages start
    from that picture (img2img, render/img2img.py); with `best_of`, each picture is the best
    of several candidates by a CLIP score (render/ranking.py)."""
    renderer = Renderer(session, reporter)
    if best_of is not None and init is not None and init.skips_base:
        raise ValueError("best of N compares the base model's pictures: give the init image a base strength too")
    ranker = load_ranker(session, best_of.rank_model) if best_of is not None else None
    base_init = up_init = None
    if init is not None:
        base_init = init.picture(_stage_size(session, base, ModelKind.BASE)).to(session.device)
        if upsample is not None and init.upsample_strength is not None:
            up_init = init.picture(_stage_size(session, upsample, ModelKind.UPSAMPLE)).to(session.device)
    batch_size = renderer.batch_size(batch_size, len(jobs), [(base, ModelKind.BASE), (upsample, ModelKind.UPSAMPLE)], clip, best_of=best_of)

    def first_stage(todo: list[Job], noise: ImageNoise) -> torch.Tensor:
        conditions: dict[str, Any] = {}
        if clip is not None:
            conditions["clip_guidance"] = _clip_guidance(renderer, clip, base, todo)
        if init is not None:
            if init.skips_base:  # the upsampler alone redraws the picture
                return quantize_to_8bit(base_init.expand(len(todo), -1, -1, -1))
            conditions.update(init=base_init.expand(len(todo), -1, -1, -1), strength=init.strength)
        return renderer.run_stage(base, ModelKind.BASE, todo, noise, **conditions)

    for batch in batches(jobs, batch_size):
        with torch.no_grad():
            images, noise, per_image = first_stage_images(batch, best_of, ranker, first_stage, batch_size)
            if upsample is not None:
                conditions = {}
                if up_init is not None:
                    conditions.update(init=up_init.expand(len(batch), -1, -1, -1), strength=init.upsample_strength)
                images = renderer.run_stage(upsample, ModelKind.UPSAMPLE, batch, noise, low_res=quantize_to_8bit(images), **conditions)
        meta = {}
        if init is None or not init.skips_base:
            meta.update(renderer.stage_meta("", base))
            if clip is None:
                meta["scale"] = base.scale
            else:
                meta.update(clip_scale=clip.scale, clip_image_model=clip.image_model, clip_text_model=clip.text_model)
        if upsample is not None:
            meta.update(renderer.stage_meta("upsample_", upsample), upsample_temp=upsample.temperature)
        if init is not None:
            meta.update(init.meta())
        yield from renderer.outputs(images, batch, {**meta, **common_meta(session, extra_meta)}, per_image)


def _stage_size(session: Session, stage: Stage, kind: str) -> tuple[int, int]:
    """(height, width) of a stage's pictures: its own, else the model's square."""
    side = session.entry(stage.model, kind).arch.image_size
    return (stage.height or side, stage.width or side)


def _clip_guidance(renderer: Renderer, clip: ClipSteering, base: Stage, batch: list[Job]) -> ClipGuidance:
    session = renderer.session
    network = session.clip(clip.image_model, clip.text_model)
    config: ClipConfig = network.image_encoder.config
    base_size = session.entry(base.model, ModelKind.BASE).arch.image_size
    if config.image_size != base_size:
        raise RenderError(
            f"CLIP model {clip.image_model!r} sees {config.image_size}x{config.image_size} images but base model"
            f" {base.model!r} makes {base_size}x{base_size}; they must match"
        )
    tokens = session.clip_tokenizer(network.text_encoder.config.text_ctx).batch([job.prompt for job in batch])
    for job, cut in zip(batch, tokens.truncated):
        renderer.warn_truncated(job.prompt, cut, network.text_encoder.config.text_ctx - 2)
    with torch.no_grad():
        embeddings = network.text_embeddings(tokens.tokens.to(session.device), tokens.lengths.to(session.device))
    return ClipGuidance(network, embeddings.float(), clip.scale)


def render_upsample(
    session: Session,
    jobs: Sequence[Job],
    image: torch.Tensor,
    upsample: Stage = DEFAULT_UPSAMPLE,
    *,
    batch_size: int | str = 1,
    reporter: Reporter | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> Iterator[RenderedImage]:
    """The upsampler on one low-resolution picture `image` [1, 3, s, s] in [-1, 1] (quantized
    to 8 bits first, as the base model's output is), once per job."""
    renderer = Renderer(session, reporter)
    low_res = quantize_to_8bit(image.float().to(session.device))
    batch_size = renderer.batch_size(batch_size, len(jobs), [(upsample, ModelKind.UPSAMPLE)])
    for batch in batches(jobs, batch_size):
        noise = job_noise(batch)
        with torch.no_grad():
            images = renderer.run_stage(upsample, ModelKind.UPSAMPLE, batch, noise, low_res=low_res.expand(len(batch), -1, -1, -1))
        meta = {**renderer.stage_meta("upsample_", upsample), "upsample_temp": upsample.temperature}
        yield from renderer.outputs(images, batch, {**meta, **common_meta(session, extra_meta)})


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


def _on_device(inputs: Inpainting, device: torch.device, batch: int) -> Inpainting:
    expand = lambda t: t.to(device).expand(batch, -1, -1, -1)  # noqa: E731
    return Inpainting(expand(inputs.source), expand(inputs.keep_mask))


def render_inpaint(
    session: Session,
    jobs: Sequence[Job],
    source: InpaintSource,
    base: Stage = DEFAULT_INPAINT_BASE,
    upsample: Stage | None = DEFAULT_INPAINT_UPSAMPLE,
    *,
    batch_size: int | str = 1,
    reporter: Reporter | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> Iterator[RenderedImage]:
    """Repaint part of a picture: the base inpainting model at its size (or the stage's
    width x height), then (unless `upsample` is None) the inpainting upsampler. The kept
    region of each result is the source picture, fitted to the output size, exactly."""
    renderer = Renderer(session, reporter)
    low = load_inpaint_inputs(source, _inpaint_size(session, base, ModelKind.BASE_INPAINT))
    high = None
    if upsample is not None:
        high = load_inpaint_inputs(source, _inpaint_size(session, upsample, ModelKind.UPSAMPLE_INPAINT))
    if not bool((low.keep_mask < 0.5).any()):
        renderer.reporter.warn("the mask leaves nothing to repaint; the result is the source picture")
    batch_size = renderer.batch_size(batch_size, len(jobs), [(base, ModelKind.BASE_INPAINT), (upsample, ModelKind.UPSAMPLE_INPAINT)])
    for batch in batches(jobs, batch_size):
        noise = job_noise(batch)
        images = inpaint_stages(renderer, batch, noise, low, high, base, upsample)
        meta = inpaint_meta(renderer, base, upsample)
        meta.update(image=str(source.image), mask=str(source.mask) if source.mask else "alpha", fit=source.fit)
        if source.invert_mask:
            meta["invert_mask"] = True
        yield from renderer.outputs(images, batch, {**meta, **common_meta(session, extra_meta)})


def _inpaint_size(session: Session, stage: Stage, kind: str) -> int | tuple[int, int]:
    """The size to fit an inpainting stage's picture and mask to: the model's square side,
    or (width, height) for a stage with its own sides."""
    if not (stage.width or stage.height):
        return session.entry(stage.model, kind).arch.image_size
    height, width = _stage_size(session, stage, kind)
    return width, height


def inpaint_stages(
    renderer: Renderer,
    batch: list[Job],
    noise: ImageNoise,
    low: Inpainting,
    high: Inpainting | None,
    base: Stage,
    upsample: Stage | None,
) -> torch.Tensor:
    """One batch through the base inpainting model on `low`, then (unless `upsample` is
    None) the inpainting upsampler on `high`; inputs hold one row or one per job."""
    device = renderer.session.device
    with torch.no_grad():
        images = renderer.run_stage(base, ModelKind.BASE_INPAINT, batch, noise, inpainting=_on_device(low, device, len(batch)))
        if upsample is not None:
            images = renderer.run_stage(
                upsample,
                ModelKind.UPSAMPLE_INPAINT,
                batch,
                noise,
                low_res=quantize_to_8bit(images),
                inpainting=_on_device(high, device, len(batch)),
            )
    return images


def inpaint_meta(renderer: Renderer, base: Stage, upsample: Stage | None) -> dict[str, Any]:
    """The settings of the inpainting stages to record in a PNG."""
    meta = {**renderer.stage_meta("", base), "scale": base.scale}
    if upsample is not None:
        meta.update(renderer.stage_meta("upsample_", upsample), upsample_temp=upsample.temperature)
    return meta
