"""Plans of the commands that draw from text alone: generate and clip-guide."""

from __future__ import annotations

from typing import Optional

from ..files.manifest import Manifest
from .commands import ClipGuideRequest, GenerateRequest
from .jobs import make_jobs
from .options import RequestError
from .plan import RenderPlan
from .stages import best_of_choice, build_stage, init_image, sized_stages, upsampler_stage


def plan_generate(request: GenerateRequest, manifest: Manifest, shard: Optional[str] = None) -> RenderPlan:
    from ..render.engine import render_generate

    r = request
    warnings: list[str] = []
    base = build_stage(manifest, r.model, "base", r.sampler, r.steps, eta=r.eta, threshold=r.threshold, scale=r.scale, warnings=warnings)
    upsample = upsampler_stage(manifest, r.size, r.model, "base", r.upsample_model, "upsample", r.upsample_sampler, r.upsample_steps, r.upsample_temp)
    base, upsample = sized_stages(manifest, base, upsample, "base", "upsample", r.width, r.height)
    init = init_image(r.init_image, r.strength, r.upsample_strength, r.init_fit, upsample is not None)
    ranking = best_of_choice(r.best_of, r.rank_model, init)
    jobs = make_jobs(r.prompts, r.num, r.seed, r.negative, shard=shard)
    return RenderPlan(
        "generate", manifest, jobs,
        lambda session, todo, reporter, meta: render_generate(
            session, todo, base, upsample, batch_size=r.batch_size, reporter=reporter, extra_meta=meta, init=init, best_of=ranking
        ),
        warnings,
    )


def plan_clip_guide(request: ClipGuideRequest, manifest: Manifest, shard: Optional[str] = None) -> RenderPlan:
    from ..render.engine import ClipSteering, model_entry, render_generate

    r = request
    jobs = make_jobs(r.prompts, r.num, r.seed, None, shard=shard, composable=False, command="clip-guide")
    model_entry(manifest, r.clip_image_model, "clip-image")
    model_entry(manifest, r.clip_text_model, "clip-text")
    if r.sampler != "ddpm":
        raise RequestError("CLIP guidance shifts each step's mean: use --sampler ddpm", "--sampler")
    warnings: list[str] = []
    base = build_stage(manifest, r.model, "base", r.sampler, r.steps, eta=r.eta, threshold=r.threshold, warnings=warnings)
    upsample = upsampler_stage(manifest, r.size, r.model, "base", r.upsample_model, "upsample", r.upsample_sampler, r.upsample_steps, r.upsample_temp)
    steering = ClipSteering(r.clip_image_model, r.clip_text_model, r.clip_scale)
    return RenderPlan(
        "clip-guide", manifest, jobs,
        lambda session, todo, reporter, meta: render_generate(
            session, todo, base, upsample, clip=steering, batch_size=r.batch_size, reporter=reporter, extra_meta=meta
        ),
        warnings,
    )
