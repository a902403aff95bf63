"""A1111's picture tools (/sdapi/v1): extras (upscaling by glide's upsampler), png-info (a
picture's recorded settings) and interrogate (a caption by CLIP)."""

from __future__ import annotations

import base64
import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ..files.parameters import build_parameters_text, parameters_by_label
from ..nets.kinds import ModelKind
from ..render.defaults import MAX_CANVAS
from ..request.captions import caption_candidates
from ..request.commands import UpsampleRequest
from .a1111 import A1111_API
from .a1111_models import (
    ExtraBatchImagesRequest,
    ExtraBatchImagesResponse,
    ExtraSingleImageRequest,
    ExtraSingleImageResponse,
    ExtrasOptions,
    InterrogateRequest,
    InterrogateResponse,
    PngInfoRequest,
    PngInfoResponse,
)
from .dependencies import ServiceDep
from .jobs import JobState
from .models import default_model, upscaler_rows
from .service import ClientError, Service
from .uploads import UploadError, decode_base64, new_uploads, save_picture
from .waiting import wait_for

router = APIRouter(prefix=A1111_API, tags=["automatic1111"])
INTERROGATE_MODELS = ("clip",)
# A1111's upscalers are deterministic; glide's upsampler samples, from this seed: the same
# picture gives the same result.
EXTRAS_SEED = 0
MAX_RESIZE = 8  # upscaling_resize A1111's page allows


@router.post("/extra-single-image")
async def extra_single_image(body: ExtraSingleImageRequest, request: Request, service: ServiceDep) -> ExtraSingleImageResponse:
    images = await _upscale(service, request, body, [body.image])
    return ExtraSingleImageResponse(html_info="", image=images[0])


@router.post("/extra-batch-images")
async def extra_batch_images(body: ExtraBatchImagesRequest, request: Request, service: ServiceDep) -> ExtraBatchImagesResponse:
    if not body.imageList:
        raise ClientError("imageList holds no picture")
    if len(body.imageList) > service.config.max_images:
        raise ClientError(f"imageList holds {len(body.imageList)} pictures; this server takes at most {service.config.max_images} (--max-images)")
    return ExtraBatchImagesResponse(html_info="", images=await _upscale(service, request, body, [item.data for item in body.imageList]))


async def _upscale(service: Service, request: Request, body: ExtrasOptions, pictures: list[str]) -> list[str]:
    """Each picture through the upsampler `upscaler_1` names, one job each, base64 PNGs back."""
    model = _upsampler(service, body)
    made = []
    for picture in pictures:
        data = _decoded(service, picture, "image")
        size = _target_size(body, data)
        prompt = body.prompt if body.prompt is not None else str(_record(data)[0].get("prompt") or "")
        job = await run_in_threadpool(service.submit, UpsampleRequest.command, {"model": model, "prompt": prompt, "seed": EXTRAS_SEED},
                                     {"image": data})
        await wait_for(service, job, request)
        if job.state != JobState.DONE:
            raise ClientError(job.error or f"the job was {job.state}", 500 if job.state == JobState.FAILED else 409)
        made.append(base64.b64encode(resized_png(service.image_path(job.files[0]["name"]).read_bytes(), size)).decode())
    return made


def _target_size(body: ExtrasOptions, data: bytes) -> tuple[int, int]:
    """The size A1111 would answer: the picture's times upscaling_resize, or (resize_mode 1)
    upscaling_resize_w x upscaling_resize_h."""
    from PIL import Image

    if body.resize_mode == 1:
        return body.upscaling_resize_w, body.upscaling_resize_h
    with Image.open(io.BytesIO(data)) as picture:
        width, height = picture.size
    return max(1, round(width * body.upscaling_resize)), max(1, round(height * body.upscaling_resize))


def resized_png(data: bytes, size: tuple[int, int]) -> bytes:
    """A PNG resized to `size` (Lanczos) keeping its text chunks (the settings); as it is when
    it has that size already."""
    from PIL import Image, PngImagePlugin

    with Image.open(io.BytesIO(data)) as picture:
        if picture.size == size:
            return data
        info = PngImagePlugin.PngInfo()
        for key, text in dict(getattr(picture, "text", {})).items():
            info.add_text(key, text)
        buffer = io.BytesIO()
        picture.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _upsampler(service: Service, body: ExtrasOptions) -> str:
    kinds = {name: kind for name, kind, _ in upscaler_rows(service.manifest)}
    name = body.upscaler_1
    if name in ("None", "", None):
        name = default_model(service.manifest, ModelKind.UPSAMPLE)
    elif name not in kinds:
        raise ClientError(f"upscaler_1 {name!r} is not an upsampler of this server (GET {A1111_API}/upscalers lists them)")
    elif kinds[name] != ModelKind.UPSAMPLE:
        raise ClientError(f"upscaler_1 {name!r} is unCLIP's super-resolution, which only glide unclip runs; name a GLIDE upsampler")
    if body.resize_mode == 0 and not 0 < body.upscaling_resize <= MAX_RESIZE:
        raise ClientError(f"upscaling_resize {body.upscaling_resize:g} is not from 0 to {MAX_RESIZE}")
    if body.resize_mode == 1 and not (0 < body.upscaling_resize_w <= MAX_CANVAS and 0 < body.upscaling_resize_h <= MAX_CANVAS):
        raise ClientError(f"upscaling_resize_w/h {body.upscaling_resize_w}x{body.upscaling_resize_h} is not from 1 to {MAX_CANVAS}")
    if body.upscaler_2 not in ("None", "", None) and body.extras_upscaler_2_visibility:
        raise ClientError("upscaler_2: glide runs one upsampler")
    return name


@router.post("/png-info")
def png_info(body: PngInfoRequest, service: ServiceDep) -> PngInfoResponse:
    """A picture's settings: glide's record, or another tool's A1111 parameters text."""
    record, parameters = _record(_decoded(service, body.image, "image"))
    text = parameters or (build_parameters_text(record) if record else "")
    return PngInfoResponse(info=text, items=record or ({"parameters": parameters} if parameters else {}),
                           parameters=parameters_by_label(text) if text else {})


@router.post("/interrogate")
async def interrogate(body: InterrogateRequest, service: ServiceDep) -> InterrogateResponse:
    """The caption CLIP ranks first among request.captions' candidates."""
    if body.model not in INTERROGATE_MODELS:
        raise ClientError(f"interrogate model {body.model!r}: glide has only {', '.join(INTERROGATE_MODELS)} (it ranks captions with the manifest's CLIP)")
    clip = default_model(service.manifest, ModelKind.OPENCLIP)  # the manifest's clip role, else its first CLIP
    if clip not in service.manifest.models:
        raise ClientError("interrogate needs a CLIP (an openclip entry, as an unCLIP set has) in the server's manifest")
    data = _decoded(service, body.image, "image")
    ranked = await run_in_threadpool(_rank, service, clip, data)
    return InterrogateResponse(caption=ranked[0][0])


def _rank(service: Service, clip: str, data: bytes) -> list[tuple[str, float]]:
    from ..render.interrogate import rank_captions

    uploads = new_uploads(service.uploads_root)
    try:
        path = save_picture(uploads, "image", data, service.config.limits)
        with service.side_session() as session:
            return rank_captions(session, clip, path, caption_candidates())
    except UploadError as error:
        raise ClientError(str(error), error.status) from None
    finally:
        uploads.remove()


def _decoded(service: Service, text: str, name: str) -> bytes:
    if not text:
        raise ClientError(f"{name} is required: a base64 picture")
    try:
        return decode_base64(text, name, service.config.limits)
    except UploadError as error:
        raise ClientError(str(error), error.status) from None


def _record(data: bytes) -> tuple[dict[str, Any], str | None]:
    """(glide's record or {}, A1111's parameters text or None) of a picture's bytes (PNG, JPEG, WebP)."""
    from ..files.metadata import PictureTexts, record_from_texts
    from ..files.pictures import READABLE
    from ..files.pngfile import ImageError, read_picture_texts

    try:
        texts = read_picture_texts(data, READABLE)
    except ImageError as error:
        raise ClientError(str(error)) from None
    record = record_from_texts(PictureTexts(record=texts.record))  # glide's record alone: {} without one
    return record, texts.parameters
