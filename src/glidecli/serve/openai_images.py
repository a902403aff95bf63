"""OpenAI's images API, /v1/images, and its model list, /v1/models, for the clients that speak
it (openai-python's `client.images`, Open WebUI's "openai" engine, LibreChat's image tools):

- generations (JSON) -> generate, or unclip when `model` names an unCLIP prior;
- edits (multipart: image or image[], mask, prompt) -> inpaint with a mask (OpenAI's
  convention: its transparent pixels are repainted; without a mask, the picture's own
  transparent pixels); a picture without transparency and no mask is redrawn from the prompt
  (generate --init-image, at `strength`, EDIT_STRENGTH unless given);
- variations (multipart: image) -> vary.

`stream: true` answers server-sent events: `partial_images` previews of the first stage's
clean-image estimate, then one `*.completed` event per picture. docs/serving.md has the table.
"""

from __future__ import annotations

import io
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..nets.kinds import ModelKind
from ..request.commands import GenerateRequest, InpaintRequest, UnclipRequest, VaryRequest
from .body import read_multipart
from .dependencies import ServiceDep
from .jobs import Job, JobState
from .models import companion, default_model
from .openai_models import EditFields, GenerationRequest, ImageOptions, ImagesResponse, VariationFields
from .openai_output import image_data, model_options, openai_size, stream_events
from .service import ClientError, Service
from .uploads import UploadError, UploadLimits, check_picture, has_transparency
from .waiting import wait_for

router = APIRouter(prefix="/v1/images", tags=["openai"])

OPENAI_COMPRESSION = 100  # OpenAI's default output_compression (webp at 100: lossless)
EDIT_STRENGTH = 0.75  # how much a maskless edit redraws (A1111's default denoising strength)
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or with stream: true, server-sent events."}}


def _form_body(fields: str) -> dict[str, Any]:
    """A multipart body: `fields`' text fields and the pictures as files."""
    pictures = {"image": {"type": "string", "format": "binary"}, "image[]": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "mask": {"type": "string", "format": "binary"}}
    schema = {"allOf": [{"$ref": f"#/components/schemas/{fields}"}, {"type": "object", "properties": pictures}]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


@router.post("/generations", response_model=ImagesResponse, responses=STREAM_RESPONSES)
async def generations(body: GenerationRequest, request: Request, service: ServiceDep) -> ImagesResponse | StreamingResponse:
    model = model_options(service, body.model, (ModelKind.BASE, ModelKind.UNCLIP_PRIOR))
    if model is not None and service.manifest.models[model].kind == ModelKind.UNCLIP_PRIOR:
        options: dict[str, Any] = {"prompt": body.prompt, "prior-model": model, "num": body.n}
        return await _answer(service, request, UnclipRequest.command, options, {}, body)
    base = model or default_model(service.manifest, ModelKind.BASE)
    upsampler = companion(service.manifest, base, ModelKind.UPSAMPLE)
    options = {"prompt": body.prompt, "model": base, "num": body.n, **({"upsample-model": upsampler} if upsampler else {})}
    options.update(openai_size(service, body.size, base, upsampler))
    return await _answer(service, request, GenerateRequest.command, options, {}, body)


@router.post("/edits", response_model=ImagesResponse, responses=STREAM_RESPONSES, openapi_extra=_form_body("EditFields"))
async def edits(request: Request, service: ServiceDep) -> ImagesResponse | StreamingResponse:
    fields, files = await _form(request, service)
    body = _validated(EditFields, fields)
    images = [key for key in files if key == "image" or key.startswith("image[]")]
    if not images:
        raise ClientError("edits needs the picture as the multipart file 'image' (or 'image[]')")
    if len(images) > 1:
        raise ClientError(f"edits got {len(images)} pictures; glide edits one picture (send one 'image')")
    image = files[images[0]]
    mask = files.get("mask")
    if mask or _transparent(image, service.config.limits):
        return await _answer(service, request, *_inpaint(service, body, image, mask), body)
    return await _answer(service, request, *_redraw(service, body, image), body)


@router.post("/variations", response_model=ImagesResponse, responses=STREAM_RESPONSES, openapi_extra=_form_body("VariationFields"))
async def variations(request: Request, service: ServiceDep) -> ImagesResponse | StreamingResponse:
    fields, files = await _form(request, service)
    body = _validated(VariationFields, fields)
    if "image" not in files:
        raise ClientError("variations needs the picture as the multipart file 'image'")
    model = model_options(service, body.model, (ModelKind.UNCLIP_DECODER,))
    options: dict[str, Any] = {"num": body.n, **({"decoder-model": model} if model else {})}
    return await _answer(service, request, VaryRequest.command, options, {"image": files["image"]}, body)


def _inpaint(service: Service, body: EditFields, image: bytes, mask: bytes | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    model = model_options(service, body.model, (ModelKind.BASE_INPAINT, ModelKind.BASE))
    if model is not None and service.manifest.models[model].kind == ModelKind.BASE:
        model = companion(service.manifest, model, ModelKind.BASE_INPAINT)
    base = model or default_model(service.manifest, ModelKind.BASE_INPAINT)
    upsampler = companion(service.manifest, base, ModelKind.UPSAMPLE_INPAINT)
    options = {"prompt": body.prompt, "model": base, "num": body.n, **({"upsample-model": upsampler} if upsampler else {})}
    options.update(openai_size(service, body.size, base, upsampler))
    pictures: dict[str, Any] = {"image": image}
    if mask:
        pictures["mask"] = repaint_mask_from_alpha(mask, service.config.limits)
    return InpaintRequest.command, options, pictures


def _redraw(service: Service, body: EditFields, image: bytes) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A maskless edit of an opaque picture: img2img from it, following the prompt."""
    model = model_options(service, body.model, (ModelKind.BASE,))
    base = model or default_model(service.manifest, ModelKind.BASE)
    upsampler = companion(service.manifest, base, ModelKind.UPSAMPLE)
    strength = body.strength if body.strength is not None else EDIT_STRENGTH
    options = {"prompt": body.prompt, "model": base, "num": body.n, "strength": strength, **({"upsample-model": upsampler} if upsampler else {})}
    options.update(openai_size(service, body.size, base, upsampler))
    return GenerateRequest.command, options, {"init-image": image}


async def _answer(service: Service, request: Request, command: str, options: dict[str, Any], pictures: dict[str, Any],
                  body: ImageOptions) -> ImagesResponse | StreamingResponse:
    if body.background == "transparent":
        raise ClientError("background 'transparent': glide makes opaque pictures only")
    if body.output_format is not None:  # the files are written in it; their bytes are the answer's
        options = {**options, "format": body.output_format, "quality": OPENAI_COMPRESSION if body.output_compression is None else body.output_compression}
    previews = body.partial_images if body.stream else 0
    job = await run_in_threadpool(service.submit, command, options, pictures, previews)
    if body.stream:
        events = stream_events(service, job, body, "image_edit" if request.url.path.endswith("/edits") else "image_generation")
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await wait_for(service, job, request)
    return _images(service, job, body, str(request.base_url))


def _images(service: Service, job: Job, body: ImageOptions, base_url: str) -> ImagesResponse:
    if job.state != JobState.DONE:
        raise ClientError(job.error or f"the job was {job.state}", 500 if job.state == JobState.FAILED else 409)
    data = [image_data(service, made, body.response_format or "b64_json", base_url) for made in job.files]
    size = job.files[0]["settings"].get("size") if job.files else None
    return ImagesResponse(created=int(time.time()), data=data, output_format=body.output_format or "png",
                          size=f"{size}x{size}" if isinstance(size, int) else None)


async def _form(request: Request, service: Service) -> tuple[dict[str, Any], dict[str, bytes]]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ClientError("send multipart/form-data with the picture as a file, as OpenAI's API takes it")
    return await read_multipart(request, service.config.limits, repeatable=("image[]",))


def _validated(model: type[EditFields] | type[VariationFields], fields: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ClientError(f"unknown field {where!r}") from None
        raise ClientError(f"{where}: {first['msg']}") from None


def _transparent(image: bytes, limits: UploadLimits) -> bool:
    try:
        check_picture(image, "image", limits)
    except UploadError as error:
        raise ClientError(str(error), error.status) from None
    return has_transparency(image)


def repaint_mask_from_alpha(data: bytes, limits: UploadLimits) -> bytes:
    """OpenAI's mask (transparent = repaint) as glide's (white = repaint), a PNG."""
    from PIL import Image

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
