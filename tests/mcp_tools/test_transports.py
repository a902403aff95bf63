"""The MCP front end as clients meet it: `glide mcp` started as a subprocess and spoken to
over stdio, and a live `glide serve` at /mcp over streamable HTTP behind its token, Host
and Origin checks; both with the SDK's own ClientSession. Their pictures are the CLI's."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import sys
import urllib.error
import urllib.request

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from PIL import Image

from glidecli.mcp.server import http_endpoint
from glidecli.serve.app import create_app
from helpers.glide_cli import invoker
from helpers.mcp_rig import FAST_GENERATE, McpRig
from helpers.paths import MODELS
from helpers.serving import ORIGIN, start_server

TOKEN = "a-test-token-1234"
GENERATE = {"prompts": "a red circle", **FAST_GENERATE, "seed": 11}
CLI_GENERATE = ("generate", "a red circle", "--model", "shapes", "--upsample-model", "shapes-upsample", "--steps", "3", "--upsample-steps", "2", "--seed", "11")
INPAINT = {"image": "in.png", "prompt": "a green circle", "model": "shapes-inpaint", "size": 32, "steps": "3", "seed": 4}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_of(result) -> np.ndarray:
    assert not result.is_error, result
    [data] = [block.data for block in result.content if block.type == "image"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


@pytest.fixture
def pictures(tmp_path, capsys, monkeypatch, picture, square_mask):
    """The input folder (a picture; its mask in base64) and the CLI's pictures for GENERATE and INPAINT."""
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / "in.png").write_bytes(png(picture))
    (tmp_path / "mask.png").write_bytes(png(square_mask))
    invoke = invoker(capsys, monkeypatch)
    made = {}
    for name, args in {"generate": CLI_GENERATE, "inpaint": ("inpaint", folder / "in.png", tmp_path / "mask.png", "a green circle",
                                                             "--model", "shapes-inpaint", "--size", "32", "--steps", "3", "--seed", "4")}.items():
        result = invoke(*args, "--weights", MODELS / "weights.toml", "--out", tmp_path / "cli" / name, "--quiet")
        assert result.code == 0, result.err
        made[name] = np.asarray(Image.open(result.paths[0]).convert("RGB"))
    mask = base64.b64encode(png(square_mask)).decode()
    return folder, mask, made


async def exercise(session: ClientSession, mask: str, made: dict[str, np.ndarray], out) -> None:
    """What both transports must do: list the tools with their schemas, render the CLI's
    pictures with progress in order, and cancel a render leaving no file."""
    await session.initialize()
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert {"generate", "inpaint", "outpaint", "clip-guide", "unclip", "vary", "blend", "upsample", "score"} <= set(tools)
    assert tools["generate"].input_schema["properties"]["scale"]["type"] == "number"
    seen = []

    async def progress(value, total, message):
        seen.append(value)

    assert np.array_equal(image_of(await session.call_tool("generate", GENERATE, progress_callback=progress)), made["generate"])
    assert seen == [1, 2, 3, 4, 5]
    assert np.array_equal(image_of(await session.call_tool("inpaint", {**INPAINT, "mask": mask})), made["inpaint"])
    before = sorted(out.rglob("*.png"))
    with anyio.CancelScope() as scope:
        async def cancel_at_step_two(value, total, message):
            if value >= 2:
                scope.cancel()

        await session.call_tool("generate", {**GENERATE, "steps": "400"}, progress_callback=cancel_at_step_two)
    assert scope.cancelled_caught
    outside = await session.call_tool("inpaint", {**INPAINT, "image": str(out.parent / "secret.png")})
    assert outside.is_error and "outside --input-dir" in outside.content[0].text
    assert sorted(out.rglob("*.png")) == before and len(before) == 2


def child_environment(tmp_path) -> dict[str, str]:
    return {**os.environ, "GLIDE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "GLIDE_DEVICE": "cpu", "GLIDE_DTYPE": "fp32"}


def test_glide_mcp_over_stdio(tmp_path, pictures):
    folder, mask, made = pictures
    out = tmp_path / "out"
    params = StdioServerParameters(command=sys.executable, env=child_environment(tmp_path), args=[
        "-m", "glidecli", "mcp", "--weights", str(MODELS / "weights.toml"), "--out", str(out), "--input-dir", str(folder), "--device", "cpu"])

    async def main():
        with open(tmp_path / "stderr.txt", "w") as errors:
            async with stdio_client(params, errlog=errors) as (read, write), ClientSession(read, write) as session:
                await exercise(session, mask, made, out)

    anyio.run(main)
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


def test_glide_serve_answers_mcp_at_slash_mcp_behind_its_token(tmp_path, pictures, monkeypatch):
    folder, mask, made = pictures
    for key, value in child_environment(tmp_path).items():
        monkeypatch.setenv(key, value)
    process, base = start_server(tmp_path, "--token", TOKEN, "--input-dir", str(folder))
    try:
        refused = urllib.request.Request(f"{base}/mcp", data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(refused, timeout=30)
        assert answer.value.code == 401 and b"Authorization: Bearer TOKEN" in answer.value.read()

        async def main():
            async with create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"}) as http, \
                    streamable_http_client(f"{base}/mcp", http_client=http) as (read, write), ClientSession(read, write) as session:
                await exercise(session, mask, made, tmp_path / "out")

        anyio.run(main)
        health = urllib.request.Request(f"{base}/glide/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(health, timeout=30) as answer:
            loaded = json.loads(answer.read())["loaded"]
        assert any("shapes" in models for models in loaded.values())  # the MCP calls ran on the server's own worker
    finally:
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=60)[1]
    assert process.returncode == 0 and "Traceback" not in rest, rest


def test_mcp_route_keeps_the_host_and_origin_checks(tmp_path):
    rig = McpRig(tmp_path / "rig")
    routes, lifespan = http_endpoint(rig.server)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}}
    streams = {"Accept": "application/json, text/event-stream"}
    with TestClient(create_app(rig.service, routes, [lifespan]), base_url=ORIGIN) as client:
        assert client.post("/mcp", json=listing, headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.post("/mcp", json=listing, headers={"Host": "evil.example"}).status_code == 400
        same_origin = client.post("/mcp", json=hello, headers={**streams, "Origin": ORIGIN})
        assert same_origin.status_code == 200 and "glide" in same_origin.text, same_origin.text
