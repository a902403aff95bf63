"""OpenAI's images API, /v1/images, for the clients that speak it (Open WebUI's "openai"
engine with base URL http://HOST:PORT/v1, openai-python's `client.images`):

- generations (JSON: prompt, n, size, response_format b64_json|url, model) -> generate, or
  unclip when `model` names an unCLIP prior;
- edits (multipart: image, mask, prompt, n, size) -> inpaint. OpenAI's mask convention:
  its transparent pixels are repainted (without a mask, the image's own);
- variations (multipart: image, n, size) -> vary.

`model` names a manifest entry; OpenAI's own model names (dall-e-2, dall-e-3,
gpt-image-1...) mean the server's default. quality, style, user, moderation and
background=auto mean nothing here; output_format other than png is refused.
"""

from __future__ import annotations

import base64
import io
import re
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ..nets.kinds import ModelKind
from ..request.commands import GenerateRequest, InpaintRequest, UnclipRequest, VaryRequest
from .body import read_json, read_multipart
from .dependencies import ServiceDep
from .jobs import JobState
from .models import companion, default_model, model_size
from .service import NATIVE_API, ClientError, Service, image_url
from .uploads import UploadLimits

router = APIRouter(prefix="/v1/images", tags=["openai"])

OPENAI_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
PEER_DEFAULT_SIZES = ("1024x1024", "auto")  # what OpenAI's clients send when nobody chose a size
IGNORED = {"quality", "style", "user", "moderation", "partial_images", "stream", "output_compression", "input_fidelity"}


@router.post("/generations")
async def generations(request: Request, service: ServiceDep) -> dict[str, Any]:
    body = await read_json(request, service.config.limits)
    return await run_in_threadpool(_generate, service, body, str(request.base_url))


@router.post("/edits")
async def edits(request: Request, service: ServiceDep) -> dict[str, Any]:
    fields, files = await _form(request, service)
    return await run_in_threadpool(_edit, service, fields, files, str(request.base_url))


@router.post("/variations")
async def variations(request: Request, service: ServiceDep) -> dict[str, Any]:
    fields, files = await _form(request, service)
    return await run_in_threadpool(_vary, service, fields, files, str(request.base_url))


async def _form(request: Request, service: Service) -> tuple[dict[str, Any], dict[str, bytes]]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ClientError("send multipart/form-data with the picture as a file, as OpenAI's API takes it")
    fields, files = await read_multipart(request, service.config.limits)
    if "image[]" in files and "image" not in files:
        files["image"] = files.pop("image[]")
    return fields, files


def _generate(service: Service, body: dict[str, Any], base_url: str) -> dict[str, Any]:
    _check_common(body)
    model = _model(service, body.get("model"), (ModelKind.BASE, ModelKind.UNCLIP_PRIOR))
    prompt = _prompt(body)
    if model is not None and service.manifest.models[model].kind == ModelKind.UNCLIP_PRIOR:
        options = {"prompt": prompt, "prior-model": model, "num": _n(body)}
        return _respond(service, UnclipRequest.command, options, {}, body, base_url)
    base = model or default_model(service.manifest, ModelKind.BASE)
    upsampler = companion(service.manifest, base, ModelKind.UPSAMPLE)
    options = {"prompt": prompt, "model": base, "num": _n(body)}
    if upsampler:
        options["upsample-model"] = upsampler
    _size(service, body.get("size"), base, upsampler, options)
    return _respond(service, GenerateRequest.command, options, {}, body, base_url)


def _edit(service: Service, fields: dict[str, Any], files: dict[str, bytes], base_url: str) -> dict[str, Any]:
    _check_common(fields)
    if "image" not in files:
        raise ClientError("edits needs the picture as the multipart file 'image'")
    model = _model(service, fields.get("model"), (ModelKind.BASE_INPAINT, ModelKind.BASE))
    if model is not None and service.manifest.models[model].kind == ModelKind.BASE:
        model = companion(service.manifest, model, ModelKind.BASE_INPAINT)
    base = model or default_model(service.manifest, ModelKind.BASE_INPAINT)
    upsampler = companion(service.manifest, base, ModelKind.UPSAMPLE_INPAINT)
    options = {"prompt": _prompt(fields), "model": base, "num": _n(fields)}
    if upsampler:
        options["upsample-model"] = upsampler
    _size(service, fields.get("size"), base, upsampler, options)
    pictures: dict[str, Any] = {"image": files["image"]}
    if files.get("mask"):
        pictures["mask"] = repaint_mask_from_alpha(files["mask"], service.config.limits)
    return _respond(service, InpaintRequest.command, options, pictures, fields, base_url)


def _vary(service: Service, fields: dict[str, Any], files: dict[str, bytes], base_url: str) -> dict[str, Any]:
    _check_common(fields)
    if "image" not in files:
        raise ClientError("variations needs the picture as the multipart file 'image'")
    model = _model(service, fields.get("model"), (ModelKind.UNCLIP_DECODER,))
    options: dict[str, Any] = {"num": _n(fields)}
    if model is not None:
        options["decoder-model"] = model
    return _respond(service, VaryRequest.command, options, {"image": files["image"]}, fields, base_url)


def _respond(service: Service, command: str, options: dict[str, Any], pictures: dict[str, Any], body: dict[str, Any], base_url: str) -> dict[str, Any]:
    response_format = body.get("response_format") or "b64_json"
    if response_format not in ("b64_json", "url"):
        raise ClientError(f"response_format {response_format!r} is not b64_json or url")
    job = service.submit(command, options, pictures)
    service.queue.wait(job)
    if job.state != JobState.DONE:
        raise ClientError(job.error or f"the job was {job.state}", 500 if job.state == JobState.FAILED else 409)
    data = []
    for made in job.files:
        if response_format == "url":
            data.append({"url": base_url.rstrip("/") + image_url(made["name"]), "revised_prompt": made["settings"].get("prompt")})
        else:
            encoded = base64.b64encode(service.image_path(made["name"]).read_bytes()).decode()
            data.append({"b64_json": encoded, "revised_prompt": made["settings"].get("prompt")})
    return {"created": int(time.time()), "data": data, "output_format": "png"}


def _check_common(body: dict[str, Any]) -> None:
    output_format = body.get("output_format")
    if output_format not in (None, "png"):
        raise ClientError(f"output_format {output_format!r}: glide writes PNG only")
    if body.get("background") not in (None, "auto", "opaque"):
        raise ClientError(f"background {body.get('background')!r}: glide makes opaque pictures only")
    known = {"prompt", "n", "size", "response_format", "model", "output_format", "background", *IGNORED}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ClientError(f"unknown field {unknown[0]!r}")


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ClientError("prompt is required (text)")
    return prompt


def _n(body: dict[str, Any]) -> int:
    value = body.get("n", 1)
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or count < 1 or count > 10:
        raise ClientError(f"n must be an integer from 1 to 10, got {value!r}")
    return count


def _model(service: Service, name: str | None, kinds: tuple[ModelKind, ...]) -> str | None:
    """A manifest entry of one of `kinds`, or None for OpenAI's names and no name (the default)."""
    if not name or name in OPENAI_MODELS:
        return None
    entry = service.manifest.models.get(name)
    if entry is None or entry.kind not in kinds:
        wanted = " or ".join(kinds)
        raise ClientError(f"model {name!r} is not a {wanted} model of this server (GET {NATIVE_API}/models lists them)")
    return name


def _size(service: Service, size: str | None, base: str, upsampler: str | None, options: dict[str, Any]) -> None:
    if not size or size in PEER_DEFAULT_SIZES:
        return
    match = re.fullmatch(r"(\d+)x(\d+)", str(size))
    if not match:
        raise ClientError(f"size {size!r} is not WIDTHxHEIGHT")
    width, height = int(match.group(1)), int(match.group(2))
    own = model_size(service.manifest, base, upsampler)
    if (width, height) != (own, own):
        options["width"], options["height"] = width, height


def repaint_mask_from_alpha(data: bytes, limits: UploadLimits) -> bytes:
    """OpenAI's mask (transparent = repaint) as glide's (white = repaint), a PNG."""
    from PIL import Image

    from .uploads import UploadError, check_picture

    try:
        check_picture(data, "mask", limits)
    except UploadError as error:
        raise ClientError(str(error), error.status) from None
    with Image.open(io.BytesIO(data)) as mask:
        alpha = mask.getchannel("A") if "A" in mask.getbands() else None
    if alpha is None:
        raise ClientError("the mask must have transparency (OpenAI's convention: transparent pixels are repainted)")
    white_where_clear = alpha.point(lambda a: 255 if a == 0 else 0)
    buffer = io.BytesIO()
    white_where_clear.save(buffer, format="PNG")
    return buffer.getvalue()
