"""A `glide serve` application on the small shapes models in models/, driven through
FastAPI's test client (no socket), with its --out in a fresh folder; and what its tests share."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from glidecli.files.manifest import load_manifest
from glidecli.serve.app import create_app
from glidecli.serve.service import ServerConfig, Service
from helpers.paths import MODELS

ORIGIN = "http://127.0.0.1:7860"
# The fast settings every test renders with: the shapes base model (32x32) then its
# upsampler (64x64), few steps.
FAST = {"model": "shapes", "upsample-model": "shapes-upsample", "steps": "3", "upsample-steps": "2"}


class Server:
    """The service (on the CPU), its app and a test client."""

    def __init__(self, tmp_path: Path, manifest: Path = MODELS / "weights.toml", **config: Any):
        self.out = tmp_path / "out"
        self.service = Service(ServerConfig(out=self.out, device="cpu", **config), load_manifest(manifest))
        self.client = TestClient(create_app(self.service), base_url=ORIGIN)

    def submit(self, **body: Any):
        return self.client.post("/glide/v1/jobs", json=body)

    def run(self, timeout: float = 120, **body: Any) -> dict[str, Any]:
        """Submit a job and wait for it; its final status."""
        response = self.submit(**body)
        assert response.status_code == 202, response.text
        job = self.service.queue.get(response.json()["id"])
        assert self.service.queue.wait(job, timeout), "the job did not finish"
        return self.client.get(f"/glide/v1/jobs/{job.id}").json()

    def written(self) -> list[Path]:
        return sorted(self.out.rglob("*.png")) if self.out.exists() else []

    def close(self) -> None:
        self.service.close()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)



def start_server(tmp_path: Path, *args: str):
    """`glide serve --port 0` on the shapes models in a subprocess: (the process, its base URL)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "GLIDE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "GLIDE_DEVICE": "cpu"}
    process = subprocess.Popen(
        [sys.executable, "-m", "glidecli", "serve", "--port", "0", "--weights", str(MODELS / "weights.toml"), "--out", str(tmp_path / "out"), *args],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    line = process.stderr.readline()
    assert line.startswith("glide serve: http://127.0.0.1:"), line
    return process, line.split()[2].rstrip("/")
