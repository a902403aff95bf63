"""The rendering commands as MCP tools, on the server's Service and JobQueue (serve/): a
call is a job in the same queue as the HTTP APIs' jobs, run by the same warm workers.

A call's arguments go to the request layer as the client sent them (by the request's field
names), so a bad value gets the CLI's one-line message as a tool error. While the job runs,
each sampling step the queue reports becomes a progress notification ("stage step/total");
a cancelled call cancels its job, which stops at its next step and leaves no file. A
finished call returns each picture as image content (PNG, base64) and as a link to the file
written under --out (a glide://outputs/NAME resource the server reads back), then the files'
paths and recorded settings as JSON text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent, ToolAnnotations

from ..request.building import field_names
from ..request.commands import RequestType
from ..serve.jobs import CLOSE_TIMEOUT, Job, JobEvent, JobState
from ..serve.service import ClientError, Service
from .pictures import PictureError, picture_argument
from .schemas import input_schema, picture_fields

POLL_SECONDS = 0.02  # how often a call looks at its job's new events
PICTURES_URI = "glide://outputs/{name}"  # the pictures written under --out, as MCP resources (server.py reads them)


@dataclass(frozen=True)
class McpConfig:
    """What the MCP front end adds to the server's options: where pictures may be read from
    by path (None: nowhere, base64 only). The server's caps (--max-images, --max-steps) apply
    to each call."""

    input_dir: Path | None = None


ToolFn = Callable[[dict[str, Any], "Context[Any, Any]"], Awaitable[CallToolResult]]


class RawArgumentsTool(Tool):
    """A tool whose arguments reach its function as the client sent them, with a schema of
    our own: the function checks them (the request layer, for the rendering commands, against
    the declarations the schema was made from), so that every refusal is the CLI's one line."""

    async def run(self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False) -> Any:
        result: CallToolResult = await self.fn(arguments, context)
        return result


def raw_tool(fn: ToolFn, name: str, description: str, schema: dict[str, Any], annotations: ToolAnnotations, title: str | None = None) -> Tool:
    return RawArgumentsTool(fn=fn, name=name, title=title, description=description, parameters=schema, annotations=annotations,
                            fn_metadata=FuncMetadata(arg_model=ArgModelBase), is_async=True, context_kwarg=None)


def tool_error(message: str) -> CallToolResult:
    """A failed call: the one line the CLI would print after 'error: '."""
    return CallToolResult(content=[TextContent(type="text", text=" ".join(message.split()))], is_error=True)


class Renderer:
    """Runs the rendering tools' calls as the service's jobs."""

    def __init__(self, service: Service, config: McpConfig) -> None:
        self.service = service
        self.config = config

    def tool(self, command: str, request_type: RequestType) -> Tool:
        summary = (request_type.__doc__ or command).strip().removeprefix(f"glide {command}: ")
        description = (f"{summary[:1].upper()}{summary[1:]} Returns the pictures (PNG), links to their files and their recorded settings;"
                       " reports progress at each sampling step.")
        annotations = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
        return raw_tool(partial(self.call, command, request_type), command, description, input_schema(request_type), annotations, f"glide {command}")

    async def call(self, command: str, request_type: RequestType, arguments: dict[str, Any], context: Context[Any, Any]) -> CallToolResult:
        queued: list[Job] = []  # holds the job even when a cancel ends the wait for submit

        def submit(options: dict[str, Any], pictures: dict[str, bytes | str]) -> None:
            queued.append(self.service.submit(command, options, pictures, every_step=True))

        try:
            await anyio.to_thread.run_sync(submit, *self._split(request_type, arguments))
            await self._follow(queued[0], context)
        except (ClientError, PictureError) as error:
            return tool_error(str(error))
        except anyio.get_cancelled_exc_class():
            # The client cancelled the call (or left): the job stops at its next step and
            # removes what it wrote; wait for that, so that no file outlives the call.
            for job in queued:
                self.service.queue.cancel(job)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.service.queue.wait, job, CLOSE_TIMEOUT)
            raise
        return self._result(queued[0])

    def _split(self, request_type: RequestType, arguments: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes | str]]:
        """The options, and the pictures (bytes read from --input-dir, or base64 text)."""
        names, pictures_named = field_names(request_type), picture_fields(request_type)
        options: dict[str, Any] = {}
        pictures: dict[str, bytes | str] = {}
        for key, value in arguments.items():
            name = names.get(key)
            if name in pictures_named and value is not None:
                pictures[key] = picture_argument(value, key.replace("_", "-"), self.config.input_dir, self.service.config.limits)
            else:
                options[key] = value
        return options, pictures

    async def _follow(self, job: Job, context: Context[Any, Any]) -> None:
        """Progress notifications from the job's step events until it has finished."""
        progress = StepCount()
        seen = 0
        while True:
            finished = job.finished  # read first: the events read next then hold every step
            fresh = job.events[seen:]
            seen += len(fresh)
            for event in fresh:
                if event["event"] == JobEvent.STEP and event["stage"]:
                    value, message = progress.advance(event["stage"], event["step"], event["total"])
                    await context.report_progress(value, None, message)
            if finished:
                return
            await anyio.sleep(POLL_SECONDS)

    def _result(self, job: Job) -> CallToolResult:
        if job.state == JobState.FAILED:
            return tool_error(job.error or "the render failed")
        if job.state != JobState.DONE:
            return tool_error("the job was cancelled (the server is stopping)")
        content: list[ContentBlock] = []
        files = []
        for written in job.files:
            path = (self.service.out / written["name"]).resolve()
            content.append(ImageContent(type="image", data=base64.b64encode(path.read_bytes()).decode("ascii"), mime_type="image/png"))
            link = PICTURES_URI.format(name=quote(written["name"]))
            content.append(ResourceLink(type="resource_link", uri=link, name=written["name"], mime_type="image/png", size=path.stat().st_size))
            files.append({"name": written["name"], "path": str(path), "seed": written["seed"], "settings": written["settings"]})
        summary = {"command": job.command, "files": files, "warnings": job.plan.warnings}
        content.append(TextContent(type="text", text=json.dumps(summary, ensure_ascii=False, default=str)))
        return CallToolResult(content=content)


class StepCount:
    """Sampling steps as one rising count (MCP's progress must grow): a stage's steps
    count on from those of the stages (and pictures) before it."""

    def __init__(self) -> None:
        self.done = 0
        self.stage: str | None = None
        self.step = 0
        self.total = 0

    def advance(self, stage: str, step: int, total: int) -> tuple[int, str]:
        if stage != self.stage or step <= self.step:  # a new stage, or the same stage for the next picture
            self.done += self.total
        self.stage, self.step, self.total = stage, step, total
        return self.done + step, f"{stage} step {step}/{total}"
