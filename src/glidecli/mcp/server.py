"""glide's MCP server (the official SDK's MCPServer, formerly FastMCP): one tool per
rendering command (tools.py), plus list_models, picture_info and score, on a serve
Service (its queue, workers and warm sessions).

    server = build_server(service, McpConfig(input_dir=Path("pictures")))
    server.run("stdio")                                   # glide mcp
    routes, lifespan = http_endpoint(server)              # glide serve's /mcp
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from starlette.routing import BaseRoute

from .. import __version__
from ..render.defaults import RANK_MODEL
from ..request import options as o
from ..request.commands import REQUESTS
from ..request.failures import failure_message
from ..serve.service import Service
from ..serve.uploads import UploadError, decode_base64, new_uploads, save_picture
from .pictures import PictureError, picture_argument
from .tools import PICTURES_URI, McpConfig, Renderer, raw_tool, tool_error

if TYPE_CHECKING:
    from ..render.ranking import Ranker
    from ..render.session import Session

MCP_PATH = "/mcp"  # where glide serve answers MCP (streamable HTTP)
INSTRUCTIONS = (
    "glide renders pictures from text with GLIDE and unCLIP diffusion models. generate draws from a prompt; inpaint repaints"
    " the white part of a mask; outpaint grows the canvas; upsample, clip-guide, unclip, vary and blend as the CLI's commands."
    " Pictures go in as a path under the server's --input-dir or as base64; results come back as PNG image content."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def build_server(service: Service, config: McpConfig) -> MCPServer[Any]:
    """The MCP server of `service`: its tools, and the pictures under --out as resources."""
    renderer = Renderer(service, config)
    lookups = Lookups(service, config)
    tools = [renderer.tool(command, request_type) for command, request_type in REQUESTS.items()] + lookups.tools()
    # MCPServer configures the root logger (logging.basicConfig with a handler of its own):
    # the process's logging stays as it was (glide serve's, glide mcp's stderr).
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer[Any] = MCPServer("glide", version=__version__, instructions=INSTRUCTIONS, tools=tools, log_level="WARNING")
    root.handlers[:] = handlers
    root.setLevel(level)

    def read_picture(name: str) -> bytes:
        return service.image_path(name).read_bytes()  # a PNG under --out, nothing else (ClientError)

    server.resource(PICTURES_URI, name="picture", title="A picture glide wrote under --out", mime_type="image/png")(read_picture)
    return server


def http_endpoint(server: MCPServer[Any]) -> tuple[list[BaseRoute], Callable[[], AbstractAsyncContextManager[None]]]:
    """The routes of MCP's streamable HTTP at MCP_PATH, and what the app's lifespan must run
    around them. The SDK's own Host and Origin checks are off: glide serve's Guard
    (serve/security.py) checks every route, /mcp too, with the same rules and --token."""
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return list(app.routes), server.session_manager.run


class Lookups:
    """The tools that render nothing: what models there are, a PNG's recorded settings, CLIP scores."""

    def __init__(self, service: Service, config: McpConfig) -> None:
        self.service = service
        self.config = config
        self._scoring: Session | None = None  # its own fp32 session, as `glide score` has
        self._rankers: dict[str, Ranker] = {}
        self._lock = threading.Lock()

    def tools(self) -> list[Tool]:
        picture = {"type": "string", "description": "A path under the server's --input-dir, or the picture's bytes in base64 (plain, or a data: URL)."}
        return [
            raw_tool(self.list_models, "list_models", "The models of the server's weights manifest (name, kind, whether cached, picture size), and those loaded.",
                     arguments_schema({}), READ_ONLY),
            raw_tool(self.picture_info, "picture_info", "The settings glide recorded in a PNG it made (as `glide info --json`).",
                     arguments_schema({"image": picture}, "image"), READ_ONLY),
            raw_tool(self.score, "score", "The CLIP score of each picture for the prompt (as `glide score`): 100 x the cosine similarity of their embeddings.",
                     arguments_schema({"images": {"type": "array", "items": picture, "minItems": 1}, "prompt": {"type": "string", "description": "The text to score them against."},
                                       "rank_model": {"type": "string", "default": RANK_MODEL, "description": o.RANK_MODEL.help}}, "images", "prompt"), READ_ONLY),
        ]

    async def list_models(self, arguments: dict[str, Any], context: Context[Any, Any]) -> CallToolResult:
        if (refusal := unexpected("list_models", arguments, {})) is not None:
            return refusal
        loaded = {worker: session.loaded_models() for worker, session in self.service.queue.sessions.items()}
        return text_result({"models": self.service.models(), "loaded": loaded})

    async def picture_info(self, arguments: dict[str, Any], context: Context[Any, Any]) -> CallToolResult:
        if (refusal := unexpected("picture_info", arguments, {"image": str}, "image")) is not None:
            return refusal
        return await anyio.to_thread.run_sync(self._picture_info, arguments["image"])

    def _picture_info(self, image: str) -> CallToolResult:
        from ..files.pngfile import ImageError, read_png_metadata

        uploads = new_uploads(self.service.uploads_root)
        try:
            path = save_picture(uploads, "image", self._picture_bytes(image, "image"), self.service.config.limits)
            settings = read_png_metadata(path)
        except (PictureError, UploadError, ImageError) as error:
            return tool_error(str(error))
        finally:
            uploads.remove()
        return text_result(settings) if settings else tool_error("the picture holds no recorded settings")

    async def score(self, arguments: dict[str, Any], context: Context[Any, Any]) -> CallToolResult:
        if (refusal := unexpected("score", arguments, {"images": list, "prompt": str, "rank_model": str}, "images", "prompt")) is not None:
            return refusal
        return await anyio.to_thread.run_sync(self._score, arguments["images"], arguments["prompt"], arguments.get("rank_model", RANK_MODEL))

    def _score(self, images: list[Any], prompt: str, rank_model: str) -> CallToolResult:
        from ..files.images import load_image

        uploads = new_uploads(self.service.uploads_root)
        try:
            paths = [save_picture(uploads, f"image-{i}", self._picture_bytes(image, f"images[{i}]"), self.service.config.limits)
                     for i, image in enumerate(images)]
            pictures = [load_image(path, None) for path in paths]
            with self._lock:
                ranker = self._ranker(rank_model)
                scores = [round(float(ranker.score(picture, [prompt])[0]), 4) for picture in pictures]
        except (PictureError, UploadError) as error:
            return tool_error(str(error))
        except Exception as error:  # noqa: BLE001 - a known failure is one line; the rest are bugs
            message = failure_message(error)
            if message is None:
                raise
            return tool_error(message)
        finally:
            uploads.remove()
        return text_result([{"image": index, "prompt": prompt, "rank_model": rank_model, "score": value} for index, value in enumerate(scores)])

    def _ranker(self, spec: str) -> Ranker:
        from ..render.ranking import load_ranker
        from ..render.session import Session

        if self._scoring is None:
            config = self.service.config
            self._scoring = Session(self.service.manifest, device=config.device, dtype="fp32", offline=config.offline or None)
        if spec not in self._rankers:
            self._rankers[spec] = load_ranker(self._scoring, spec)
        return self._rankers[spec]

    def _picture_bytes(self, value: object, label: str) -> bytes:
        data = picture_argument(value, label, self.config.input_dir, self.service.config.limits)
        return data if isinstance(data, bytes) else decode_base64(data, label, self.service.config.limits)


def arguments_schema(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def unexpected(tool: str, arguments: dict[str, Any], kinds: dict[str, type], *required: str) -> CallToolResult | None:
    """A tool error for an argument the tool does not take, one it needs and lacks, or one of
    another JSON type; None when the arguments will do."""
    for key, value in arguments.items():
        if key not in kinds:
            return tool_error(f"{tool} has no option {key!r}")
        if not isinstance(value, kinds[key]):
            return tool_error(f"Invalid value for '{key}': {value!r} is not {'a list' if kinds[key] is list else 'text'}")
    missing = [key for key in required if key not in arguments]
    return tool_error(f"missing {missing[0]}") if missing else None


def text_result(value: Any) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(value, ensure_ascii=False, default=str))])
