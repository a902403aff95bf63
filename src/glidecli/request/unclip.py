"""Plans of the unCLIP commands (Karlo): unclip, vary and blend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ..files.manifest import Manifest
from ..nets.kinds import ModelKind
from ..nets.unclip_config import OpenClipConfig
from ..render import defaults
from . import options as o
from .commands import BlendRequest, UnclipRequest, VaryRequest, chosen
from .jobs import check_image_count, make_jobs
from .options import Option, RequestError, required
from .plan import RenderPlan
from .stages import StageSpec, best_of_choice, build_stage, diffusion_arch, unet_arch

if TYPE_CHECKING:
    from ..render.jobs import BlendJob, Job, Stage
    from ..render.ranking import BestOf
    from ..render.unclip import ClipModels

# (model, kind, option) of a model that reads a CLIP's embeddings: the prior or the decoder.
Reader = tuple[str, ModelKind, str]


def decoder_stages(manifest: Manifest, request: UnclipRequest | VaryRequest | BlendRequest, warnings: list[str]) -> tuple[Stage, Stage | None]:
    """The decoder stage and the SR stage (None with --size at the decoder's size)."""
    r = request
    decoder_model, sr_model = chosen(r.decoder_model), chosen(r.sr_model)
    decoder = build_stage(manifest, StageSpec(decoder_model, ModelKind.UNCLIP_DECODER, r.sampler, r.steps, scale=r.scale), warnings)
    decoder_size = unet_arch(manifest, decoder_model, ModelKind.UNCLIP_DECODER).image_size
    # A manifest without the default SR (a decoder trained with glide train) stops at the decoder.
    if r.size == decoder_size or (r.size is None and sr_model == defaults.UNCLIP_SR.model and sr_model not in manifest.models):
        return decoder, None
    sr_arch = unet_arch(manifest, sr_model, ModelKind.UNCLIP_SR)
    if r.size is not None and r.size != sr_arch.image_size:
        raise RequestError(f"{r.size} is neither {decoder_size} (decoder only) nor {sr_arch.image_size} (with super-resolution)", "--size")
    return decoder, build_stage(manifest, StageSpec(sr_model, ModelKind.UNCLIP_SR, r.sr_sampler, r.sr_steps, steps_option="--sr-steps"))


def clip_models(manifest: Manifest, clip_model: str, clip_stats: str | None, readers: Sequence[Reader] = ()) -> ClipModels:
    """The CLIP entries, checked against the `readers` ((name, kind, option) of the prior and
    the decoder): each reads embeddings of the CLIP's width, and the prior its text length."""
    from ..render.session import model_entry
    from ..render.unclip import ClipModels

    clip = model_entry(manifest, clip_model, ModelKind.OPENCLIP).arch
    if not isinstance(clip, OpenClipConfig):
        raise RequestError(f"{manifest.path}: model {clip_model!r} of kind {ModelKind.OPENCLIP} is not an OpenCLIP model")
    for name, kind, option in readers:
        arch = diffusion_arch(manifest, name, kind)
        if arch.clip_dim != clip.embed_dim:
            raise RequestError(
                f"{name} reads CLIP embeddings of width {arch.clip_dim}, but --clip-model {clip_model} makes {clip.embed_dim};"
                " give the CLIP it was trained with", option,
            )
        if kind == ModelKind.UNCLIP_PRIOR and arch.text_ctx != clip.text_ctx:
            raise RequestError(f"{name} reads {arch.text_ctx} text tokens, but --clip-model {clip_model} gives {clip.text_ctx}", option)
    if clip_stats is not None:
        model_entry(manifest, clip_stats, ModelKind.CLIP_STATS)
    return ClipModels(clip_model, clip_stats or ClipModels.stats)


def _best_of(count: int, rank_model: str | None, prompt: str) -> BestOf | None:
    """The best-of-N settings (None for one candidate); the judge needs text to score against."""
    ranking = best_of_choice(count, rank_model, None)
    if ranking is not None and not prompt.strip():
        raise RequestError("--best-of ranks the pictures by a CLIP score for the prompt: give --prompt TEXT")
    return ranking


def _picture(option: Option, path: Path | None) -> Path:
    """The picture `option` gives; a missing or unreadable one is refused before any model loads."""
    from ..files.images import open_rgb

    picture: Path = required(option, path)
    open_rgb(picture)
    return picture


def _from_embeddings(manifest: Manifest, r: VaryRequest | BlendRequest, warnings: list[str]) -> tuple[ClipModels, Stage, Stage | None]:
    """The CLIP that reads the pictures, and the decoder and SR stages, of vary and blend."""
    clip = clip_models(manifest, chosen(r.clip_model), None, ((chosen(r.decoder_model), ModelKind.UNCLIP_DECODER, "--decoder-model"),))
    decoder, sr = decoder_stages(manifest, r, warnings)
    return clip, decoder, sr


def plan_unclip(request: UnclipRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.unclip import render_unclip

    r = request
    warnings: list[str] = []
    prior_model = chosen(r.prior_model)
    readers = ((prior_model, ModelKind.UNCLIP_PRIOR, "--prior-model"), (chosen(r.decoder_model), ModelKind.UNCLIP_DECODER, "--decoder-model"))
    clip = clip_models(manifest, chosen(r.clip_model), chosen(r.clip_stats), readers)
    prior_spec = StageSpec(prior_model, ModelKind.UNCLIP_PRIOR, r.prior_sampler, r.prior_steps, scale=r.prior_scale, steps_option="--prior-steps")
    prior = build_stage(manifest, prior_spec, warnings)
    decoder, sr = decoder_stages(manifest, r, warnings)
    ranking = best_of_choice(r.best_of, r.rank_model, None)
    jobs = make_jobs(r.prompts, r.num, r.seed, r.negative, shard=shard, literal=r.literal_prompt, wildcards=r.wildcards, composable=False, command="unclip")
    return RenderPlan(
        command="unclip", manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        render=lambda session, todo, options: render_unclip(
            session, todo, prior, decoder, sr, clip=clip, options=options,
            best_of=ranking,
        ),
        warnings=warnings,
    )


def plan_vary(request: VaryRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.unclip import render_vary

    r = request
    warnings: list[str] = []
    clip, decoder, sr = _from_embeddings(manifest, r, warnings)
    image = _picture(o.IMAGE, r.image)
    ranking = _best_of(r.best_of, r.rank_model, r.prompt)
    jobs = make_jobs([r.prompt], r.num, r.seed, None, shard=shard, literal=r.literal_prompt, wildcards=r.wildcards, composable=False, command="vary")
    return RenderPlan(
        command="vary", manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        render=lambda session, todo, options: render_vary(
            session, todo, image, decoder, sr, clip=clip, options=options,
            best_of=ranking,
        ),
        warnings=warnings,
    )


def plan_blend(request: BlendRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.jobs import BlendJob
    from ..render.unclip import render_blend

    r = request
    warnings: list[str] = []
    if r.frames is not None and r.mix is not None:
        raise RequestError("give --mix or --frames, not both")
    clip, decoder, sr = _from_embeddings(manifest, r, warnings)
    image_a, image_b = _picture(o.IMAGE_A, r.image_a), _picture(o.IMAGE_B, r.image_b)
    ranking = _best_of(r.best_of, r.rank_model, r.prompt)
    if ranking is not None and r.frames is not None:
        raise RequestError("--frames keeps one seed for the whole sequence; --best-of would pick one per frame: use --mix")
    if r.frames is not None:
        check_image_count(r.frames * r.num, "--frames")
    if r.animate is not None and r.frames is None:
        raise RequestError("--animate makes the frames of a blend into an animation: give --frames N")
    mixes = [k / (r.frames - 1) for k in range(r.frames)] if r.frames is not None else [0.5 if r.mix is None else r.mix]
    seeds = make_jobs([r.prompt], r.num, r.seed, None, shard=shard, literal=r.literal_prompt, wildcards=r.wildcards, composable=False, command="blend")
    jobs: list[Job] = [BlendJob(base.prompt, base.seed, i * len(mixes) + k, None, value, literal=base.literal, template=base.template) for i, base in enumerate(seeds) for k, value in enumerate(mixes)]
    return RenderPlan(
        command="blend", manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        # `todo` holds this plan's jobs, every one a BlendJob (a RenderPlan's list is of Jobs).
        render=lambda session, todo, options: render_blend(
            session, cast("list[BlendJob]", todo), image_a, image_b, decoder, sr, clip=clip,
            options=options, best_of=ranking,
        ),
        warnings=warnings,
        animate=r.animate,
        animations=[tuple(range(i * len(mixes), (i + 1) * len(mixes))) for i in range(len(seeds))] if r.animate else [],
    )
