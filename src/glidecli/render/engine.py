"""Rendering pictures with GLIDE from Python: the engine behind the `glide` commands.

The `render_*` generators take a list of `Job`s (prompt, seed, output index) and yield one
`RenderedImage` per job, batch by batch, so a caller can save each picture as soon as its
batch is done: an interruption loses at most the batch in flight. Models come from a
`Session` (see session.py), which loads each one once, on first use.

Every image of a batch shares ONE `ImageNoise` for all of its stages (base, then
upsampler), so image i depends on its own seed alone, whatever the batch it ran in.

    session = Session(load_manifest())          # device and dtype "auto"
    for done in render_generate(session, [Job("a corgi", seed=0)], options=RenderOptions(batch_size="auto")):
        done.image.save("corgi.png")            # or pngfile.write_png(..., done.record)

Inpainting is in inpaint.py; stages, jobs, options and results in jobs.py (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import cast

import torch

from .. import __version__
from ..diffusion.noise import ImageNoise
from ..files.images import batch_to_pil
from ..files.record import JobRecord, MadeWith, PictureRecord, Settings, StageRecord, StageRole, WalkRecord
from ..nets.config import ClipConfig, UNetConfig
from ..nets.kinds import COMPOSING_KINDS, ModelKind
from . import defaults
from .batching import Probe, auto_batch_size, clip_probe, unet_probe
from .composition import is_composed, parse_prompt, plain_text
from .composition import record as composition_record
from .defaults import DEVICES
from .img2img import InitImage
from .jobs import (
    DEFAULT_BASE,
    DEFAULT_INPAINT_BASE,
    DEFAULT_INPAINT_UPSAMPLE,
    DEFAULT_OPTIONS,
    DEFAULT_UPSAMPLE,
    REFERENCE_BASE,
    REFERENCE_UPSAMPLE,
    BlendJob,
    Job,
    RenderedImage,
    RenderOptions,
    Stage,
    VaryJob,
    WalkJob,
)
from .pipeline import NO_INPUTS, ClipGuidance, SamplerChoice, StageInputs, encode_prompts, job_noise, quantize_to_8bit, sample_stage
from .prompt_syntax import Emphasis, spoken_text
from .ranking import BestOf, first_stage_images, load_ranker
from .session import DTYPES, RenderError, Reporter, Session, dtype_name, model_entry, resolve_device, resolve_dtype

# The Python API lives here: what jobs.py and session.py define is offered from here too.
__all__ = [
    "DEFAULT_BASE", "DEFAULT_INPAINT_BASE", "DEFAULT_INPAINT_UPSAMPLE", "DEFAULT_OPTIONS", "DEFAULT_UPSAMPLE", "DEVICES", "DTYPES",
    "REFERENCE_BASE", "REFERENCE_UPSAMPLE", "BlendJob", "ClipSteering", "Job", "RenderError", "RenderOptions", "RenderedImage",
    "Renderer", "Reporter", "Session", "Stage", "VaryJob", "WalkJob", "batches", "check_sampler", "model_entry",
    "render_generate", "render_upsample", "resolve_device", "resolve_dtype",
]


@dataclass(frozen=True)
class ClipSteering:
    """CLIP guidance of the base stage with the noised CLIP's two halves."""

    image_model: str = defaults.CLIP_IMAGE_MODEL
    text_model: str = defaults.CLIP_TEXT_MODEL
    scale: float = defaults.CLIP_GUIDE_SCALE

    def record(self) -> Settings:
        """What a picture records of the steering, in place of the base stage's scale."""
        return {"clip_scale": self.scale, "clip_image_model": self.image_model, "clip_text_model": self.text_model}


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


class Renderer:
    """Runs stages for batches of jobs and records their pictures, with one render call's
    options; shared by the render_* functions."""

    def __init__(self, session: Session, options: RenderOptions = DEFAULT_OPTIONS):
        self.session = session
        self.options = options
        self.reporter = options.reporter or Reporter()
        self._warned: set[str] = set()

    def run_stage(self, stage: Stage, kind: ModelKind, jobs: list[Job], noise: ImageNoise, inputs: StageInputs = NO_INPUTS) -> torch.Tensor:
        model = self.session.unet(stage.model, kind)
        tokenizer = self.session.tokenizer(model.config.text_ctx, stage.model)
        # The base models compose prompts joined with AND; the upsamplers, which run without
        # guidance and mostly sharpen, read the components drawn (render/composition.py).
        compose = kind in COMPOSING_KINDS
        prompts = [job.prompt if compose else plain_text(parse_prompt(job.prompt)) for job in jobs]
        negatives = [job.negative or "" for job in jobs]
        conditioning = encode_prompts(
            model, tokenizer, prompts, guided=stage.scale != 1.0, negative=negatives, compose=compose, syntax=[not job.literal for job in jobs],
            emphasis=[job.emphasis for job in jobs],
        )
        for text, cut in zip(conditioning.texts, conditioning.truncated):
            self.warn_truncated(text, cut, tokenizer.text_ctx)
        self.warn_once(conditioning.ignored)
        if inputs.size is None and (stage.width or stage.height):
            side = model.config.image_size
            inputs = replace(inputs, size=(stage.height or side, stage.width or side))
        return sample_stage(
            model,
            conditioning,
            noise,
            stage.sampler,
            inputs=inputs,
            scale=stage.scale,
            temperature=stage.temperature,
            callback=partial(self.reporter.step, kind),
            network=self.session.sampling_call(stage.model, kind),
        )

    def batch_size(
        self, requested: int | str, count: int, stages: Sequence[tuple[Stage | None, ModelKind]], clip: ClipSteering | None = None,
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
            unet_probe(self.session.unet(s.model, kind), s.scale != 1.0, stage_size(self.session, s, kind), device=on)
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

    def warn_once(self, warnings: Sequence[str]) -> None:
        """Each of `warnings` once per render call."""
        for warning in warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                self.reporter.warn(warning)

    def warn_truncated(self, prompt: str, truncated: bool, limit: int) -> None:
        if truncated and prompt not in self._warned:
            self._warned.add(prompt)
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            self.reporter.warn(f"prompt is longer than the model's {limit} tokens and was cut: {shown!r}")

    def stage_record(self, role: StageRole, stage: Stage, *, scale: float | None = None, temperature: float | None = None) -> StageRecord:
        """What a picture records of one stage (its model's hash once the model is loaded)."""
        choice = stage.sampler
        return StageRecord(
            role=role, model=stage.model, sampler=choice.name, steps=choice.steps, eta=choice.eta, threshold=choice.threshold,
            model_hash=self.session.model_hash(stage.model), scale=scale, temperature=temperature,
        )

    def picture_record(
        self, job: Job, settings: tuple[StageRecord | Settings, ...], size: int | tuple[int, int] | None = None,
        pick: Settings | None = None,
    ) -> PictureRecord:
        """A picture's whole record: its job, size and `settings`, where it was made, and this
        call's extra settings."""
        made_with = MadeWith(device=self.session.device.type, dtype=dtype_name(self.session.dtype), glidecli_version=__version__)
        extras = dict(self.options.extra_meta or {})
        return PictureRecord(job=job_record(job), size=size, settings=settings, made_with=made_with, extras=extras, pick=pick)

    def outputs(
        self, images: torch.Tensor, jobs: list[Job], settings: tuple[StageRecord | Settings, ...], picks: Sequence[Settings] | None = None
    ) -> Iterator[RenderedImage]:
        height, width = (int(side) for side in images.shape[-2:])
        size = width if width == height else (width, height)
        for k, (picture, job) in enumerate(zip(batch_to_pil(images), jobs)):
            yield RenderedImage(picture, job, self.picture_record(job, settings, size, picks[k] if picks is not None else None))


def job_record(job: Job) -> JobRecord:
    """What a picture records about its job: the prompt (with its components when composed
    with AND), the negative prompt, the seed and index, a seed walk's turn, a blend's mix, a
    text diff's amount."""
    components = parse_prompt(job.prompt)
    return JobRecord(
        prompt=job.prompt,
        template=job.template,
        literal=job.literal,
        emphasis=None if job.emphasis == Emphasis.A1111 else str(job.emphasis),
        components=composition_record(components) if is_composed(components) else None,
        negative_prompt=job.negative,
        seed=job.seed,
        index=job.index,
        walk=WalkRecord(seed=job.seed + 1, angle=round(job.angle, 6)) if isinstance(job, WalkJob) else None,
        mix=job.mix if isinstance(job, BlendJob) else None,
        amount=job.amount if isinstance(job, VaryJob) else None,
    )


def stage_size(session: Session, stage: Stage, kind: ModelKind) -> tuple[int, int]:
    """(height, width) of a stage's pictures: its own, else the model's square."""
    side = unet_config(session, stage.model, kind).image_size
    return (stage.height or side, stage.width or side)


def unet_config(session: Session, name: str, kind: ModelKind) -> UNetConfig:
    """The architecture of a U-Net model of `kind` (the manifest gives the U-Net kinds one)."""
    return cast(UNetConfig, session.entry(name, kind).arch)


def render_generate(
    session: Session,
    jobs: Sequence[Job],
    base: Stage = DEFAULT_BASE,
    upsample: Stage | None = DEFAULT_UPSAMPLE,
    *,
    options: RenderOptions = DEFAULT_OPTIONS,
    clip: ClipSteering | None = None,
    init: InitImage | None = None,
    best_of: BestOf | None = None,
) -> Iterator[RenderedImage]:
    """Text to image: the base model (with classifier-free guidance, or steered by CLIP when
    `clip` is given), then the upsampler unless `upsample` is None. With `init`, stages start
    from that picture (img2img, render/img2img.py); with `best_of`, each picture is the best
    of several candidates by a CLIP score (render/ranking.py)."""
    renderer = Renderer(session, options)
    if best_of is not None and init is not None and init.skips_base:
        raise ValueError("best of N compares the base model's pictures: give the init image a base strength too")
    ranker = load_ranker(session, best_of.rank_model) if best_of is not None else None
    base_init, up_init = _init_inputs(session, init, base, upsample)
    batch_size = renderer.batch_size(options.batch_size, len(jobs), [(base, ModelKind.BASE), (upsample, ModelKind.UPSAMPLE)], clip, best_of=best_of)

    def first_stage(todo: list[Job], noise: ImageNoise) -> torch.Tensor:
        guidance = _clip_guidance(renderer, clip, base, todo) if clip is not None else None
        start = _rows(base_init.init, len(todo))
        if start is not None and init is not None and init.skips_base:  # the upsampler alone redraws the picture
            return quantize_to_8bit(start)
        return renderer.run_stage(base, ModelKind.BASE, todo, noise, replace(base_init, clip_guidance=guidance, init=start))

    for batch in batches(jobs, batch_size):
        with torch.no_grad():
            images, noise, picks = first_stage_images(batch, best_of, ranker, first_stage, batch_size)
            if upsample is not None:
                inputs = replace(up_init, low_res=quantize_to_8bit(images), init=_rows(up_init.init, len(batch)))
                images = renderer.run_stage(upsample, ModelKind.UPSAMPLE, batch, noise, inputs)
        yield from renderer.outputs(images, batch, _generate_settings(renderer, base, upsample, clip, init), picks)


def _init_inputs(session: Session, init: InitImage | None, base: Stage, upsample: Stage | None) -> tuple[StageInputs, StageInputs]:
    """The base and upsampling stages' img2img inputs: the init picture [1, 3, H, W] at each
    one's size with the stage's strength; none for a stage that starts from noise. (With
    `upsample_strength` alone the base picture is the upsampler's low-resolution input.)"""
    base_init = up_init = NO_INPUTS
    if init is not None:
        picture = init.picture(stage_size(session, base, ModelKind.BASE)).to(session.device)
        base_init = StageInputs(init=picture, strength=init.strength if init.strength is not None else 1.0)
        if upsample is not None and init.upsample_strength is not None:
            picture = init.picture(stage_size(session, upsample, ModelKind.UPSAMPLE)).to(session.device)
            up_init = StageInputs(init=picture, strength=init.upsample_strength)
    return base_init, up_init


def _rows(picture: torch.Tensor | None, count: int) -> torch.Tensor | None:
    """One picture [1, 3, H, W] as `count` rows, without copying."""
    return picture.expand(count, -1, -1, -1) if picture is not None else None


def _generate_settings(
    renderer: Renderer, base: Stage, upsample: Stage | None, clip: ClipSteering | None, init: InitImage | None
) -> tuple[StageRecord | Settings, ...]:
    """What a generated picture records of its stages, CLIP steering and init picture."""
    settings: list[StageRecord | Settings] = []
    if init is None or not init.skips_base:
        if clip is None:
            settings.append(renderer.stage_record(StageRole.BASE, base, scale=base.scale))
        else:
            settings += [renderer.stage_record(StageRole.BASE, base), clip.record()]
    if upsample is not None:
        settings.append(renderer.stage_record(StageRole.UPSAMPLE, upsample, temperature=upsample.temperature))
    if init is not None:
        settings.append(init.meta())
    return tuple(settings)


def _clip_guidance(renderer: Renderer, clip: ClipSteering, base: Stage, batch: list[Job]) -> ClipGuidance:
    session = renderer.session
    network = session.clip(clip.image_model, clip.text_model)
    config: ClipConfig = network.image_encoder.config
    base_size = unet_config(session, base.model, ModelKind.BASE).image_size
    if config.image_size != base_size:
        raise RenderError(
            f"CLIP model {clip.image_model!r} sees {config.image_size}x{config.image_size} images but base model"
            f" {base.model!r} makes {base_size}x{base_size}; they must match"
        )
    # The noised CLIP pools one embedding per prompt: nothing per token to weigh, so it reads the words.
    tokens = session.clip_tokenizer(network.text_encoder.config.text_ctx).batch([spoken_text(job.prompt, job.literal) for job in batch])
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
    options: RenderOptions = DEFAULT_OPTIONS,
) -> Iterator[RenderedImage]:
    """The upsampler on one low-resolution picture `image` [1, 3, s, s] in [-1, 1] (quantized
    to 8 bits first, as the base model's output is), once per job."""
    renderer = Renderer(session, options)
    low_res = quantize_to_8bit(image.float().to(session.device))
    batch_size = renderer.batch_size(options.batch_size, len(jobs), [(upsample, ModelKind.UPSAMPLE)])
    for batch in batches(jobs, batch_size):
        noise = job_noise(batch)
        with torch.no_grad():
            images = renderer.run_stage(upsample, ModelKind.UPSAMPLE, batch, noise, StageInputs(low_res=_rows(low_res, len(batch))))
        settings = (renderer.stage_record(StageRole.UPSAMPLE, upsample, temperature=upsample.temperature),)
        yield from renderer.outputs(images, batch, settings)
