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

from ..diffusion.vocabulary import SamplerName
from ..files.vocabulary import FitMode
from ..nets.kinds import ModelKind
from ..render.defaults import UPSAMPLE_FACTOR, glide_model
from ..request.a1111 import glide_sampler
from ..request.commands import GenerateRequest, InpaintRequest
from ..request.options import step_count
from ..request.values import RequestError
from .a1111_models import GenerationFields, ImagesResponse, Img2ImgRequest, Txt2ImgRequest
from .dependencies import ServiceDep
from .jobs import Job, JobState
from .models import companion, default_model, model_size, upscaler_rows
from .service import ClientError, Service
from .waiting import wait_for

A1111_API = "/sdapi/v1"
router = APIRouter(prefix=A1111_API, tags=["automatic1111"])

# Fields that hold A1111's defaults in every client, and mean the picture A1111 makes by
# default: ignored at these values (glide's own defaults apply).
A1111_DEFAULTS = {"steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512, "sampler_name": "Euler a", "sampler_index": "Euler",
                  "mask_blur": 4, "denoising_strength": 0.75, "resize_mode": 0}
# Fields that would change the picture if honoured, with the values that change nothing.
REFUSED_UNLESS = {
    "restore_faces": (None, False), "tiling": (None, False), "styles": (None, []),
    "subseed_strength": (None, 0, 0.0), "script_name": (None, ""), "alwayson_scripts": (None, {}), "script_args": (None, []),
    "refiner_checkpoint": (None, ""), "firstpass_image": (None, ""), "initial_noise_multiplier": (None, 1, 1.0),
    "latent_mask": (None, ""), "seed_resize_from_h": (None, -1, 0), "seed_resize_from_w": (None, -1, 0),
}
# Fields that mean nothing here (saving is always on; no extra networks; no k-diffusion knobs).
IGNORED = {
    "do_not_save_samples", "do_not_save_grid", "save_images", "override_settings_restore_afterwards", "disable_extra_networks",
    "comments", "force_task_id", "infotext", "scheduler", "s_min_uncond", "s_churn", "s_tmax", "s_tmin", "s_noise", "subseed",
    "token_merging_ratio", "token_merging_ratio_hr", "clip_skip", "include_init_images", "inpainting_fill", "mask_round",
    "mask_blur_x", "mask_blur_y", "inpaint_full_res_padding", "refiner_switch_at", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler",
    "hr_prompt", "hr_negative_prompt", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
    "firstphase_width", "firstphase_height", "inpaint_full_res", "send_images", "sampler_index", "override_settings",
    "image_cfg_scale",  # instruct-pix2pix's image guidance: glide has no such model
}
MAPPED = {"prompt", "negative_prompt", "seed", "steps", "cfg_scale", "width", "height", "batch_size", "n_iter", "sampler_name",
          "eta", "init_images", "denoising_strength", "mask", "inpainting_mask_invert", "mask_blur", "resize_mode", "enable_hr"}
# Stable Diffusion's native squares (1.x, 2.x, XL): what A1111's clients send when nobody chose a
# size for this model. They mean the model's own size; any other size asks for that size.
CLIENT_SQUARES = (512, 768, 1024)
RESIZE_MODES = {0: FitMode.STRETCH, 1: FitMode.CROP, 2: FitMode.PAD}  # A1111: just resize, crop and resize, resize and fill
# hr_upscaler values that mean "the model's own upsampler": none chosen, A1111's latent ones.
HIRES_DEFAULT_UPSCALERS = ("None", "none", "")
LATENT = "Latent"
CHECKPOINT_KINDS = (ModelKind.BASE, ModelKind.BASE_INPAINT)  # the models A1111's clients pick as checkpoints


@router.post("/txt2img")
async def txt2img(body: Txt2ImgRequest, request: Request, service: ServiceDep) -> ImagesResponse:
    return await _render(service, request, body, False)


@router.post("/img2img")
async def img2img(body: Img2ImgRequest, request: Request, service: ServiceDep) -> ImagesResponse:
    return await _render(service, request, body, True)


async def _render(service: Service, request: Request, typed: GenerationFields, from_picture: bool) -> ImagesResponse:
    body = typed.model_dump(exclude_unset=True)
    command, options, pictures = translate(service, body, from_picture)
    unknown = sorted(set(body) - MAPPED - IGNORED - set(REFUSED_UNLESS))
    job = await run_in_threadpool(service.submit, command, options, pictures)
    await wait_for(service, job, request)
    if job.state == JobState.FAILED:
        raise ClientError(job.error or "the render failed", 500)
    if job.state == JobState.CANCELLED and not job.files:
        raise ClientError("interrupted before any picture was finished", 409)
    images = [base64.b64encode(service.image_path(f["name"]).read_bytes()).decode() for f in job.files]
    return ImagesResponse(
        images=images if typed.send_images else [], parameters=body,
        info=json.dumps({**_info(job, options), "ignored_fields": unknown}, ensure_ascii=False),
    )


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
    base, upsampler = current_models(service, checkpoint, ModelKind.BASE_INPAINT if masked else ModelKind.BASE)
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
    if body.get("enable_hr"):
        _hires(service, body, upsampler, options)
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


def current_models(service: Service, checkpoint: str | None, kind: ModelKind) -> tuple[str, str | None]:
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


def _hires(service: Service, body: dict[str, Any], upsampler: str | None, options: dict[str, Any]) -> None:
    """A1111's hires fix is glide's upsampler stage (which runs with or without it): at the
    upsampler's own scale, by the upsampler the client names or the model's own."""
    named = body.get("hr_upscaler")
    kinds = {name: kind for name, kind, _ in upscaler_rows(service.manifest)}
    if named and named in kinds and kinds[named] == ModelKind.UPSAMPLE:
        upsampler = options["upsample-model"] = named
    elif named and named not in HIRES_DEFAULT_UPSCALERS and not str(named).startswith(LATENT):
        raise ClientError(f"hr_upscaler {named!r} is not an upsampler of this server (GET {A1111_API}/upscalers lists them)")
    if upsampler is None:
        raise ClientError(f"enable_hr: the model {options['model']} has no upsampler in this server's manifest")
    factor = UPSAMPLE_FACTOR
    scale = body.get("hr_scale", factor)
    side = int(getattr(service.manifest.models[upsampler].arch, "image_size", 0))
    resize = [body.get(key) or 0 for key in ("hr_resize_x", "hr_resize_y")]
    if any(resize) and set(resize) - {0, side}:
        raise ClientError(f"hr_resize_x/hr_resize_y {resize[0]}x{resize[1]}: the upsampler {upsampler} makes {side}x{side} pictures")
    if not any(resize) and scale != factor:
        raise ClientError(f"hr_scale {scale:g}: the upsampler {upsampler} scales by {factor} (hr_scale {factor}; it runs without enable_hr too)")
    steps = body.get("hr_second_pass_steps") or 0
    if steps:
        options["upsample-steps"] = str(steps)


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
    """width/height ask for that size, unless they are one of the squares A1111's clients send
    by default (CLIENT_SQUARES) or the models' own size."""
    width, height = given.get("width"), given.get("height")
    if width is None and height is None:
        return
    own = model_size(service.manifest, base, upsampler)
    width, height = width or own, height or own
    if (width, height) != (own, own) and not (width == height and width in CLIENT_SQUARES):
        options["width"], options["height"] = width, height


def _steps(spec: Any) -> int | None:
    """A1111's steps are a number: a spec's count ('20' 20, 'fast27' 27)."""
    return step_count(spec) if isinstance(spec, str) else spec if isinstance(spec, int) else None


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
        "steps": _steps(first.get("steps")), "batch_size": len(settings), "restore_faces": False, "sd_model_name": first.get("model"),
        "sd_model_hash": (first.get("model_hash") or "")[:10] or None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": first.get("strength"), "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [build_parameters_text(s) for s in settings], "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1, "is_using_inpainting_conditioning": job.command == InpaintRequest.command, "version": f"glidecli {first.get('glidecli_version', '')}".strip(),
        "interrupted": job.state == JobState.CANCELLED, "files": [f["name"] for f in job.files],
    }


