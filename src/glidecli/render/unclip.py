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

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diffusion.noise import ImageNoise
from ..diffusion.samplers import Callback, denoiser_from_model, sample
from ..files.fetch import sha256_file
from ..files.images import open_rgb
from ..nets.checkpoint import read_clip_stats
from ..nets.clip_vit import clip_text, image_embedding, preprocess_image
from ..nets.kinds import ModelKind
from ..nets.prior import ClipText, PriorTransformer
from ..nets.unclip import ImprovedSuperRes
from ..nets.unet import Text2ImUNet
from . import defaults
from .accel import NetworkCall
from .batching import Probe, prior_probe, sr_probe
from .engine import Job, RenderedImage, Renderer, Reporter, Session, Stage, batches, common_meta
from .pipeline import Conditioning, SamplerChoice, sample_stage
from .ranking import BestOf, first_stage_images, load_ranker

DEFAULT_PRIOR = Stage.of(defaults.UNCLIP_PRIOR)
DEFAULT_DECODER = Stage.of(defaults.UNCLIP_DECODER)
DEFAULT_SR = Stage.of(defaults.UNCLIP_SR)


@dataclass(frozen=True)
class ClipModels:
    """The CLIP ViT whose embeddings the networks read, and the prior's embedding statistics."""

    clip: str = defaults.UNCLIP_CLIP_MODEL
    stats: str = defaults.UNCLIP_CLIP_STATS


@dataclass(frozen=True)
class BlendJob(Job):
    """A blend picture: `mix` 0 is picture A's embedding, 1 is picture B's."""

    mix: float = 0.5


# --- the stages as plain functions ------------------------------------------------------------


def slerp(a: Tensor, b: Tensor, mix: float) -> Tensor:
    """Spherical interpolation of embeddings [D] (or [B, D]), as the paper's Figure 4: the
    direction moves along the great circle from a's to b's at constant angular speed, the
    length moves linearly from |a| to |b| (CLIP embeddings are not normalized)."""
    a64, b64 = a.double(), b.double()
    norm_a, norm_b = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    unit_a, unit_b = a64 / norm_a, b64 / norm_b
    omega = torch.arccos((unit_a * unit_b).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    if bool((sin.abs() < 1e-6).any()):  # (anti)parallel: no unique circle; interpolate linearly
        direction = (1 - mix) * unit_a + mix * unit_b
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    else:
        direction = (torch.sin((1 - mix) * omega) * unit_a + torch.sin(mix * omega) * unit_b) / sin
    return (direction * ((1 - mix) * norm_a + mix * norm_b)).to(a.dtype)


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
    if uncond is None or scale == 1.0:
        model_fn = lambda x, t: net(x, t, text)  # noqa: E731
    else:
        both = text.cat(uncond)

        def model_fn(x: Tensor, t: Tensor) -> Tensor:
            cond_x0, uncond_x0 = net(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
            return uncond_x0 + scale * (cond_x0 - uncond_x0)

    limit = cfg.clamp_x0
    denoise = denoiser_from_model(
        model_fn, schedule, x0_transform=lambda x0, i: x0.clamp(-limit, limit), clip=False, prediction="x0"
    )
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
    low_res = F.interpolate(images.clamp(-1, 1).float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    schedule = sampler.schedule(cfg.noise_schedule, cfg.diffusion_steps)
    denoisers = {
        which: denoiser_from_model(lambda x, t, net=net: net(x, t, low_res=low_res), schedule, prediction=cfg.prediction)
        for which, net in zip(("first", "last"), networks or (sr.model_first_steps, sr.model_last_step))
    }
    denoise = lambda x, i: denoisers["last" if i == 0 else "first"](x, i)  # noqa: E731
    x = noise.initial((3, size, size), low_res.device, torch.float32)
    return sample(sampler.name, denoise, x, schedule, noise=noise, eta=sampler.eta, callback=callback).clamp(-1, 1)


# --- rendering jobs -----------------------------------------------------------------------------


class _UnclipRenderer:
    """Loads unCLIP's models from a session and runs the decoder and SR for batches."""

    def __init__(
        self, session: Session, clip: ClipModels, decoder: Stage, sr: Stage | None, reporter: Reporter | None,
        best_of: BestOf | None = None,
    ):
        self.base = Renderer(session, reporter)
        self.session, self.clip_models, self.decoder_stage, self.sr_stage = session, clip, decoder, sr
        self.best_of = best_of
        self.ranker = load_ranker(session, best_of.rank_model) if best_of is not None else None
        self._stats_set: set[str] = set()

    @property
    def reporter(self) -> Reporter:
        return self.base.reporter

    def clip(self) -> Any:
        return self.session.network(self.clip_models.clip, ModelKind.OPENCLIP)

    def text(self, prompts: Sequence[str]) -> ClipText:
        clip = self.clip()
        batch = self.session.clip_tokenizer(clip.config.text_ctx).batch(list(prompts))
        for prompt, cut in zip(prompts, batch.truncated):
            self.base.warn_truncated(prompt, cut, clip.config.text_ctx - 2)
        mask = torch.arange(batch.tokens.shape[1])[None] < batch.lengths[:, None]
        device = self.session.device
        with torch.no_grad():
            return clip_text(clip, batch.tokens.to(device), mask.to(device))

    def picture_embedding(self, path: Path) -> Tensor:
        clip = self.clip()
        pixels = preprocess_image(open_rgb(path), clip.config)[None].to(self.session.device)
        with torch.no_grad():
            return image_embedding(clip, pixels)

    def prior(self, name: str) -> PriorTransformer:
        prior = self.session.network(name, ModelKind.UNCLIP_PRIOR)
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

        return self.base.batch_size(requested, count, [(self.decoder_stage, ModelKind.UNCLIP_DECODER)], more_probes=probes, best_of=self.best_of)

    def unguided(self, jobs: list[Job], guided: bool) -> ClipText | None:
        return self.text([job.negative or "" for job in jobs]) if guided else None

    def decode(
        self, jobs: list[Job], noise: ImageNoise, embeddings: Tensor, text: ClipText, unguided: ClipText | None = None
    ) -> Tensor:
        """The decoder's pictures [B, 3, 64, 64] (before super-resolution). `unguided`: the
        jobs' unguided text when the prior already encoded it."""
        stage = self.decoder_stage
        decoder = self.session.network(stage.model, ModelKind.UNCLIP_DECODER)
        guided = stage.scale != 1.0
        uncond = (unguided if unguided is not None else self.unguided(jobs, True)) if guided else None
        conditioning = decoder_conditioning(decoder, text, uncond, embeddings.to(self.session.device))
        return sample_stage(
            decoder, conditioning, noise, stage.sampler, scale=stage.scale,
            callback=lambda info: self.reporter.step("decoder", info),
            network=self.session.sampling_call(stage.model, ModelKind.UNCLIP_DECODER),
        )

    def render(
        self,
        jobs: Sequence[Job],
        batch_size: int,
        decoded: Callable[[list[Job], ImageNoise], Tensor],
        meta: Callable[[], dict[str, Any]],
    ) -> Iterator[RenderedImage]:
        """Every batch of jobs (`batch_size` resolved): `decoded(batch, noise)`'s pictures (the
        best of N candidates with best_of), then super-resolution unless there is no SR stage."""
        for batch in batches(jobs, batch_size):
            with torch.no_grad():
                images, noise, per_image = first_stage_images(batch, self.best_of, self.ranker, decoded, batch_size)
                if self.sr_stage is not None:
                    name = self.sr_stage.model
                    sr = self.session.network(name, ModelKind.UNCLIP_SR)
                    networks = tuple(self.session.sampling_call(name, ModelKind.UNCLIP_SR, part) for part in ("model_first_steps", "model_last_step"))
                    images = super_resolve(
                        sr, images, noise, self.sr_stage.sampler, callback=lambda info: self.reporter.step("super-res", info),
                        networks=networks,
                    )
            # After the batch: the models' hashes are known once they are loaded.
            yield from self.base.outputs(images, batch, meta(), per_image)

    def decode_jobs(
        self,
        jobs: Sequence[Job],
        batch_size: int | str,
        embeddings_for: Callable[[list[Job]], Tensor],
        source: dict[str, Any],
        extra: Mapping[str, Any] | None,
    ) -> Iterator[RenderedImage]:
        """Decode (and super-resolve) every batch of jobs from the image embeddings [B, D]
        that `embeddings_for(batch)` gives, with each job's prompt as the decoder's text."""

        def decoded(todo: list[Job], noise: ImageNoise) -> Tensor:
            return self.decode(todo, noise, embeddings_for(todo), self.text([job.prompt for job in todo]))

        yield from self.render(jobs, self.batch_size(batch_size, len(jobs)), decoded, lambda: {**source, **self.meta(extra)})

    def meta(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        meta = {**self.base.stage_meta("decoder_", self.decoder_stage), "decoder_scale": self.decoder_stage.scale}
        if self.sr_stage is not None:
            meta.update(self.base.stage_meta("sr_", self.sr_stage))
        meta["clip_model"] = self.clip_models.clip
        return {**meta, **common_meta(self.session, extra)}


def render_unclip(
    session: Session,
    jobs: Sequence[Job],
    prior: Stage = DEFAULT_PRIOR,
    decoder: Stage = DEFAULT_DECODER,
    sr: Stage | None = DEFAULT_SR,
    *,
    clip: ClipModels = ClipModels(),
    batch_size: int | str = 1,
    reporter: Reporter | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    best_of: BestOf | None = None,
) -> Iterator[RenderedImage]:
    """Text to image with unCLIP: prior, decoder, then super-resolution unless `sr` is None.
    With `best_of`, prior and decoder run for every candidate, SR for the winner only."""
    renderer = _UnclipRenderer(session, clip, decoder, sr, reporter, best_of)

    def decoded(todo: list[Job], noise: ImageNoise) -> Tensor:
        text = renderer.text([job.prompt for job in todo])
        uncond = renderer.unguided(todo, prior.scale != 1.0)
        embeddings = sample_prior(
            renderer.prior(prior.model), text, uncond, noise, prior.sampler, scale=prior.scale,
            callback=lambda info: renderer.reporter.step("prior", info),
            network=session.sampling_call(prior.model, ModelKind.UNCLIP_PRIOR),
        )
        return renderer.decode(todo, noise, embeddings, text, uncond)

    meta = lambda: {**renderer.base.stage_meta("prior_", prior), "prior_scale": prior.scale, **renderer.meta(extra_meta)}  # noqa: E731
    yield from renderer.render(jobs, renderer.batch_size(batch_size, len(jobs), prior), decoded, meta)


def render_vary(
    session: Session,
    jobs: Sequence[Job],
    image: Path,
    decoder: Stage = DEFAULT_DECODER,
    sr: Stage | None = DEFAULT_SR,
    *,
    clip: ClipModels = ClipModels(),
    batch_size: int | str = 1,
    reporter: Reporter | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    best_of: BestOf | None = None,
) -> Iterator[RenderedImage]:
    """Variations of a picture: its CLIP image embedding drives the decoder (with each job's
    prompt as the decoder's text, usually empty), then super-resolution. With `best_of`,
    the candidates are ranked against the jobs' prompts (give one)."""
    renderer = _UnclipRenderer(session, clip, decoder, sr, reporter, best_of)
    embedding = renderer.picture_embedding(image)
    source = {"image": str(image), "image_sha256": sha256_file(image)}
    embeddings_for = lambda batch: embedding.expand(len(batch), -1)  # noqa: E731
    yield from renderer.decode_jobs(jobs, batch_size, embeddings_for, source, extra_meta)


def render_blend(
    session: Session,
    jobs: Sequence[BlendJob],
    image_a: Path,
    image_b: Path,
    decoder: Stage = DEFAULT_DECODER,
    sr: Stage | None = DEFAULT_SR,
    *,
    clip: ClipModels = ClipModels(),
    batch_size: int | str = 1,
    reporter: Reporter | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    best_of: BestOf | None = None,
) -> Iterator[RenderedImage]:
    """Pictures between two others: the slerp of their CLIP image embeddings at each job's
    `mix` drives the decoder, then super-resolution (`best_of` as for render_vary)."""
    renderer = _UnclipRenderer(session, clip, decoder, sr, reporter, best_of)
    first, second = renderer.picture_embedding(image_a)[0], renderer.picture_embedding(image_b)[0]
    source = {
        "image_a": str(image_a), "image_a_sha256": sha256_file(image_a),
        "image_b": str(image_b), "image_b_sha256": sha256_file(image_b),
    }
    embeddings_for = lambda batch: torch.stack([slerp(first, second, job.mix) for job in batch])  # noqa: E731
    for rendered in renderer.decode_jobs(jobs, batch_size, embeddings_for, source, extra_meta):
        rendered.meta["mix"] = rendered.job.mix
        yield rendered
