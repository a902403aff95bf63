"""The native API, /glide/v1: any rendering command as a job, by the CLI's option names.

    POST   /jobs                {"command": "generate", "prompt": "a corgi", "scale": 3, "seed": 1}
                                (or multipart: a `command` field, options as fields, pictures as files)
    GET    /jobs/{id}           state, queue position, stage, step, files with their settings
    GET    /jobs/{id}/events    the same as server-sent events, in order
    DELETE /jobs/{id}           cancel (queued or running; leaves no file)
    GET    /images/{name}       a PNG the server wrote under --out
    GET    /gallery, /commands, /models, /samplers, /health
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from ..diffusion.vocabulary import SAMPLER_NOTES
from ..request.commands import REQUESTS
from .body import read_json, read_multipart
from .dependencies import ServiceDep
from .service import NATIVE_API, ClientError, commands_description

router = APIRouter(prefix=NATIVE_API, tags=["glide"])


@router.post("/jobs", status_code=202)
async def create_job(request: Request, service: ServiceDep) -> JSONResponse:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        fields, files = await read_multipart(request, service.config.limits)
        body: dict[str, Any] = dict(fields)
    else:
        body, files = await read_json(request, service.config.limits), {}
    command = body.pop("command", None)
    if not isinstance(command, str):
        raise ClientError(f"give the command: one of {', '.join(REQUESTS)}")
    job = await run_in_threadpool(service.submit, command, body, files)
    return JSONResponse(service.status(job), status_code=202, headers={"Location": f"{NATIVE_API}/jobs/{job.id}"})


@router.get("/jobs/{job_id}")
def get_job(job_id: str, service: ServiceDep) -> dict[str, Any]:
    return service.status(service.job(job_id))


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, service: ServiceDep) -> StreamingResponse:
    job = service.job(job_id)

    def stream() -> Iterator[str]:
        for event in service.queue.events(job):
            if event is None:
                yield ": keep-alive\n\n"
                continue
            yield f"event: {event['event']}\ndata: {json.dumps(event, default=str)}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.delete("/jobs/{job_id}")
def cancel_job(job_id: str, service: ServiceDep) -> dict[str, Any]:
    job = service.job(job_id)
    if not service.queue.cancel(job):
        raise ClientError(f"job {job_id} has finished already ({job.state})", 409)
    return service.status(job)


@router.get("/images/{name:path}")
def get_image(name: str, service: ServiceDep) -> FileResponse:
    return FileResponse(service.image_path(name), media_type="image/png")


@router.get("/gallery")
def gallery(service: ServiceDep, limit: int = 60, offset: int = 0) -> dict[str, Any]:
    return {"images": service.gallery(max(1, min(limit, 500)), max(0, offset))}


@router.get("/commands")
def commands() -> dict[str, Any]:
    return commands_description()


@router.get("/models")
def models(service: ServiceDep) -> dict[str, Any]:
    return {"models": service.models()}


@router.get("/samplers")
def samplers() -> dict[str, Any]:
    return {"samplers": [{"name": name, "description": text} for name, text in SAMPLER_NOTES.items()]}


@router.get("/health")
def health(service: ServiceDep) -> dict[str, Any]:
    return service.health()
