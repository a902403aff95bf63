"""`glide mcp`: the rendering commands as Model Context Protocol tools over stdio, the
transport desktop clients start (docs/mcp.md). `glide serve` answers the same at /mcp."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..serve.limits import MAX_IMAGES, MAX_STEPS
from . import options as opt
from .run import click_errors

MCP = "MCP"
MISSING_SDK = "glide mcp needs the MCP SDK: pip install 'glidecli[mcp]' (or: pip install mcp)"


def sdk_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("mcp") is not None and find_spec("mcp.server.mcpserver") is not None


InputDir = Annotated[
    Path | None,
    typer.Option("--input-dir", help="Tools may read pictures by path from this folder (and below it) alone; without it, pictures come as base64 only.",
                 show_default=False, rich_help_panel=MCP),
]
MaxImages = Annotated[int, typer.Option("--max-images", min=1, help="The most pictures one tool call may make.", rich_help_panel=MCP)]
MaxSteps = Annotated[int, typer.Option("--max-steps", min=1, help="The most sampling steps one stage of a call may take.", rich_help_panel=MCP)]


def mcp_command(
    input_dir: InputDir = None,
    max_images: MaxImages = MAX_IMAGES,
    max_steps: MaxSteps = MAX_STEPS,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.01, help="Largest picture a call may send or name, in MB.", rich_help_panel=MCP)] = 32.0,
    out: opt.Out = Path("outputs"),
    weights: opt.Weights = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    offload: opt.Offload = "none",
    offline: opt.Offline = False,
) -> None:
    """Serve glide's rendering commands as MCP tools over stdin/stdout (for Claude Desktop,
    Cursor, VS Code and other MCP clients): models load on first use and stay warm.

    Tools: generate, upsample, inpaint, outpaint, clip-guide, unclip, vary, blend (the
    commands' options by name), list_models, picture_info and score. Pictures are written
    under --out and returned as image content. See docs/mcp.md.
    """
    if not sdk_installed():
        raise click_errors.UsageError(MISSING_SDK)
    from ..files.manifest import load_manifest
    from ..mcp.server import build_server
    from ..mcp.tools import McpConfig
    from ..serve.service import ServerConfig, Service
    from ..serve.uploads import UploadLimits

    if out.exists() and not out.is_dir():
        raise click_errors.BadParameter(f"{out} exists and is not a directory", param_hint="'--out'")
    if input_dir is not None and not input_dir.is_dir():
        raise click_errors.BadParameter(f"{input_dir} is not a directory", param_hint="'--input-dir'")
    out.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(out=out, weights=weights, device=device, dtype=dtype, offload=offload, offline=offline,
                          limits=UploadLimits(max_bytes=int(max_upload_mb * 2**20)), max_images=max_images, max_steps=max_steps)
    service = Service(config, load_manifest(weights))
    server = build_server(service, McpConfig(input_dir=input_dir.resolve() if input_dir else None))
    try:
        server.run("stdio")
    finally:
        service.close()
