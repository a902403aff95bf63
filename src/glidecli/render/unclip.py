"""Rendering with unCLIP (Karlo v1.0 alpha) from Python: the engine behind `glide unclip`,
`glide vary` and `glide blend`.

prompt -> CLIP text features -> prior (x0-predicting diffusion over CLIP image embeddings,
classifier-free guidance) -> image embedding -> decoder (GLIDE-style U-Net, guidance against
the learned "no image" embedding and the empty prompt) -> 64x64 -> bicubic 256x256 -> improved
super-resolution (6 steps with one U-Net, the last with its fine-tuned twin) -> 256x256.
`vary` takes the image embedding from a picture instead of the prior; `blend` from the
spherical interpolation of two pictures' embeddings.

As for GLIDE, every picture of a batch owns ONE `ImageNoise` for all its stages, so image i
depends on its own seed alone, whatever the batch it ran in. Best of N (render/ranking.py)
compares the decoder's 64x64 candidates, as the PNG would hold them (8 bits), against each
job's prompt; only the winner is super-resolved, continuing its own noise, so the winner is
the picture its candidate seed gives alone.

Every network (prior, decoder, both SR U-Nets) is sampled through the session's calls
(`Session.sampling_call`): CUDA graphs on CUDA, torch.compile with `compile` (render/accel.py).
`batch_size="auto"` measures what fits the GPU with a probe of each (render/batching.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diffusion.noise import ImageNoise
from ..diffusion.samplers import Callback, ModelFn, Prediction, denoiser_from_model, sample
from ..files.file_facts import sha256_file
from ..files.images import open_rgb
from ..files.record import Settings, StageRecord, StageRole
from ..nets.checkpoint import read_clip_stats
from ..nets.clip_vit import clip_text, image_embedding, preprocess_image
from ..nets.clip_vit import encode_prompts as encode_clip_prompts
from ..nets.kinds import ModelKind
from ..nets.prior import ClipText, PriorTransformer
from ..nets.unclip import ImprovedSuperRes
from ..nets.unet import Text2ImUNet
from . import defaults
from .accel import NetworkCall
from .batching import Probe, prior_probe, sr_probe
from .emphasis import clip_batch, weigh
from .engine import Renderer, batches
from .jobs import DEFAULT_OPTIONS, BlendJob, Job, RenderedImage, RenderOptions, Stage, VaryJob
from .pipeline import Conditioning, SamplerChoice, StageInputs, invert_stage, sample_stage
from .prompt_syntax import Segment, WeightedPrompt, prompt_warning, read_prompt
from .ranking import BestOf, StageFn, first_stage_images, load_ranker
from .session import Reporter, Session
from .unclip_edits import TextDiff, blended, decoder_picture, diffed, layout_stage, repeated, slerp

__all__ = [
    "DEFAULT_DECODER", "DEFAULT_PRIOR", "DEFAULT_SR", "BlendJob", "ClipModels", "TextDiff", "VaryJob", "decoder_conditioning", "render_blend",
    "render_unclip", "render_vary", "sample_prior", "slerp", "sr_low_res", "super_resolve",
]

DEFAULT_PRIOR = Stage.of(defaults.UNCLIP_PRIOR)
DEFAULT_DECODER = Stage.of(defaults.UNCLIP_DECODER)
DEFAULT_SR = Stage.of(defaults.UNCLIP_SR)


@dataclass(frozen=True)
class ClipModels:
    """The CLIP ViT whose embeddings the networks read, and the prior's embedding statistics."""

    clip: str = defaults.UNCLIP_CLIP_MODEL
    stats: str = defaults.UNCLIP_CLIP_STATS


# --- the stages as plain functions ------------------------------------------------------------


def sample_prior(
    prior: PriorTransformer,
    text: ClipText,
    uncond: ClipText | None,
    noise: ImageNoise,
    sampler: SamplerChoice,
    *,
    scale: float = 1.0,
    callback: Callback | None = None,
    network: NetworkCall | None = None,
) -> Tensor:
    """CLIP image embeddings [B, D] (de-normalized) for a batch of prompts. Guidance mixes
    the two x0 predictions; each x0 estimate is clamped to +-clamp_x0, as the reference does.
    `network`, when given, is called in place of `prior` (a graphed or compiled version)."""
    cfg = prior.config
    device = prior.out_proj.weight.device
    schedule = sampler.schedule(cfg.noise_schedule, cfg.diffusion_steps)
    net = network or prior
    both = text.cat(uncond) if uncond is not None and scale != 1.0 else None

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        if both is None:
            out: Tensor = net(x, t, text)
            return out
        cond_x0, uncond_x0 = net(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
        return uncond_x0 + scale * (cond_x0 - uncond_x0)

    limit = cfg.clamp_x0

    def clamp(x0: Tensor, step: int) -> Tensor:
        return x0.clamp(-limit, limit)

    denoise = denoiser_from_model(model_fn, schedule, x0_transform=clamp, clip=False, prediction="x0")
    x = noise.initial((cfg.clip_dim,), device, torch.float32)
    result = sample(sampler.name, denoise, x, schedule, noise=noise, eta=sampler.eta, callback=callback)
    return prior.denormalize(result)


def decoder_conditioning(decoder: Text2ImUNet, text: ClipText, uncond: ClipText | None, embeddings: Tensor) -> Conditioning:
    """The decoder's inputs: the image embeddings with the prompts' text, and (for guidance)
    the learned "no image" embedding with the empty (or negative) prompts' text."""
    cond = decoder.encode_clip(text.pooled, text.tokens, text.mask, embeddings)
    unguided = None if uncond is None else decoder.encode_clip(uncond.pooled, uncond.tokens, uncond.mask, None)
    return Conditioning(cond, unguided, [False] * embeddings.shape[0])


def super_resolve(
    sr: ImprovedSuperRes,
    images: Tensor,
    noise: ImageNoise,
    sampler: SamplerChoice,
    *,
    callback: Callback | None = None,
    networks: tuple[NetworkCall, NetworkCall] | None = None,
) -> Tensor:
    """Karlo's improved SR of decoder outputs [B, 3, s, s]: bicubic (antialiased, as torchvision
    resizes tensors) to the SR size, then sampling where the last step uses `model_last_step`.
    `networks`, when given, are called in place of (model_first_steps, model_last_step)."""
    cfg = sr.config
    size = cfg.image_size
    low_res = sr_low_res(images, size)
    schedule = sampler.schedule(cfg.noise_schedule, cfg.diffusion_steps)
    first_steps, last_step = networks or (sr.model_first_steps, sr.model_last_step)
    first = denoiser_from_model(_with_low_res(first_steps, low_res), schedule, prediction=cfg.prediction)
    last = denoiser_from_model(_with_low_res(last_step, low_res), schedule, prediction=cfg.prediction)

    def denoise(x: Tensor, i: int) -> Prediction:
        return last(x, i) if i == 0 else first(x, i)  # i counts down: 0 is the last step

    x = noise.initial((3, size, size), low_res.device, torch.float32)
    return sample(sampler.name, denoise, x, schedule, noise=noise, eta=sampler.eta, callback=callback).clamp(-1, 1)


def sr_low_res(images: Tensor, size: int) -> Tensor:
    """What the SR U-Nets see of decoder outputs [B, 3, s, s]: clamped to [-1, 1] and resized
    to size x size bicubic, antialiased (as Karlo's torchvision resize of tensors); training
    (train/unclip_sr.py) gives its degraded low-resolution pictures the same way."""
    return F.interpolate(images.clamp(-1, 1).float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)


def _with_low_res(network: NetworkCall, low_res: Tensor) -> ModelFn:
    """`network` as a model_fn(x, t) that sees `low_res`."""

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        out: Tensor = network(x, t, low_res=low_res)
        return out

    return model_fn


# --- rendering jobs -----------------------------------------------------------------------------

class _UnclipRenderer:
    """Loads unCLIP's models from a session and runs the prior, decoder and SR for batches."""

    def __init__(
        self, session: Session, clip: ClipModels, decoder: Stage, sr: Stage | None, options: RenderOptions = DEFAULT_OPTIONS,
        best_of: BestOf | None = None,
    ):
        self.renderer = Renderer(session, options)
        self.session, self.clip_models, self.decoder_stage, self.sr_stage = session, clip, decoder, sr
        self.best_of = best_of
        self._layouts: dict[tuple[str, str, str | None], Tensor] = {}
        self.ranker = load_ranker(session, best_of.rank_model) if best_of is not None else None
        self._stats_set: set[str] = set()

    @property
    def reporter(self) -> Reporter:
        return self.renderer.reporter

    def clip(self) -> Any:
        return self.session.network(self.clip_models.clip, ModelKind.OPENCLIP)

    def text(self, prompts: Sequence[str], jobs: Sequence[Job]) -> ClipText:
        """CLIP's text features of the prompts (one per job), read in A1111's language unless
        the job is literal: emphasis weighs the token features that both the prior and the
        decoder attend to (render/emphasis.py); the pooled embedding stays the words'."""
        clip = self.clip()
        rows = [read_prompt(prompt) if not job.literal else WeightedPrompt((Segment(prompt),)) for prompt, job in zip(prompts, jobs)]
        self.renderer.warn_once([line for prompt, row in zip(prompts, rows) if (line := prompt_warning(prompt, row))])
        batch, weights = clip_batch(self.session.clip_tokenizer(clip.config.text_ctx), rows)
        for prompt, cut in zip(prompts, batch.truncated):
            self.renderer.warn_truncated(prompt, cut, clip.config.text_ctx - 2)
        mask = torch.arange(batch.tokens.shape[1])[None] < batch.lengths[:, None]
        device = self.session.device
        with torch.no_grad():
            features = clip_text(clip, batch.tokens.to(device), mask.to(device))
            if weights is None:
                return features

            def empty() -> Tensor:
                return encode_clip_prompts(clip, self.session.clip_tokenizer(clip.config.text_ctx), [""]).tokens

            return features._replace(tokens=weigh(features.tokens, weights, [job.emphasis for job in jobs], empty))

    def picture_embedding(self, path: Path) -> Tensor:
        clip = self.clip()
        pixels = preprocess_image(open_rgb(path), clip.config)[None].to(self.session.device)
        with torch.no_grad():
            return image_embedding(clip, pixels)

    def prior(self, name: str) -> PriorTransformer:
        prior: PriorTransformer = self.session.network(name, ModelKind.UNCLIP_PRIOR)
        if name not in self._stats_set:  # once: the file is read once, a compiled prior sees one module
            mean, std = read_clip_stats(self.session.weights_path(self.clip_models.stats, ModelKind.CLIP_STATS))
            prior.set_stats(mean, std)
            self._stats_set.add(name)
        return prior

    def batch_size(self, requested: int | str, count: int, prior: Stage | None = None) -> int:
        """`requested`, or for "auto" the largest batch (of pictures, or of best-of candidates)
        whose prior, decoder and SR calls fit the GPU together, measured (1 on the CPU)."""

        def probes() -> list[Probe]:
            device = self.session.device if self.session.offload.enabled else None
            found = [] if prior is None else [prior_probe(self.session.network(prior.model, ModelKind.UNCLIP_PRIOR), prior.scale != 1.0, device)]
            if self.sr_stage is not None:
                found.append(sr_probe(self.session.network(self.sr_stage.model, ModelKind.UNCLIP_SR), device))
            return found

        return self.renderer.batch_size(requested, count, [(self.decoder_stage, ModelKind.UNCLIP_DECODER)], more_probes=probes, best_of=self.best_of)

    def unguided(self, jobs: list[Job], guided: bool) -> ClipText | None:
        return self.text([job.negative or "" for job in jobs], jobs) if guided else None

    def decode(
        self, jobs: list[Job], noise: ImageNoise, embeddings: Tensor, text: ClipText, unguided: ClipText | None = None,
        start: Tensor | None = None,
    ) -> Tensor:
        """The decoder's pictures [B, 3, 64, 64] (before super-resolution). `unguided`: the
        jobs' unguided text when the prior already encoded it; `start`: the x_T to decode from
        instead of the noise (an inversion's)."""
        stage = self.decoder_stage
        decoder = self.session.network(stage.model, ModelKind.UNCLIP_DECODER)
        guided = stage.scale != 1.0
        uncond = (unguided if unguided is not None else self.unguided(jobs, True)) if guided else None
        conditioning = decoder_conditioning(decoder, text, uncond, embeddings.to(self.session.device))
        return sample_stage(
            decoder, conditioning, noise, stage.sampler, scale=stage.scale, callback=partial(self.reporter.step, "decoder"),
            network=self.session.sampling_call(stage.model, ModelKind.UNCLIP_DECODER), inputs=StageInputs(start=start),
        )

    def layout(self, picture: Path, embedding: Tensor, refine: int, jobs: list[Job]) -> Tensor:
        """The x_T [B, 3, s, s] from which the decoder (DDIM, eta 0) draws `picture` with its
        own `embedding` [1, D], each job's text and the stage's guidance (--keep-layout), with
        `refine` fixed-point refinements per step; one inversion per distinct text, kept for
        the render's later batches."""
        stage = self.decoder_stage
        decoder = self.session.network(stage.model, ModelKind.UNCLIP_DECODER)
        starts = []
        for job in jobs:
            key = (str(picture), job.prompt, job.negative)
            if key not in self._layouts:
                pixels = decoder_picture(picture, decoder.config.image_size)
                uncond = self.unguided([job], True) if stage.scale != 1.0 else None
                conditioning = decoder_conditioning(decoder, self.text([job.prompt], [job]), uncond, embedding.to(self.session.device))
                self._layouts[key] = invert_stage(
                    decoder, conditioning, pixels, stage.sampler, scale=stage.scale, refine=refine,
                    callback=partial(self.reporter.step, "inversion"), network=self.session.sampling_call(stage.model, ModelKind.UNCLIP_DECODER),
                )
            starts.append(self._layouts[key])
        return torch.cat(starts)

    def decode_prompts(self, prior: Stage, jobs: list[Job], noise: ImageNoise) -> Tensor:
        """The decoder's pictures of the image embeddings the prior gives for the jobs' prompts."""
        text = self.text([job.prompt for job in jobs], jobs)
        uncond = self.unguided(jobs, prior.scale != 1.0)
        embeddings = sample_prior(
            self.prior(prior.model), text, uncond, noise, prior.sampler, scale=prior.scale, callback=partial(self.reporter.step, "prior"),
            network=self.session.sampling_call(prior.model, ModelKind.UNCLIP_PRIOR),
        )
        return self.decode(jobs, noise, embeddings, text, uncond)

    def decode_embeddings(
        self, embeddings_for: Callable[[list[Job]], Tensor], jobs: list[Job], noise: ImageNoise,
        start_for: Callable[[list[Job]], Tensor] | None = None,
    ) -> Tensor:
        """The decoder's pictures of the image embeddings [B, D] that `embeddings_for(jobs)`
        gives, with each job's prompt as the decoder's text, from `start_for(jobs)`'s x_T when given."""
        start = start_for(jobs) if start_for is not None else None
        return self.decode(jobs, noise, embeddings_for(jobs), self.text([job.prompt for job in jobs], jobs), start=start)

    def super_resolve_batch(self, sr_stage: Stage, images: Tensor, noise: ImageNoise) -> Tensor:
        """The SR stage on a batch of the decoder's pictures, continuing their noise."""
        sr = self.session.network(sr_stage.model, ModelKind.UNCLIP_SR)
        first_steps, last_step = (self.session.sampling_call(sr_stage.model, ModelKind.UNCLIP_SR, part) for part in ("model_first_steps", "model_last_step"))
        return super_resolve(sr, images, noise, sr_stage.sampler, callback=partial(self.reporter.step, "super-res"), networks=(first_steps, last_step))

    def render(self, jobs: Sequence[Job], decoded: StageFn, prior: Stage | None = None, source: Settings | None = None) -> Iterator[RenderedImage]:
        """Every batch of jobs: `decoded(batch, noise)`'s pictures (the best of N candidates
        with best_of), then super-resolution unless there is no SR stage. `prior`: the
        prior stage `decoded` runs; `source`: the pictures it decodes, as recorded."""
        batch_size = self.batch_size(self.renderer.options.batch_size, len(jobs), prior)
        for batch in batches(jobs, batch_size):
            with torch.no_grad():
                images, noise, picks = first_stage_images(batch, self.best_of, self.ranker, decoded, batch_size)
                if self.sr_stage is not None:
                    images = self.super_resolve_batch(self.sr_stage, images, noise)
            # After the batch: the models' hashes are known once they are loaded.
            yield from self.renderer.outputs(images, batch, self.settings(prior, source), picks)

    def settings(self, prior: Stage | None, source: Settings | None) -> tuple[StageRecord | Settings, ...]:
        """What a picture records: its source pictures or its prior stage, the decoder and
        SR stages, and the CLIP model."""
        settings: list[StageRecord | Settings] = [] if source is None else [source]
        if prior is not None:
            settings.append(self.renderer.stage_record(StageRole.PRIOR, prior, scale=prior.scale))
        settings.append(self.renderer.stage_record(StageRole.DECODER, self.decoder_stage, scale=self.decoder_stage.scale))
        if self.sr_stage is not None:
            settings.append(self.renderer.stage_record(StageRole.SR, self.sr_stage))
        settings.append({"clip_model": self.clip_models.clip})
        return tuple(settings)


def render_unclip(
    session: Session, jobs: Sequence[Job], prior: Stage = DEFAULT_PRIOR, decoder: Stage = DEFAULT_DECODER, sr: Stage | None = DEFAULT_SR,
    *, clip: ClipModels = ClipModels(), options: RenderOptions = DEFAULT_OPTIONS, best_of: BestOf | None = None,
) -> Iterator[RenderedImage]:
    """Text to image with unCLIP: prior, decoder, then super-resolution unless `sr` is None.
    With `best_of`, prior and decoder run for every candidate, SR for the winner only."""
    renderer = _UnclipRenderer(session, clip, decoder, sr, options, best_of)
    yield from renderer.render(jobs, partial(renderer.decode_prompts, prior), prior=prior)


def render_vary(
    session: Session, jobs: Sequence[Job], image: Path, decoder: Stage = DEFAULT_DECODER, sr: Stage | None = DEFAULT_SR,
    *, clip: ClipModels = ClipModels(), options: RenderOptions = DEFAULT_OPTIONS, best_of: BestOf | None = None,
    text_diff: TextDiff | None = None, keep_layout: bool = False, layout_refine: int = defaults.KEEP_LAYOUT_REFINE,
) -> Iterator[RenderedImage]:
    """Variations of a picture: its CLIP image embedding drives the decoder (with each job's
    prompt as the decoder's text, usually empty), then super-resolution. With `best_of`,
    the candidates are ranked against the jobs' prompts (give one). With `text_diff`, each
    job (a VaryJob) turns the embedding toward the new caption by its amount. With
    `keep_layout`, the decoder (DDIM, eta 0) starts from the inversion of the picture instead
    of the noise, so the pictures keep its layout (`layout_refine`: the inversion's fixed-point
    refinements per step, each one more decoder pass; diffusion/inversion.py)."""
    if keep_layout:
        decoder = layout_stage(decoder)
    renderer = _UnclipRenderer(session, clip, decoder, sr, options, best_of)
    embedding = renderer.picture_embedding(image)
    source: dict[str, object] = {"image": str(image), "image_sha256": sha256_file(image)}
    embeddings_for = partial(repeated, embedding)
    if text_diff is not None:
        captions = [text_diff.away, text_diff.toward]  # read in the prompt language, as the jobs' prompts are
        away, toward = renderer.text(captions, [Job(caption, 0) for caption in captions]).pooled
        embeddings_for = partial(diffed, embedding, away, toward)
        source.update(text_diff.record())
    start_for = _layout_keeper(renderer, image, embedding, layout_refine if keep_layout else None, source)
    yield from renderer.render(jobs, partial(renderer.decode_embeddings, embeddings_for, start_for=start_for), source=source)


def render_blend(
    session: Session, jobs: Sequence[BlendJob], image_a: Path, image_b: Path, decoder: Stage = DEFAULT_DECODER, sr: Stage | None = DEFAULT_SR,
    *, clip: ClipModels = ClipModels(), options: RenderOptions = DEFAULT_OPTIONS, best_of: BestOf | None = None,
    keep_layout: bool = False, layout_refine: int = defaults.KEEP_LAYOUT_REFINE,
) -> Iterator[RenderedImage]:
    """Pictures between two others: the slerp of their CLIP image embeddings at each job's
    `mix` drives the decoder, then super-resolution (`best_of` as for render_vary). Each
    picture records its mix. With `keep_layout`, every picture is decoded (DDIM, eta 0) from
    the inversion of picture A, so the frames keep A's layout (`layout_refine` as for render_vary)."""
    if keep_layout:
        decoder = layout_stage(decoder)
    renderer = _UnclipRenderer(session, clip, decoder, sr, options, best_of)
    first, second = renderer.picture_embedding(image_a), renderer.picture_embedding(image_b)[0]
    source: dict[str, object] = {
        "image_a": str(image_a), "image_a_sha256": sha256_file(image_a),
        "image_b": str(image_b), "image_b_sha256": sha256_file(image_b),
    }
    start_for = _layout_keeper(renderer, image_a, first, layout_refine if keep_layout else None, source)
    embeddings_for = partial(blended, first[0], second)
    yield from renderer.render(jobs, partial(renderer.decode_embeddings, embeddings_for, start_for=start_for), source=source)


def _layout_keeper(
    renderer: _UnclipRenderer, picture: Path, embedding: Tensor, refine: int | None, source: dict[str, object]
) -> Callable[[list[Job]], Tensor] | None:
    """With --keep-layout (`refine` not None), the x_T of each batch: the inversion of
    `picture`, recorded in `source`; else None: the decoder starts from the noise."""
    if refine is None:
        return None
    source.update(keep_layout=True, layout_refine=refine)
    return partial(renderer.layout, picture, embedding, refine)
