"""A1111's prompt language through the server's APIs: the same prompt (emphasis, wildcards)
and seed give the same PNG through the CLI, the native API and the A1111 API, since all of
them build the same typed requests; the server reads wildcards from its own folder only."""

from __future__ import annotations

import base64
import json

from PIL import Image
from test_same_pictures import A1111_DEFAULT_BODY  # the body A1111 clients send

from glidecli.files.pngfile import read_png_metadata
from glidecli.request.wildcards import WILDCARDS_ENV
from helpers.glide_cli import invoker
from helpers.paths import MODELS

PROMPT = "a (red:1.4) {circle|square} on a [[blue]] background"


def test_the_language_gives_the_same_picture_through_the_cli_and_both_apis(server, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(WILDCARDS_ENV, raising=False)
    cli = invoker(capsys, monkeypatch)("generate", PROMPT, "--model", "shapes", "--upsample-model", "shapes-upsample", "--steps", "3", "--seed", "11",
                                       "--weights", MODELS / "weights.toml", "--out", tmp_path / "cli", "--quiet")
    assert cli.code == 0, cli.err
    [path] = cli.paths
    record = read_png_metadata(path)
    assert record["prompt_template"] == PROMPT and record["prompt"] in (PROMPT.replace("{circle|square}", shape) for shape in ("circle", "square"))
    native = server.run(command="generate", prompt=PROMPT, model="shapes", **{"upsample-model": "shapes-upsample"}, steps=3, seed=11)
    assert (server.out / native["files"][0]["name"]).read_bytes() == path.read_bytes()
    assert server.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "shapes"}).status_code == 200
    answer = server.client.post("/sdapi/v1/txt2img", json={**A1111_DEFAULT_BODY, "prompt": PROMPT, "steps": 3, "seed": 11})
    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.json()["images"][0]) == path.read_bytes()


def test_literal_prompt_is_a_field_and_wildcards_come_from_the_servers_folder(server, tmp_path, monkeypatch):
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "colour.txt").write_text("green\n", encoding="utf-8")
    monkeypatch.setenv(WILDCARDS_ENV, str(tmp_path / "cards"))
    done = server.run(command="generate", prompt="a __colour__ circle", model="shapes", size=32, steps=2, seed=1)
    settings = done["files"][0]["settings"]
    assert settings["prompt"] == "a green circle" and settings["prompt_template"] == "a __colour__ circle"
    literal = server.run(command="generate", prompt="a ((red)) circle", model="shapes", size=32, steps=2, seed=1, **{"literal-prompt": True})
    assert literal["files"][0]["settings"]["literal_prompt"] is True
    picture = Image.open(server.out / literal["files"][0]["name"])
    assert json.loads(picture.text["glide"])["prompt"] == "a ((red)) circle"
    refused = server.client.post("/glide/v1/jobs", json={"command": "generate", "prompt": "x", "wildcards": "/etc"})
    assert refused.status_code == 422 and "the server sets it" in refused.json()["detail"] and "\n" not in refused.json()["detail"]


def test_the_emphasis_method_is_a_field_that_gives_the_clis_picture(server, tmp_path, capsys, monkeypatch):
    """`"emphasis": "comfy"` over the native API gives the picture `--emphasis comfy` gives, and
    records it; a method that is none is a 422 with one line."""
    monkeypatch.chdir(tmp_path)
    prompt = "a (red:1.8) circle on a [blue] background"
    cli = invoker(capsys, monkeypatch)("generate", prompt, "--emphasis", "comfy", "--model", "shapes", "--size", "32", "--steps", "3", "--seed", "4",
                                       "--weights", MODELS / "weights.toml", "--out", tmp_path / "cli", "--quiet")
    assert cli.code == 0, cli.err
    [path] = cli.paths
    assert read_png_metadata(path)["emphasis"] == "comfy"
    native = server.run(command="generate", prompt=prompt, emphasis="comfy", model="shapes", size=32, steps=3, seed=4)
    assert (server.out / native["files"][0]["name"]).read_bytes() == path.read_bytes()
    a1111 = server.run(command="generate", prompt=prompt, model="shapes", size=32, steps=3, seed=4)
    assert "emphasis" not in a1111["files"][0]["settings"]
    assert (server.out / a1111["files"][0]["name"]).read_bytes() != path.read_bytes()
    refused = server.client.post("/glide/v1/jobs", json={"command": "generate", "prompt": "x", "emphasis": "loud"})
    assert refused.status_code == 422 and "emphasis" in refused.json()["detail"] and "\n" not in refused.json()["detail"]
