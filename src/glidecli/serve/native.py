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
from .body import read_json, read_multipart
from .dependencies import ServiceDep
from .native_models import (
    CommandDescription,
    Gallery,
    GalleryPicture,
    Health,
    JobStatus,
    ModelRow,
    Models,
    RoleRow,
    SamplerRow,
    Samplers,
    job_options,
    job_status,
    parse_job_request,
)
from .service import NATIVE_API, ClientError, commands_description, picture_media_type

router = APIRouter(prefix=NATIVE_API, tags=["glide"])

JOB_BODY = {"$ref": "#/components/schemas/JobRequest"}
JOB_CONTENT = {"application/json": {"schema": JOB_BODY}, "multipart/form-data": {"schema": JOB_BODY}}


@router.post("/jobs", status_code=202, response_model=JobStatus, openapi_extra={"requestBody": {"required": True, "content": JOB_CONTENT}})
async def create_job(request: Request, service: ServiceDep) -> JSONResponse:
    """Queue a rendering command: `command` names it, the other fields are its options by the
    CLI's names (JSON, or multipart with the pictures as files)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        fields, files = await read_multipart(request, service.config.limits)
        body: dict[str, Any] = dict(fields)
    else:
        body, files = await read_json(request, service.config.limits), {}
    typed = parse_job_request(body)
    job = await run_in_threadpool(service.submit, typed.command, job_options(typed), files)
    status = job_status(job, service.queue.position(job))
    return JSONResponse(status.model_dump(mode="json"), status_code=202, headers={"Location": f"{NATIVE_API}/jobs/{job.id}"})


@router.get("/jobs/{job_id}")
def get_job(job_id: str, service: ServiceDep) -> JobStatus:
    job = service.job(job_id)
    return job_status(job, service.queue.position(job))


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "The job's events as server-sent events."}})
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
def cancel_job(job_id: str, service: ServiceDep) -> JobStatus:
    job = service.job(job_id)
    if not service.queue.cancel(job):
        raise ClientError(f"job {job_id} has finished already ({job.state})", 409)
    return job_status(job, service.queue.position(job))


@router.get("/images/{name:path}", response_class=FileResponse, responses={200: {"content": {"image/png": {}}}})
def get_image(name: str, service: ServiceDep) -> FileResponse:
    path = service.image_path(name)
    return FileResponse(path, media_type=picture_media_type(path))


@router.get("/gallery")
def gallery(service: ServiceDep, limit: int = 60, offset: int = 0) -> Gallery:
    pictures = service.gallery(max(1, min(limit, 500)), max(0, offset))
    return Gallery(images=[GalleryPicture(**picture) for picture in pictures])


@router.get("/commands")
def commands(service: ServiceDep) -> dict[str, CommandDescription]:
    """Each command's options; a model option's default is the model of its role in this server's manifest."""
    return {command: CommandDescription(**described) for command, described in commands_description(service.manifest.roles()).items()}


@router.get("/models")
def models(service: ServiceDep) -> Models:
    """The manifest's entries, and the model that plays each role when a request names none."""
    roles = {role: RoleRow(**row) for role, row in service.manifest.roles().describe().items()}
    return Models(models=[ModelRow(**row) for row in service.models()], roles=roles)


@router.get("/samplers")
def samplers() -> Samplers:
    return Samplers(samplers=[SamplerRow(name=name, description=text) for name, text in SAMPLER_NOTES.items()])


@router.get("/health")
def health(service: ServiceDep) -> Health:
    return Health(**service.health())
