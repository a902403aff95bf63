"""Plans of the commands that draw from text alone: generate and clip-guide."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..diffusion.vocabulary import MAX_SEED, SamplerName
from ..files.manifest import Manifest
from ..nets.kinds import ModelKind
from .commands import ClipGuideRequest, GenerateRequest, chosen
from .jobs import check_image_count, make_jobs
from .plan import RenderPlan
from .stages import best_of_choice, glide_stages, init_image, sized_stages
from .values import RequestError

if TYPE_CHECKING:
    from ..render.jobs import Job
    from ..render.ranking import BestOf


def plan_generate(request: GenerateRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.engine import render_generate

    r = request
    warnings: list[str] = []
    base, upsample = glide_stages(manifest, r, ModelKind.BASE, warnings, scale=r.scale)
    base, upsample = sized_stages(manifest, base, upsample, ModelKind.BASE, ModelKind.UPSAMPLE, r.width, r.height)
    init = init_image(r.init_image, r.strength, r.upsample_strength, r.init_fit, upsample is not None)
    ranking = best_of_choice(r.best_of, r.rank_model, init)
    jobs = make_jobs(r.prompts, r.num, r.seed, r.negative, shard=shard, language=r)
    animations: list[tuple[int, ...]] = []
    if r.seed_walk is not None:
        jobs, animations = seed_walks(jobs, r.seed_walk, ranking)
    if r.animate is not None and r.seed_walk is None and r.show_steps is None:
        raise RequestError("--animate makes frames into an animation: give --seed-walk N or --show-steps N")
    if r.show_steps is not None and ranking is not None:
        raise RequestError("--show-steps follows one picture's sampling: it cannot follow --best-of's candidates")
    batch_size = 1 if r.show_steps is not None else r.batch_size  # one picture's steps at a time (the pictures are the same)
    return RenderPlan(
        command="generate", manifest=manifest, jobs=jobs, batch_size=batch_size,
        render=lambda session, todo, options: render_generate(
            session, todo, base, upsample, options=options, init=init,
            best_of=ranking,
        ),
        warnings=warnings, animate=r.animate or ("gif" if r.show_steps else None), animations=animations, show_steps=r.show_steps,
    )


def seed_walks(jobs: list[Job], frames: int, ranking: BestOf | None) -> tuple[list[Job], list[tuple[int, ...]]]:
    """Each job becomes `frames` frames of a seed walk (their noise turned a full circle),
    numbered on: job i's frame k has index i * frames + k."""
    from ..render.jobs import WalkJob

    if ranking is not None:
        raise RequestError("--seed-walk keeps one seed pair for the whole walk; --best-of would pick a candidate per frame")
    check_image_count(frames * len(jobs), "--seed-walk")
    if any(job.seed + 1 > MAX_SEED for job in jobs):
        raise RequestError(f"a seed walk turns towards seed + 1: give a seed below {MAX_SEED}", "--seed")
    walked: list[Job] = [
        WalkJob(job.prompt, job.seed, i * frames + k, job.negative, 2 * math.pi * k / frames, **job.prompt_reading()) for i, job in enumerate(jobs) for k in range(frames)
    ]
    return walked, [tuple(range(i * frames, (i + 1) * frames)) for i in range(len(jobs))]


def plan_clip_guide(request: ClipGuideRequest, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    from ..render.engine import ClipSteering, render_generate
    from ..render.session import model_entry

    r = request
    jobs = make_jobs(r.prompts, r.num, r.seed, None, shard=shard, language=r, composable=False, command="clip-guide")
    clip_image, clip_text = chosen(r.clip_image_model), chosen(r.clip_text_model)
    model_entry(manifest, clip_image, ModelKind.CLIP_IMAGE)
    model_entry(manifest, clip_text, ModelKind.CLIP_TEXT)
    if r.sampler != SamplerName.DDPM:
        raise RequestError("CLIP guidance shifts each step's mean: use --sampler ddpm", "--sampler")
    warnings: list[str] = []
    base, upsample = glide_stages(manifest, r, ModelKind.BASE, warnings)
    steering = ClipSteering(clip_image, clip_text, r.clip_scale)
    return RenderPlan(
        command="clip-guide", manifest=manifest, jobs=jobs, batch_size=r.batch_size,
        render=lambda session, todo, options: render_generate(
            session, todo, base, upsample, clip=steering, options=options
        ),
        warnings=warnings,
    )
