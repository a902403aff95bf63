"""The shapes models' server with its MCP tools, for the MCP front end's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glidecli.files.manifest import load_manifest
from glidecli.mcp.server import build_server
from glidecli.mcp.tools import McpConfig
from glidecli.serve.service import ServerConfig, Service
from glidecli.serve.uploads import UploadLimits
from helpers.paths import MODELS

# The fast settings the tests render with: the shapes models, few steps.
FAST_GENERATE = {"model": "shapes", "upsample_model": "shapes-upsample", "steps": "3", "upsample_steps": "2"}


class McpRig:
    """A Service (on the CPU) with its MCP server; `input_dir` is where tools may read paths."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.out = root / "out"
        self.input_dir = root / "input"
        self.input_dir.mkdir(parents=True)
        limits = config.pop("limits", UploadLimits())
        self.service = Service(ServerConfig(out=self.out, device="cpu", limits=limits), load_manifest(MODELS / "weights.toml"))
        self.server = build_server(self.service, McpConfig(input_dir=self.input_dir, **config))

    def written(self) -> list[Path]:
        return sorted(self.out.rglob("*.png")) if self.out.exists() else []
