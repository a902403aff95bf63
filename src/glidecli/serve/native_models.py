"""The native API's typed bodies: one pydantic model per rendering command, generated from the
request layer's option declarations (request/options.py, commands.py), so an option declared
there appears at once in the CLI, in this API and in /openapi.json with its type, default,
limits and help. Values are checked by the request layer's own `value_of`: a bad one gets
the CLI's message ("Invalid value for '--scale': -1.0 is not in the range x >= 0").

    request = parse_job_request({"command": "generate", "prompt": "a corgi", "scale": 3})
    service.submit(request.command, job_options(request), pictures)
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, WithJsonSchema, create_model, model_validator

from ..diffusion.vocabulary import SamplerName
from ..nets.kinds import ModelKind
from ..request.building import by_field
from ..request.commands import REQUESTS, RequestType, option_fields
from ..request.json_schema import json_default, value_schema
from ..request.values import Option, RequestError, ValueType, value_of
from .jobs import Job, JobState
from .service import ClientError, image_url

PICTURE_HELP = " (base64 text or a data: URL in JSON; a file in a multipart body)"


class JobRequestBody(BaseModel):
    """What every command's body shares: the command's name. Each option is checked by the
    request layer before pydantic sees it, so both front ends refuse a value in one words."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)
    request_type: ClassVar[RequestType]
    command: str

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        return {"command": data.get("command"), **checked_options(cls.request_type, {k: v for k, v in data.items() if k != "command"})}


def checked_options(request_type: RequestType, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data`'s options by field name, each converted and checked (pictures are left as sent:
    the service decodes and checks them); unknown names and one option under two names refused."""
    options = {name: option for name, option, _ in option_fields(request_type)}
    return {name: raw if options[name].value_type == ValueType.PICTURE else value_of(options[name], raw)
            for name, raw in by_field(request_type, data).items()}


def _field(option: Option, default: Any) -> tuple[Any, Any]:
    """A body's field: any value (the request layer's `value_of` has converted and checked it
    in `_checked`), published with the option's value schema (request/json_schema.py)."""
    schema = value_schema(option)
    if option.optional or default is None:
        schema = {"anyOf": [schema, {"type": "null"}]}
    name = json_name(option)
    extra: dict[str, Any] = {}
    if len(option.keys) > 1:
        extra["x-aliases"] = [key for key in option.keys if key != name]
    help_text = option.help + (PICTURE_HELP if option.value_type == ValueType.PICTURE else "")
    annotation = Annotated[Any, WithJsonSchema(schema)]
    return annotation, Field(json_default(default), alias=name, description=help_text, json_schema_extra=extra or None)


def json_name(option: Option) -> str:
    """The option's name in the schema: its long flag without dashes ('num' of -n/--num)."""
    return option.flag.lstrip("-") if option.flags else option.name


def _required(request_type: RequestType) -> list[str]:
    """The options a body must hold (a picture, a prompt); the request layer refuses their absence."""
    return [json_name(option) for _, option, _ in option_fields(request_type) if option.must_be_given]


def _command_model(command: str, request_type: RequestType) -> type[JobRequestBody]:
    fields: dict[str, Any] = {name: _field(option, default) for name, option, default in option_fields(request_type)}
    fields["command"] = (Literal[command], Field(description="The rendering command."))
    required = _required(request_type)

    def add_required(schema: dict[str, Any]) -> None:
        schema["required"] = ["command", *required]

    title = "".join(part.capitalize() for part in command.split("-")) + "Job"
    config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, title=title, json_schema_extra=add_required)
    model: type[JobRequestBody] = create_model(title, __base__=JobRequestBody, __doc__=(request_type.__doc__ or "").strip(), **fields)
    model.model_config = {**model.model_config, **config}
    model.model_rebuild(force=True)
    model.request_type = request_type
    return model


JOB_MODELS: dict[str, type[JobRequestBody]] = {command: _command_model(command, t) for command, t in REQUESTS.items()}
JobRequest = Annotated[functools.reduce(operator.or_, JOB_MODELS.values()), Field(discriminator="command")]  # type: ignore[valid-type]
JOB_REQUEST: TypeAdapter[JobRequestBody] = TypeAdapter(JobRequest)


def parse_job_request(body: Mapping[str, Any]) -> JobRequestBody:
    """The typed request of a native body, or ClientError with the request layer's one line."""
    try:
        return JOB_REQUEST.validate_python(dict(body))
    except ValidationError as error:
        raise ClientError(validation_message(error)) from None


def validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, RequestError):
        return str(cause)
    if first["type"] == "union_tag_not_found":
        return f"give the command: one of {', '.join(REQUESTS)}"
    if first["type"] == "union_tag_invalid":
        return f"unknown command {first['input'].get('command')!r}; one of {', '.join(REQUESTS)}"
    where = ".".join(str(part) for part in first["loc"][1:])
    return f"{where}: {first['msg']}".strip(": ")


def job_options(request: JobRequestBody) -> dict[str, Any]:
    """The options a client gave (pictures among them), by field name, for Service.submit."""
    return request.model_dump(exclude_unset=True, exclude={"command"})


# --- answers ------------------------------------------------------------------------------------


class JobFile(BaseModel):
    name: str = Field(description="The picture's name under --out.")
    url: str = Field(description="Where GET serves it.")
    seed: int
    index: int = Field(description="The picture's number in its request (seed + index made it).")
    settings: dict[str, Any] = Field(description="What the picture records: the command's settings, as `glide info` shows them.")


class JobSeconds(BaseModel):
    render: float = Field(description="Seconds inside the render (sampling).")
    write: float = Field(description="Seconds encoding and writing pictures.")


class JobStatus(BaseModel):
    """A job as GET /jobs/{id} reports it."""

    id: str
    command: str
    state: JobState
    position: int | None = Field(description="0 for the next job to start; null once started.")
    stage: str | None
    step: int
    total: int
    images: int = Field(description="How many pictures the job makes.")
    images_done: int
    files: list[JobFile]
    warnings: list[str]
    error: str | None
    worker: str | None
    created: float
    started: float | None
    finished: float | None
    seconds: JobSeconds


def job_status(job: Job, position: int | None) -> JobStatus:
    """What GET /jobs/{id} answers for `job` (`position`: its place in the queue)."""
    return JobStatus(
        id=job.id, command=job.command, state=job.state, position=position, stage=job.stage, step=job.step, total=job.total,
        images=len(job.plan.jobs), images_done=job.images_done, files=[JobFile(**f, url=image_url(f["name"])) for f in job.files],
        warnings=list(job.plan.warnings), error=job.error, worker=job.worker, created=job.created, started=job.started_at,
        finished=job.finished_at, seconds=JobSeconds(render=round(job.render_seconds, 4), write=round(job.write_seconds, 4)),
    )


class GalleryPicture(BaseModel):
    name: str
    url: str
    settings: dict[str, Any]


class Gallery(BaseModel):
    images: list[GalleryPicture] = Field(description="The pictures under --out, newest first.")


class OptionDescription(BaseModel):
    name: str
    aliases: list[str]
    field: str = Field(description="The request's field (Python API).")
    type: ValueType
    default: Any
    choices: list[str] | None
    minimum: float | None
    maximum: float | None
    optional: bool
    help: str


class CommandDescription(BaseModel):
    summary: str
    options: list[OptionDescription]


class ModelRow(BaseModel):
    name: str
    kind: ModelKind
    cached: bool = Field(description="Whether its weights are on this machine.")
    image_size: int | None


class RoleRow(BaseModel):
    model: str = Field(description="The entry that plays the role when a request names no model.")
    kind: ModelKind
    source: str = Field(alias="from", description="How it was chosen: the manifest's [defaults], its one entry of the kind, or the packaged name.")
    present: bool = Field(description="Whether the manifest holds it (a packaged name may be missing).")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class Models(BaseModel):
    models: list[ModelRow]
    roles: dict[str, RoleRow] = Field(description="Role (base, upsample, inpaint, clip, unclip-prior...) -> its model.")


class SamplerRow(BaseModel):
    name: SamplerName
    description: str


class Samplers(BaseModel):
    samplers: list[SamplerRow]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    devices: list[str]
    queued: int
    running: int
    max_queue: int
    loaded: dict[str, list[str]] = Field(description="Each worker's loaded models.")
