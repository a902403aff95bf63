"""The MCP tools through the SDK's own client (in memory): schemas from the request layer's
declarations, the CLI's pictures for the same settings and seed, progress, cancel, warm
models, and one clear tool error for each bad input with nothing written."""

from __future__ import annotations

import base64
import io
import json
import os
import time

import anyio
import jsonschema
import numpy as np
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from PIL import Image

from glidecli.diffusion.vocabulary import MAX_SEED, SAMPLER_NAMES
from glidecli.request import options as o
from glidecli.request.commands import REQUESTS, option_fields
from glidecli.serve.uploads import UploadLimits
from helpers.glide_cli import invoker
from helpers.mcp_rig import FAST_GENERATE, McpRig
from helpers.paths import MODELS


def run(rig, *calls, progress=None):
    """Each (tool, arguments) call on one client connection; their results."""

    async def main():
        async with Client(rig.server) as client:
            return [await client.call_tool(name, arguments, progress_callback=progress) for name, arguments in calls]

    return anyio.run(main)


def read_resource(rig, uri: str) -> bytes:
    async def main():
        async with Client(rig.server) as client:
            [contents] = (await client.read_resource(uri)).contents
            return base64.b64decode(contents.blob)

    return anyio.run(main)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def images(result) -> list[np.ndarray]:
    return [pixels(base64.b64decode(block.data)) for block in result.content if block.type == "image"]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def cli_pixels(tmp_path, capsys, monkeypatch, *args) -> np.ndarray:
    monkeypatch.chdir(tmp_path)
    result = invoker(capsys, monkeypatch)(*args, "--weights", MODELS / "weights.toml", "--out", tmp_path / "cli", "--quiet")
    assert result.code == 0, result.err
    [path] = result.paths
    return pixels(path.read_bytes())


def error_text(result) -> str:
    assert result.is_error, result
    [block] = result.content
    assert "\n" not in block.text and "Traceback" not in block.text
    return block.text


def test_each_command_is_a_tool_with_the_declared_options(rig):
    async def main():
        async with Client(rig.server) as client:
            return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in anyio.run(main)}
    assert set(tools) == {*REQUESTS, "list_models", "picture_info", "score"}
    for command, request_type in REQUESTS.items():
        schema = tools[command].input_schema
        jsonschema.Draft202012Validator.check_schema(schema)
        declared = {name: option for name, option, _ in option_fields(request_type)}
        assert set(schema["properties"]) == set(declared) - {"animate", "show_steps"}
        for name, prop in schema["properties"].items():
            assert prop["description"].startswith(declared[name].help)
    generate = tools["generate"].input_schema
    assert generate["required"] == ["prompts"] and generate["additionalProperties"] is False
    assert generate["properties"]["scale"]["minimum"] == o.SCALE.minimum
    assert generate["properties"]["seed"] == {**generate["properties"]["seed"], "type": "integer", "minimum": 0, "maximum": MAX_SEED}
    assert generate["properties"]["sampler"]["enum"] == list(SAMPLER_NAMES)
    assert set(tools["inpaint"].input_schema["required"]) == {"image", "prompt"}
    assert set(tools["blend"].input_schema["required"]) == {"image_a", "image_b"}


def test_generate_gives_the_cli_picture_with_progress_in_order(rig, tmp_path, capsys, monkeypatch):
    seen = []

    async def progress(value, total, message):
        seen.append((value, message))

    [result] = run(rig, ("generate", {"prompts": "a red circle", **FAST_GENERATE, "seed": 11}), progress=progress)
    assert not result.is_error, result
    kinds = [block.type for block in result.content]
    assert kinds == ["image", "resource_link", "text"]
    [written] = rig.written()
    link = result.content[1]
    assert link.uri == f"glide://outputs/{written.name}" and link.mime_type == "image/png"
    assert base64.b64decode(result.content[0].data) == written.read_bytes()
    assert read_resource(rig, link.uri) == written.read_bytes()
    summary = json.loads(result.content[2].text)
    assert summary["files"][0]["path"] == str(written.resolve())
    assert summary["files"][0]["seed"] == 11 and summary["files"][0]["settings"]["prompt"] == "a red circle"
    cli = cli_pixels(tmp_path, capsys, monkeypatch, "generate", "a red circle", "--model", "shapes", "--upsample-model", "shapes-upsample",
                     "--steps", "3", "--upsample-steps", "2", "--seed", "11")
    [made] = images(result)
    assert np.array_equal(made, cli)
    assert [message for _, message in seen] == ["base step 1/3", "base step 2/3", "base step 3/3", "upsample step 1/2", "upsample step 2/2"]
    assert [value for value, _ in seen] == [1, 2, 3, 4, 5]


def test_inpaint_reads_a_path_under_input_dir_and_base64(rig, tmp_path, capsys, monkeypatch, picture, square_mask):
    (rig.input_dir / "in.png").write_bytes(png(picture))
    (tmp_path / "in.png").write_bytes(png(picture))
    (tmp_path / "mask.png").write_bytes(png(square_mask))
    mask64 = base64.b64encode(png(square_mask)).decode()
    arguments = {"image": "in.png", "mask": mask64, "prompt": "a green circle", "model": "shapes-inpaint", "size": 32, "steps": "3", "seed": 4}
    by_path, by_data_url = run(rig, ("inpaint", arguments),
                               ("inpaint", {**arguments, "image": str(rig.input_dir / "in.png"), "mask": f"data:image/png;base64,{mask64}"}))
    cli = cli_pixels(tmp_path, capsys, monkeypatch, "inpaint", tmp_path / "in.png", tmp_path / "mask.png", "a green circle",
                     "--model", "shapes-inpaint", "--size", "32", "--steps", "3", "--seed", "4")
    assert np.array_equal(images(by_path)[0], cli)
    assert np.array_equal(images(by_data_url)[0], cli)


def test_models_load_once_and_stay_warm(rig, monkeypatch):
    import glidecli.render.session as session_module

    loads = []
    real = session_module.load_network

    def counted(kind, *args, **kwargs):
        loads.append(kind)
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(session_module, "load_network", counted)
    arguments = {"prompts": "a red circle", **FAST_GENERATE, "seed": 1}
    first = run(rig, ("generate", arguments))
    assert len(loads) == 2  # the base model and the upsampler
    second, third = run(rig, ("generate", {**arguments, "seed": 2}), ("generate", {**arguments, "seed": 3}))  # a new connection too
    assert not any(result.is_error for result in (*first, second, third))
    assert len(loads) == 2 and len(rig.written()) == 3
    models = json.loads(run(rig, ("list_models", {}))[0].content[0].text)
    assert sorted(models["loaded"]["cpu"]) == ["shapes", "shapes-upsample"]


def test_a_cancelled_call_stops_its_job_and_leaves_no_file(rig):
    async def main():
        async with Client(rig.server) as client:
            with anyio.CancelScope() as scope:
                async def progress(value, total, message):
                    if value >= 2:
                        scope.cancel()

                await client.call_tool("generate", {"prompts": "a red circle", **FAST_GENERATE, "steps": "400", "seed": 5}, progress_callback=progress)
            assert scope.cancelled_caught
            # The connection goes on: the next call renders.
            return await client.call_tool("generate", {"prompts": "a blue square", **FAST_GENERATE, "size": 32, "seed": 6})

    after = anyio.run(main)
    deadline = time.monotonic() + 60
    while not all(job.finished for job in rig.service.queue.jobs()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = [job for job in rig.service.queue.jobs() if job.state == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0].step < 400
    assert not after.is_error
    assert [path.name for path in rig.written()] == [json.loads(after.content[-1].text)["files"][0]["name"]]


def test_bad_input_is_one_tool_error_and_writes_nothing(rig, tmp_path, picture):
    outside = tmp_path / "secret.png"
    outside.write_bytes(png(picture))
    os.symlink(outside, rig.input_dir / "link.png")
    calls = [
        (("nope", {}), "Unknown tool: nope"),
        (("generate", {"prompts": "x", "seed": "abc"}), "Invalid value for '--seed': 'abc' is not a whole number"),
        (("generate", {"prompts": 5}), "is not a prompt or a list of prompts"),
        (("generate", {"prompts": "x", "scale": -1}), "Invalid value for '--scale': -1"),
        (("generate", {"prompts": "x", "colour": "red"}), "generate has no option 'colour'"),
        (("generate", {"prompts": "x", **FAST_GENERATE, "animate": "gif", "seed_walk": 3}), "use the command line"),
        (("generate", {"prompts": "x", **FAST_GENERATE, "num": 17}), "at most 16"),
        (("inpaint", {"image": "../../secret.png", "prompt": "x"}), "outside --input-dir"),
        (("inpaint", {"image": str(outside), "prompt": "x"}), "outside --input-dir"),
        (("inpaint", {"image": "link.png", "prompt": "x"}), "outside --input-dir"),
        (("inpaint", {"image": "missing.png", "prompt": "x"}), "no file missing.png under --input-dir"),
        (("inpaint", {"image": "data:image/png;base64,@@@", "prompt": "x"}), "not valid base64"),
        (("inpaint", {"prompt": "x"}), "missing IMAGE"),
        (("picture_info", {"image": "../../secret.png"}), "outside --input-dir"),
        (("picture_info", {"image": 5}), "Invalid value for 'image': 5 is not text"),
        (("picture_info", {}), "missing image"),
        (("score", {"images": "x.png", "prompt": "x"}), "Invalid value for 'images': 'x.png' is not a list"),
        (("list_models", {"verbose": True}), "list_models has no option 'verbose'"),
    ]
    results = run(rig, *(call for call, _ in calls))
    for (call, fragment), result in zip(calls, results):
        assert fragment in error_text(result), (call, result)
    assert rig.written() == [] and rig.service.queue.jobs() == []


def test_an_oversized_picture_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rig = McpRig(tmp_path / "small", limits=UploadLimits(max_bytes=2000))
    try:
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        big = base64.b64encode(png(noise)).decode()
        (rig.input_dir / "big.png").write_bytes(png(noise))
        by_data, by_path = run(rig, ("vary", {"image": big}), ("vary", {"image": "big.png"}))
        assert "larger than the upload limit of 2000 bytes" in error_text(by_data)
        assert "the upload limit is 2000" in error_text(by_path)
        assert rig.written() == [] and rig.service.queue.jobs() == []
    finally:
        rig.service.close()


def test_picture_info_and_score(rig, tmp_path, capsys, monkeypatch):
    [made] = run(rig, ("generate", {"prompts": "a red circle", **FAST_GENERATE, "size": 32, "seed": 8}))
    data = made.content[0].data
    info, plain = run(rig, ("picture_info", {"image": data}), ("picture_info", {"image": base64.b64encode(png(np.zeros((8, 8, 3), np.uint8))).decode()}))
    settings = json.loads(info.content[0].text)
    assert settings["seed"] == 8 and settings["prompt"] == "a red circle" and settings["command"] == "generate"
    assert "holds no recorded settings" in error_text(plain)
    [score] = run(rig, ("score", {"images": [data], "prompt": "a red circle", "rank_model": "noised-clip"}))
    # The shapes manifest has no noised CLIP: the CLI's one line, and the server goes on.
    (tmp_path / "made.png").write_bytes(base64.b64decode(data))
    cli = invoker(capsys, monkeypatch)("score", tmp_path / "made.png", "--prompt", "a red circle", "--rank-model", "noised-clip",
                                       "--weights", MODELS / "weights.toml")
    assert cli.code == 1 and error_text(score) == cli.err.strip().removeprefix("error: ")
    assert not run(rig, ("list_models", {}))[0].is_error


def test_the_pictures_resource_reads_pngs_under_out_alone(rig, tmp_path, picture):
    (tmp_path / "mcp" / "secret.png").write_bytes(png(picture))
    (rig.out).mkdir(parents=True, exist_ok=True)
    (rig.out / "notes.txt").write_text("not a picture")

    async def main():
        async with Client(rig.server) as client:
            for name in ("..%2Fsecret.png", "notes.txt", "missing.png", "%2Fetc%2Fpasswd"):
                with pytest.raises(MCPError):
                    await client.read_resource(f"glide://outputs/{name}")

    anyio.run(main)
