"""A subset of AUTOMATIC1111's web UI API, /sdapi/v1, so the tools that speak it (Open WebUI's
"automatic1111" engine, SillyTavern, scripts) can use glide as their backend.

txt2img becomes `generate`, img2img `generate --init-image` (init_images with
denoising_strength) or, with a mask, `inpaint`. A1111's clients send every field with
A1111's own defaults: a field that holds its default, or that means nothing here, is
ignored; one that would change the picture if honoured but cannot be is refused with a 422
and one line. docs/serving.md lists every field.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ..diffusion.vocabulary import SAMPLER_NAMES, SamplerName
from ..files.vocabulary import FitMode
from ..nets.kinds import ModelKind
from ..render.defaults import glide_model
from ..request.a1111 import A1111_SAMPLERS, glide_sampler
from ..request.commands import GenerateRequest, InpaintRequest
from ..request.options import RequestError
from .body import read_json
from .dependencies import ServiceDep
from .jobs import Job, JobState
from .models import companion, default_model, model_size
from .service import ClientError, Service

A1111_API = "/sdapi/v1"
router = APIRouter(prefix=A1111_API, tags=["automatic1111"])

# Fields that hold A1111's defaults in every client, and mean the picture A1111 makes by
# default: ignored at these values (glide's own defaults apply).
A1111_DEFAULTS = {"steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512, "sampler_name": "Euler a", "sampler_index": "Euler",
                  "mask_blur": 4, "denoising_strength": 0.75, "resize_mode": 0}
# Fields that would change the picture if honoured, with the values that change nothing.
REFUSED_UNLESS = {
    "restore_faces": (None, False), "tiling": (None, False), "enable_hr": (None, False), "styles": (None, []),
    "subseed_strength": (None, 0, 0.0), "script_name": (None, ""), "alwayson_scripts": (None, {}), "script_args": (None, []),
    "refiner_checkpoint": (None, ""), "firstpass_image": (None, ""), "image_cfg_scale": (None,), "initial_noise_multiplier": (None, 1, 1.0),
    "latent_mask": (None, ""), "seed_resize_from_h": (None, -1, 0), "seed_resize_from_w": (None, -1, 0),
}
# Fields that mean nothing here (saving is always on; no extra networks; no k-diffusion knobs).
IGNORED = {
    "do_not_save_samples", "do_not_save_grid", "save_images", "override_settings_restore_afterwards", "disable_extra_networks",
    "comments", "force_task_id", "infotext", "scheduler", "s_min_uncond", "s_churn", "s_tmax", "s_tmin", "s_noise", "subseed",
    "token_merging_ratio", "token_merging_ratio_hr", "clip_skip", "include_init_images", "inpainting_fill", "mask_round",
    "mask_blur_x", "mask_blur_y", "inpaint_full_res_padding", "refiner_switch_at", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
    "hr_resize_x", "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
    "firstphase_width", "firstphase_height", "inpaint_full_res", "send_images", "sampler_index", "override_settings",
}
MAPPED = {"prompt", "negative_prompt", "seed", "steps", "cfg_scale", "width", "height", "batch_size", "n_iter", "sampler_name",
          "eta", "init_images", "denoising_strength", "mask", "inpainting_mask_invert", "mask_blur", "resize_mode"}
RESIZE_MODES = {0: FitMode.STRETCH, 1: FitMode.CROP, 2: FitMode.PAD}  # A1111: just resize, crop and resize, resize and fill
CHECKPOINT_KINDS = (ModelKind.BASE, ModelKind.BASE_INPAINT)  # the models A1111's clients pick as checkpoints


@router.post("/txt2img")
async def txt2img(request: Request, service: ServiceDep) -> dict[str, Any]:
    body = await read_json(request, service.config.limits)
    return await run_in_threadpool(_render, service, body, False)


@router.post("/img2img")
async def img2img(request: Request, service: ServiceDep) -> dict[str, Any]:
    body = await read_json(request, service.config.limits)
    return await run_in_threadpool(_render, service, body, True)


def _render(service: Service, body: dict[str, Any], from_picture: bool) -> dict[str, Any]:
    command, options, pictures = translate(service, body, from_picture)
    unknown = sorted(set(body) - MAPPED - IGNORED - set(REFUSED_UNLESS))
    job = service.submit(command, options, pictures)
    service.queue.wait(job)
    if job.state == JobState.FAILED:
        raise ClientError(job.error or "the render failed", 500)
    if job.state == JobState.CANCELLED and not job.files:
        raise ClientError("interrupted before any picture was finished", 409)
    images = [base64.b64encode(service.image_path(f["name"]).read_bytes()).decode() for f in job.files]
    return {
        "images": images if body.get("send_images", True) is not False else [],
        "parameters": body,
        "info": json.dumps({**_info(job, options), "ignored_fields": unknown}, ensure_ascii=False),
    }


def translate(service: Service, body: dict[str, Any], from_picture: bool) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(command, options by CLI name, pictures) for an A1111 request body."""
    for key, allowed in REFUSED_UNLESS.items():
        if key in body and body[key] not in allowed:
            raise ClientError(f"{key}={json.dumps(body[key])} has no equivalent in glide (only {json.dumps(allowed[-1])} works)")
    # Fields A1111 itself does not know are ignored, as its own models ignore them (the
    # answer's info lists them as ignored_fields).
    override = body.get("override_settings") or {}
    if not isinstance(override, dict):
        raise ClientError("override_settings must be an object")
    checkpoint = override.get("sd_model_checkpoint") or service.checkpoint
    given = {key: value for key, value in body.items() if key in MAPPED and value is not None and A1111_DEFAULTS.get(key, object()) != value}
    masked = from_picture and bool(given.get("mask"))
    command = InpaintRequest.command if masked else GenerateRequest.command
    base, upsampler = _models(service, checkpoint, ModelKind.BASE_INPAINT if masked else ModelKind.BASE)
    options: dict[str, Any] = {"model": base}
    if upsampler is not None:
        options["upsample-model"] = upsampler
    options["prompt"] = str(given.get("prompt", ""))
    if given.get("negative_prompt"):
        options["negative"] = given["negative_prompt"]
    if "seed" in given and given["seed"] != -1:
        options["seed"] = given["seed"]
    if "steps" in given:
        options["steps"] = str(given["steps"])
    if "cfg_scale" in given:
        options["scale"] = given["cfg_scale"]
    sampler = _sampler(body)
    if sampler is not None:
        options["sampler"] = sampler
    if "eta" in given and sampler == SamplerName.DDIM:
        options["eta"] = given["eta"]
    options["num"] = _count(body.get("batch_size", 1), "batch_size") * _count(body.get("n_iter", 1), "n_iter")
    _size(service, given, base, upsampler, options)
    pictures: dict[str, Any] = {}
    if from_picture:
        images = body.get("init_images") or []
        if not isinstance(images, list) or not images:
            raise ClientError("img2img needs init_images: a list holding one base64 picture")
        if len(images) > 1:
            raise ClientError(f"init_images holds {len(images)} pictures; glide takes one")
        fit = RESIZE_MODES.get(body.get("resize_mode", 0))
        if fit is None:
            raise ClientError(f"resize_mode {body.get('resize_mode')!r} is not 0, 1 or 2")
        if masked:
            pictures = {"image": images[0], "mask": given["mask"]}
            if body.get("inpainting_mask_invert"):
                options["invert-mask"] = True
            if "mask_blur" in given:
                options["feather"] = given["mask_blur"]
            if "resize_mode" in given:
                options["fit"] = fit
        else:
            pictures = {"init-image": images[0]}
            options["strength"] = body.get("denoising_strength", A1111_DEFAULTS["denoising_strength"])
            options["init-fit"] = fit
    return command, options, pictures


def _models(service: Service, checkpoint: str | None, kind: ModelKind) -> tuple[str, str | None]:
    """The base model of `kind` (base or base-inpaint) for A1111's checkpoint, or the
    manifest's default, and its upsampler."""
    manifest = service.manifest
    if checkpoint:
        entry = manifest.models.get(checkpoint)
        if entry is None or entry.kind not in CHECKPOINT_KINDS:
            raise ClientError(f"no checkpoint {checkpoint!r}; GET {A1111_API}/sd-models lists them")
        base = checkpoint if entry.kind == kind else companion(manifest, checkpoint, kind) or glide_model(kind)
    else:
        base = default_model(manifest, kind)
    return base, companion(manifest, base, kind.upsampler)


def _sampler(body: dict[str, Any]) -> str | None:
    """glide's sampler for A1111's sampler_name (or the older sampler_index); None at A1111's
    defaults ("Euler a", "Euler"), where the command's own default applies."""
    chosen = [body.get(key) for key in ("sampler_name", "sampler_index") if body.get(key) not in (None, "", A1111_DEFAULTS[key])]
    if not chosen:
        return None
    try:
        return glide_sampler(str(chosen[0]))
    except RequestError as error:
        raise ClientError(str(error)) from None


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClientError(f"{name} must be a positive integer, got {json.dumps(value)}")
    return value


def _size(service: Service, given: dict[str, Any], base: str, upsampler: str | None, options: dict[str, Any]) -> None:
    """width/height other than A1111's default 512x512 and the models' own size ask for that size."""
    width, height = given.get("width"), given.get("height")
    if width is None and height is None:
        return
    own = model_size(service.manifest, base, upsampler)
    width, height = width or own, height or own
    if (width, height) != (own, own):
        options["width"], options["height"] = width, height


def _info(job: Job, options: dict[str, Any]) -> dict[str, Any]:
    from ..files.parameters import build_parameters_text

    settings = [f["settings"] for f in job.files]
    first = settings[0] if settings else {}
    size = first.get("size", 0)
    width, height = (size, size) if isinstance(size, int) else (size or [0, 0])
    return {
        "prompt": options["prompt"], "all_prompts": [s.get("prompt") for s in settings],
        "negative_prompt": options.get("negative", ""), "all_negative_prompts": [s.get("negative_prompt", "") for s in settings],
        "seed": first.get("seed"), "all_seeds": [s.get("seed") for s in settings], "subseed": -1, "all_subseeds": [-1] * len(settings),
        "subseed_strength": 0, "width": width, "height": height, "sampler_name": first.get("sampler"), "cfg_scale": first.get("scale"),
        "steps": first.get("steps"), "batch_size": len(settings), "restore_faces": False, "sd_model_name": first.get("model"),
        "sd_model_hash": (first.get("model_hash") or "")[:10] or None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": first.get("strength"), "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [build_parameters_text(s) for s in settings], "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1, "is_using_inpainting_conditioning": job.command == InpaintRequest.command, "version": f"glidecli {first.get('glidecli_version', '')}".strip(),
        "interrupted": job.state == JobState.CANCELLED, "files": [f["name"] for f in job.files],
    }


@router.get("/progress")
def progress(service: ServiceDep) -> dict[str, Any]:
    running = service.queue.running()
    job = running[0] if running else None
    fraction, eta = 0.0, 0.0
    if job is not None:
        count = max(1, len(job.plan.jobs))
        step = job.step / job.total if job.total else 0.0
        fraction = min(0.99, (job.images_done + step) / count)
        elapsed = time.time() - job.created
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    return {
        "progress": round(fraction, 4), "eta_relative": round(eta, 2),
        "state": {"skipped": False, "interrupted": bool(job and job.cancel_requested.is_set()), "stopping_generation": False,
                  "job": job.id if job else "", "job_count": len(running) + service.queue.waiting(),
                  "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)) if job else "0",
                  "job_no": job.images_done if job else 0, "sampling_step": job.step if job else 0,
                  "sampling_steps": job.total if job else 0},
        "current_image": None, "textinfo": job.stage if job else None,
    }


@router.post("/interrupt")
def interrupt(service: ServiceDep) -> dict[str, Any]:
    """Stop the running jobs at their next step; their finished pictures are kept and returned."""
    for job in service.queue.running():
        service.queue.cancel(job, keep_finished=True)
    return {}


@router.post("/skip")
def skip(service: ServiceDep) -> dict[str, Any]:
    return interrupt(service)


@router.get("/sd-models")
def sd_models(service: ServiceDep) -> list[dict[str, Any]]:
    return [{"title": entry.name, "model_name": entry.name, "hash": (entry.sha256 or "")[:10] or None, "sha256": entry.sha256,
             "filename": entry.name, "config": None} for entry in service.manifest.models_of_kind(ModelKind.BASE)]


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    return [{"name": name, "aliases": sorted(k for k, v in A1111_SAMPLERS.items() if v == name and k != name), "options": {}} for name in SAMPLER_NAMES]


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return [{"name": "automatic", "label": "Automatic (the model's own schedule)", "aliases": None, "default_rho": None, "need_inner_model": None}]


@router.get("/options")
def get_options(service: ServiceDep) -> dict[str, Any]:
    model, _ = _models(service, service.checkpoint, ModelKind.BASE)
    return {"sd_model_checkpoint": model, "samples_format": "png", "outdir_samples": str(service.out)}


@router.post("/options")
async def set_options(request: Request, service: ServiceDep) -> dict[str, Any]:
    """Clients switch models through sd_model_checkpoint; other settings mean nothing here."""
    body = await read_json(request, service.config.limits)
    checkpoint = body.get("sd_model_checkpoint")
    if checkpoint is not None:
        _models(service, str(checkpoint), ModelKind.BASE)  # refuses names that are no base model
        service.checkpoint = str(checkpoint)
    return {}


@router.get("/sd-vae")
def sd_vae() -> list[dict[str, Any]]:
    return []


@router.get("/loras")
def loras(service: ServiceDep) -> list[dict[str, Any]]:
    """The manifest's LoRA adapters, as A1111 lists them; a prompt selects one with <lora:NAME:WEIGHT>."""
    return [{"name": entry.name, "alias": entry.name, "path": str(entry.source), "metadata": {}} for entry in service.manifest.models_of_kind(ModelKind.LORA)]

