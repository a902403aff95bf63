"""What OpenAI's routes share below them: which manifest model a client's `model` means, its
`size`, the pictures as OpenAI's data items, server-sent events for `stream: true`, and the
model list (/v1/models)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter

from ..nets.kinds import ModelKind
from .dependencies import ServiceDep
from .jobs import Job, JobEvent, JobState
from .models import model_size
from .openai_models import ImageData, ImageOptions, ModelList, ModelObject
from .service import NATIVE_API, ClientError, Service, image_url

models_router = APIRouter(prefix="/v1", tags=["openai"])

OPENAI_MODEL_PREFIXES = ("dall-e", "gpt-image", "chatgpt-image")  # OpenAI's own models: the server's default here
# What OpenAI's clients send when nobody chose a size for this model (Open WebUI: 512x512;
# gpt-image: 1024x1024 or auto): the model's own size.
PEER_DEFAULT_SIZES = ("512x512", "1024x1024", "auto")
# The entries a client may name as `model` (generations, edits, variations).
RENDERABLE_KINDS = (ModelKind.BASE, ModelKind.BASE_INPAINT, ModelKind.UNCLIP_PRIOR, ModelKind.UNCLIP_DECODER)


def model_options(service: Service, name: str | None, kinds: tuple[ModelKind, ...]) -> str | None:
    """A manifest entry of one of `kinds`, or None for OpenAI's own names and no name (the default)."""
    if not name or (name not in service.manifest.models and name.startswith(OPENAI_MODEL_PREFIXES)):
        return None
    entry = service.manifest.models.get(name)
    if entry is None or entry.kind not in kinds:
        wanted = " or ".join(kinds)
        raise ClientError(f"model {name!r} is not a {wanted} model of this server (GET /v1/models lists them)")
    return name


def openai_size(service: Service, size: str | None, base: str, upsampler: str | None) -> dict[str, int]:
    """width and height options for OpenAI's `size`; none for auto or the models' own size."""
    if not size or size in PEER_DEFAULT_SIZES:
        return {}
    match = re.fullmatch(r"(\d+)x(\d+)", str(size))
    if not match:
        raise ClientError(f"size {size!r} is not WIDTHxHEIGHT or auto")
    width, height = int(match.group(1)), int(match.group(2))
    own = model_size(service.manifest, base, upsampler)
    return {} if (width, height) == (own, own) else {"width": width, "height": height}


def image_data(service: Service, made: dict[str, Any], response_format: str, base_url: str) -> ImageData:
    prompt = made["settings"].get("prompt")
    if response_format == "url":
        return ImageData(url=base_url.rstrip("/") + image_url(made["name"]), revised_prompt=prompt)
    return ImageData(b64_json=base64.b64encode(service.image_path(made["name"]).read_bytes()).decode(), revised_prompt=prompt)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n"


def stream_events(service: Service, job: Job, body: ImageOptions, kind: str) -> Iterator[str]:
    """`kind`.partial_image for each preview, `kind`.completed for each picture, as OpenAI
    streams them; an error event if the job fails. A client that leaves cancels the job."""
    size = None
    common = {"background": "opaque", "quality": "auto"}
    try:
        for event in service.queue.events(job):
            if event is None:
                yield ": keep-alive\n\n"
            elif event["event"] == JobEvent.PREVIEW:
                yield _sse(f"{kind}.partial_image", {**common, "b64_json": event["b64_json"], "created_at": int(time.time()), "output_format": "png",
                                                    "partial_image_index": event["preview_index"], "size": size or "auto"})
            elif event["event"] == JobEvent.IMAGE:
                made = event["file"]
                side = made["settings"].get("size")
                size = f"{side}x{side}" if isinstance(side, int) else "auto"
                encoded = base64.b64encode(service.image_path(made["name"]).read_bytes()).decode()
                usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}
                yield _sse(f"{kind}.completed", {**common, "b64_json": encoded, "created_at": int(time.time()),
                                                 "output_format": body.output_format or "png", "size": size, "usage": usage})
            elif event["event"] in (JobState.FAILED, JobState.CANCELLED):
                yield _sse("error", {"error": {"message": job.error or f"the job was {job.state}", "type": "server_error"}})
    finally:
        if not job.finished:  # the client went away mid-stream
            service.queue.cancel(job)


@models_router.get("/models")
def list_models(service: ServiceDep) -> ModelList:
    """The entries a client may name as `model`, in OpenAI's list shape."""
    return ModelList(data=[_model_object(service, entry.name) for kind in RENDERABLE_KINDS for entry in service.manifest.models_of_kind(kind)])


@models_router.get("/models/{model_id}")
def get_model(model_id: str, service: ServiceDep) -> ModelObject:
    entry = service.manifest.models.get(model_id)
    if entry is None or entry.kind not in RENDERABLE_KINDS:
        raise ClientError(f"no model {model_id!r} (GET /v1/models lists them; {NATIVE_API}/models every entry)", 404)
    return _model_object(service, model_id)


def _model_object(service: Service, name: str) -> ModelObject:
    from ..files.fetch import cached_path

    entry = service.manifest.models[name]
    path = cached_path(entry)
    return ModelObject(id=name, created=int(path.stat().st_mtime) if path is not None else 0, owned_by=str(entry.kind))
