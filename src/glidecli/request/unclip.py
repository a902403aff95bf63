"""Plans of the unCLIP commands (Karlo): unclip, vary and blend."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from ..diffusion.vocabulary import SamplerName
from ..files.manifest import Manifest
from ..nets.kinds import ModelKind
from ..nets.unclip_config import OpenClipConfig
from ..render import defaults
from . import options as o
from .commands import BlendRequest, UnclipRequest, VaryRequest, chosen
from .jobs import check_image_count, make_jobs
from .plan import RenderPlan
from .stages import StageSpec, best_of_choice, build_stage, diffusion_arch, unet_arch
from .values import Option, RequestError, required

if TYPE_CHECKING:
    from ..render.jobs import BlendJob, Job, Stage
    from ..render.ranking import BestOf
    from ..render.unclip import ClipModels
    from ..render.unclip_edits import TextDiff

R = TypeVar("R", VaryRequest, BlendRequest)
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
    jobs = make_jobs(r.prompts, r.num, r.seed, r.negative, shard=shard, language=r, composable=False, command="unclip")
    return RenderPlan(
        command="unclip", manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        render=lambda session, todo, options: render_unclip(
            session, todo, prior, decoder, sr, clip=clip, options=options,
            best_of=ranking,
        ),
        warnings=warnings,
    )


def plan_vary(request: VaryRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.jobs import VaryJob
    from ..render.unclip import render_vary

    r = request
    warnings: list[str] = []
    image = _picture(o.IMAGE, r.image)
    text_diff, amounts = _text_diff(r, image)
    r = _with_layout(r, image, manifest, warnings)
    clip, decoder, sr = _from_embeddings(manifest, r, warnings)
    ranking = _best_of(r.best_of, r.rank_model, r.prompt)
    if r.animate is not None and len(amounts) < 2:
        raise RequestError("--animate makes the pictures of several amounts into an animation: give --toward TEXT --amount A,B,...")
    check_image_count(max(1, len(amounts)) * r.num, "--amount")
    seeds = make_jobs([r.prompt], r.num, r.seed, None, shard=shard, language=r, composable=False, command="vary")
    jobs: list[Job] = (
        [VaryJob(base.prompt, base.seed, i * len(amounts) + k, None, value, **base.prompt_reading()) for i, base in enumerate(seeds) for k, value in enumerate(amounts)]
        if text_diff is not None else seeds
    )
    return RenderPlan(
        command="vary", manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        render=lambda session, todo, options: render_vary(
            session, todo, image, decoder, sr, clip=clip, options=options,
            best_of=ranking, text_diff=text_diff, keep_layout=r.keep_layout, layout_refine=r.layout_refine,
        ),
        warnings=warnings,
        animate=r.animate,
        animations=[tuple(range(i * len(amounts), (i + 1) * len(amounts))) for i in range(len(seeds))] if r.animate else [],
    )


def _text_diff(r: VaryRequest, image: Path) -> tuple[TextDiff | None, tuple[float, ...]]:
    """The text diff of --toward/--away (None without --toward) and its amounts; --away
    defaults to the prompt the picture records."""
    from ..render.unclip_edits import TextDiff

    if r.toward is None:
        for option, value in ((o.AWAY, r.away), (o.AMOUNT, r.amount)):
            if value is not None:
                raise RequestError("belongs to a text diff: give --toward TEXT too", option.flag)
        return None, ()
    if not r.toward.strip():
        raise RequestError("is empty: give the new caption", o.TOWARD.flag)
    away = r.away if r.away is not None else _recorded_prompt(image)
    if away is None or not away.strip():
        raise RequestError(f"{image} records no prompt for --toward to move away from: give --away 'its caption'")
    return TextDiff(r.toward, away), r.amount or (defaults.TEXT_DIFF_AMOUNT,)


def _recorded_prompt(image: Path) -> str | None:
    """The prompt the picture's PNG records (glide's or A1111's), if any."""
    from ..files.pngfile import ImageError, read_png_metadata

    try:
        prompt = read_png_metadata(image).get("prompt")
    except ImageError:  # not a PNG: it records nothing
        return None
    return prompt if isinstance(prompt, str) else None


def _with_layout(r: R, image: Path, manifest: Manifest, warnings: list[str]) -> R:
    """The request as it runs: with --keep-layout, the decoder samples ddim (eta 0, invertible),
    the picture is a square the decoder's size can take, and one decoder picture per amount or mix."""
    from ..render.sizes import layout_picture_problem

    if not r.keep_layout:
        if r.layout_refine != defaults.KEEP_LAYOUT_REFINE:
            raise RequestError("refines --keep-layout's inversion: give --keep-layout too", o.LAYOUT_REFINE.flag)
        return r
    if r.sampler not in (defaults.UNCLIP_DECODER.sampler, SamplerName.DDIM):
        raise RequestError("--keep-layout decodes with ddim (eta 0), the sampler that inverts: leave --sampler out or give ddim", o.DECODER_SAMPLER.flag)
    if r.best_of > 1:
        raise RequestError("--keep-layout decodes the same picture from every seed, so --best-of would compare copies: leave one out")
    side = unet_arch(manifest, chosen(r.decoder_model), ModelKind.UNCLIP_DECODER).image_size
    problem = layout_picture_problem(*_picture_size(image), side)
    if problem is not None:
        raise RequestError(problem)
    if r.num > 1:
        what = "differ only in super-resolution's noise" if r.size != side else "are the same picture"
        warnings.append(f"--keep-layout decodes without noise: the {r.num} pictures of each amount or mix {what}")
    return dataclasses.replace(r, sampler=SamplerName.DDIM)


def _picture_size(image: Path) -> tuple[int, int]:
    from ..files.images import open_rgb

    width, height = open_rgb(image).size
    return width, height


def plan_blend(request: BlendRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.jobs import BlendJob
    from ..render.unclip import render_blend

    r = request
    warnings: list[str] = []
    if r.frames is not None and r.mix is not None:
        raise RequestError("give --mix or --frames, not both")
    image_a, image_b = _picture(o.IMAGE_A, r.image_a), _picture(o.IMAGE_B, r.image_b)
    r = _with_layout(r, image_a, manifest, warnings)
    clip, decoder, sr = _from_embeddings(manifest, r, warnings)
    ranking = _best_of(r.best_of, r.rank_model, r.prompt)
    if ranking is not None and r.frames is not None:
        raise RequestError("--frames keeps one seed for the whole sequence; --best-of would pick one per frame: use --mix")
    if r.frames is not None:
        check_image_count(r.frames * r.num, "--frames")
    if r.animate is not None and r.frames is None:
        raise RequestError("--animate makes the frames of a blend into an animation: give --frames N")
    mixes = [k / (r.frames - 1) for k in range(r.frames)] if r.frames is not None else [0.5 if r.mix is None else r.mix]
    seeds = make_jobs([r.prompt], r.num, r.seed, None, shard=shard, language=r, composable=False, command="blend")
    jobs: list[Job] = [BlendJob(base.prompt, base.seed, i * len(mixes) + k, None, value, **base.prompt_reading()) for i, base in enumerate(seeds) for k, value in enumerate(mixes)]
    return RenderPlan(
        command="blend", manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        # `todo` holds this plan's jobs, every one a BlendJob (a RenderPlan's list is of Jobs).
        render=lambda session, todo, options: render_blend(
            session, cast("list[BlendJob]", todo), image_a, image_b, decoder, sr, clip=clip,
            options=options, best_of=ranking, keep_layout=r.keep_layout, layout_refine=r.layout_refine,
        ),
        warnings=warnings,
        animate=r.animate,
        animations=[tuple(range(i * len(mixes), (i + 1) * len(mixes))) for i in range(len(seeds))] if r.animate else [],
    )
