"""`glide serve`: warm models behind the native, A1111 and OpenAI image APIs, and a page."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..serve.limits import KEEP_JOBS_MINUTES, MAX_IMAGES, MAX_STEPS
from . import mcp as mcp_cli
from . import options as opt
from .run import click_errors

SERVER = "Server"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but loopback needs --token.", rich_help_panel=SERVER)] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one, printed).", rich_help_panel=SERVER)] = 7860,
    token: Annotated[str | None, typer.Option("--token", envvar="GLIDE_SERVE_TOKEN", help="Every API route then needs 'Authorization: Bearer TOKEN' ($GLIDE_SERVE_TOKEN keeps it out of the process list).", show_default=False, rich_help_panel=SERVER)] = None,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Jobs that may wait; more are answered 503 with Retry-After.", rich_help_panel=SERVER)] = 16,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.01, help="Largest picture upload, in MB.", rich_help_panel=SERVER)] = 32.0,
    max_upload_pixels: Annotated[int, typer.Option("--max-upload-pixels", min=1, help="Largest picture upload, in pixels (width x height).", rich_help_panel=SERVER)] = 4096 * 4096,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Pictures one request may ask for; more are refused (422).", rich_help_panel=SERVER)] = MAX_IMAGES,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Sampling steps one stage of a request may take; more are refused (422).", rich_help_panel=SERVER)] = MAX_STEPS,
    keep_jobs: Annotated[float, typer.Option("--keep-jobs", min=0, metavar="MINUTES", help="How long a finished job and its events stay readable (GET /glide/v1/jobs/ID).", rich_help_panel=SERVER)] = KEEP_JOBS_MINUTES,
    out: opt.Out = Path("outputs"),
    weights: opt.Weights = None,
    device: opt.Device = "auto",
    devices: Annotated[str | None, typer.Option("--devices", metavar="cuda:0,cuda:1", help="One worker per device (a job goes to the first free one); default: --device.", show_default=False, rich_help_panel=opt.MODELS)] = None,
    dtype: opt.Dtype = "auto",
    offload: opt.Offload = "none",
    compile_networks: opt.Compile = False,
    offline: opt.Offline = False,
    input_dir: mcp_cli.InputDir = None,
) -> None:
    """Serve glide over HTTP: models load once and stay warm between requests.

    The native API is at /glide/v1 (any rendering command as a job, by the CLI's option
    names), an AUTOMATIC1111 subset at /sdapi/v1, OpenAI's images API at /v1/images, and a
    page at / to paint masks and browse --out, and the rendering commands as MCP tools at
    /mcp (streamable HTTP; docs/mcp.md). It listens on 127.0.0.1 unless told otherwise;
    see docs/serving.md.
    """
    import uvicorn

    from ..files.manifest import load_manifest
    from ..serve.app import create_app
    from ..serve.service import ServerConfig, Service
    from ..serve.uploads import UploadLimits

    if host not in LOOPBACK and not token:
        raise click_errors.UsageError(f"--host {host} lets other machines reach the server: give --token too (or $GLIDE_SERVE_TOKEN)")
    if token is not None and len(token) < 8:
        raise click_errors.BadParameter("a token of fewer than 8 characters is too easy to guess", param_hint="'--token'")
    if out.exists() and not out.is_dir():
        raise click_errors.BadParameter(f"{out} exists and is not a directory", param_hint="'--out'")
    if input_dir is not None and not mcp_cli.sdk_installed():
        raise click_errors.UsageError("--input-dir is for the MCP tools at /mcp, which need the MCP SDK: pip install 'glidecli[mcp]'")
    if input_dir is not None and not input_dir.is_dir():
        raise click_errors.BadParameter(f"{input_dir} is not a directory", param_hint="'--input-dir'")
    out.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(host=host, port=port, out=out, weights=weights, device=device, devices=devices, dtype=dtype,
                          offload=offload, compile=compile_networks, offline=offline, token=token, max_queue=max_queue,
                          limits=UploadLimits(int(max_upload_mb * 2**20), max_upload_pixels), max_images=max_images,
                          max_steps=max_steps, keep_jobs=keep_jobs)
    service = Service(config, load_manifest(weights))
    routes, lifespans = _mcp_endpoint(service, input_dir)
    listener = _listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(f"glide serve: http://{shown}:{listener.getsockname()[1]}/ (pictures in {out}; Ctrl-C stops)\n")
    server = uvicorn.Server(uvicorn.Config(create_app(service, routes, lifespans), log_level="warning", timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises it again
        pass
    finally:
        service.close()
    sys.stderr.write("glide serve: stopped\n")


def _listen(host: str, port: int):
    """The listening socket, bound here so that a port in use is one line and port 0 can be printed."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise click_errors.UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listener.listen(128)
    return listener


def _mcp_endpoint(service, input_dir: Path | None):
    """The MCP tools at /mcp on the server's own queue, where the MCP SDK is installed."""
    if not mcp_cli.sdk_installed():
        return [], []
    from ..mcp.server import build_server, http_endpoint
    from ..mcp.tools import McpConfig

    routes, lifespan = http_endpoint(build_server(service, McpConfig(input_dir=input_dir.resolve() if input_dir else None)))
    return routes, [lifespan]
