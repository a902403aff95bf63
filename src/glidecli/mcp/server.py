"""glide's MCP server (the official SDK's MCPServer, formerly FastMCP): one tool per
rendering command (tools.py), plus list_models, picture_info and score, on a serve
Service (its queue, workers and warm sessions).

    server = build_server(service, McpConfig(input_dir=Path("pictures")))
    server.run("stdio")                                   # glide mcp
    routes, lifespan = http_endpoint(server)              # glide serve's /mcp
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from starlette.routing import BaseRoute

from .. import __version__
from ..render.defaults import RANK_MODEL
from ..request.commands import REQUESTS
from ..request.failures import failure_message
from ..serve.service import Service
from ..serve.uploads import UploadError, decode_base64, new_uploads, save_picture
from .pictures import PictureError, picture_argument
from .tools import McpConfig, Renderer, tool_error

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
    renderer = Renderer(service, config)
    tools = [renderer.tool(command, request_type) for command, request_type in REQUESTS.items()]
    server: MCPServer[Any] = MCPServer("glide", version=__version__, instructions=INSTRUCTIONS, tools=tools, log_level="WARNING")
    lookups = Lookups(service, config)
    server.add_tool(lookups.list_models, annotations=READ_ONLY, structured_output=False)
    server.add_tool(lookups.picture_info, annotations=READ_ONLY, structured_output=False)
    server.add_tool(lookups.score, annotations=READ_ONLY, structured_output=False)
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

    def list_models(self) -> CallToolResult:
        """The models of the server's weights manifest: name, kind, whether cached, picture size; and those loaded."""
        loaded = {worker: session.loaded_models() for worker, session in self.service.queue.sessions.items()}
        text = json.dumps({"models": self.service.models(), "loaded": loaded}, default=str)
        return CallToolResult(content=[TextContent(type="text", text=text)])

    def picture_info(self, image: str) -> CallToolResult:
        """The settings glide recorded in a PNG it made (as `glide info --json`). image: a path under --input-dir, or base64."""
        from ..files.pngfile import ImageError, read_png_metadata

        uploads = new_uploads(self.service.uploads_root)
        try:
            path = save_picture(uploads, "image", self._picture_bytes(image, "image"), self.service.config.limits)
            settings = read_png_metadata(path)
        except (PictureError, UploadError, ImageError) as error:
            return tool_error(str(error))
        finally:
            uploads.remove()
        if not settings:
            return tool_error("the picture holds no recorded settings")
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(settings, ensure_ascii=False, default=str))])

    async def score(self, images: list[str], prompt: str, rank_model: str = RANK_MODEL) -> CallToolResult:
        """CLIP score of each picture for the prompt (as `glide score`): 100 x the cosine similarity of their embeddings.
        images: paths under --input-dir, or base64. rank_model: an open_clip NAME:PRETRAINED, or 'noised-clip'."""
        return await anyio.to_thread.run_sync(self._score, images, prompt, rank_model)

    def _score(self, images: list[str], prompt: str, rank_model: str) -> CallToolResult:
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
        rows = [{"image": index, "prompt": prompt, "rank_model": rank_model, "score": value} for index, value in enumerate(scores)]
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(rows, ensure_ascii=False))])

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


def input_directory(path: Path | None) -> Path | None:
    """--input-dir as the server will use it (resolved), or None."""
    return None if path is None else path.expanduser().resolve()
