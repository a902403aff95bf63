"""MCP's own inspector (the npm package @modelcontextprotocol/inspector) in CLI mode starts
`glide mcp`, lists its tools and calls one: another implementation of the protocol's client
than the SDK's. It is installed once into a cache folder with npm; without node, npm or the
package (no registry, say), the test skips."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.paths import MODELS

# The newest release whose engines take the node of Debian's and Ubuntu's packages (20);
# later ones need node 22.19.
INSPECTOR = "@modelcontextprotocol/inspector@0.15.0"
CACHE = Path(os.environ.get("GLIDE_TEST_NPM_CACHE", Path.home() / ".cache" / "glidecli-tests" / "mcp-inspector"))


@pytest.fixture(scope="module")
def inspector() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    binary = CACHE / "node_modules" / ".bin" / "mcp-inspector"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", INSPECTOR],
                                  capture_output=True, text=True, timeout=400)
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {INSPECTOR} did not finish")
        if done.returncode != 0 or not binary.exists():
            pytest.skip(f"npm install {INSPECTOR} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return binary


def inspect(inspector: Path, tmp_path: Path, *method: str) -> dict:
    env = {**os.environ, "GLIDE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "GLIDE_DEVICE": "cpu", "GLIDE_DTYPE": "fp32"}
    server = [sys.executable, "-m", "glidecli", "mcp", "--weights", str(MODELS / "weights.toml"), "--out", str(tmp_path / "out")]
    done = subprocess.run([str(inspector), "--cli", *server, *method], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_inspector_lists_the_tools_and_renders(inspector, tmp_path):
    listed = inspect(inspector, tmp_path, "--method", "tools/list")
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert {"generate", "inpaint", "list_models", "picture_info", "score"} <= set(tools)
    assert tools["generate"]["inputSchema"]["required"] == ["prompts"]
    called = inspect(inspector, tmp_path, "--method", "tools/call", "--tool-name", "generate", "--tool-arg", "prompts=a red circle",
                     "--tool-arg", "model=shapes", "--tool-arg", "size=32", "--tool-arg", "steps=3", "--tool-arg", "seed=3")
    assert not called.get("isError"), called
    [image] = [block for block in called["content"] if block["type"] == "image"]
    [written] = sorted((tmp_path / "out").glob("*.png"))
    assert base64.b64decode(image["data"]) == written.read_bytes()
    assert np.asarray(Image.open(io.BytesIO(written.read_bytes()))).shape == (32, 32, 3)
    refused = inspect(inspector, tmp_path, "--method", "tools/call", "--tool-name", "generate", "--tool-arg", "prompts=x", "--tool-arg", "scale=-1")
    assert refused["isError"] and refused["content"][0]["text"].startswith("Invalid value for '--scale'")
