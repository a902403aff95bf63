"""The same settings and seed give the same PNG, byte for byte, through the CLI, the native
API and the A1111 API (and the OpenAI API): one request model below all of them."""

from __future__ import annotations

import base64
import json

import numpy as np
from PIL import Image

from helpers.glide_cli import invoker
from helpers.paths import MODELS
from helpers.serving import b64, png_bytes

# What A1111's clients send for a txt2img with nothing but a prompt, steps and a seed chosen:
# every other field at A1111's own default.
A1111_DEFAULT_BODY = {
    "prompt": "", "negative_prompt": "", "styles": [], "seed": -1, "subseed": -1, "subseed_strength": 0,
    "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": "Euler a", "scheduler": "Automatic", "batch_size": 1,
    "n_iter": 1, "steps": 50, "cfg_scale": 7, "width": 512, "height": 512, "restore_faces": False, "tiling": False,
    "do_not_save_samples": False, "do_not_save_grid": False, "eta": 0, "denoising_strength": 0.75, "s_min_uncond": 0,
    "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {}, "override_settings_restore_afterwards": True,
    "refiner_checkpoint": "", "refiner_switch_at": 0, "disable_extra_networks": False, "comments": {}, "enable_hr": False,
    "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": "", "hr_sampler_name": "", "hr_prompt": "", "hr_negative_prompt": "",
    "sampler_index": "Euler", "script_name": "", "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {},
}


def cli_picture(tmp_path, capsys, monkeypatch, *args) -> bytes:
    monkeypatch.chdir(tmp_path)
    result = invoker(capsys, monkeypatch)(*args, "--weights", MODELS / "weights.toml", "--out", tmp_path / "cli", "--quiet")
    assert result.code == 0, result.err
    [path] = result.paths
    return path.read_bytes()


def test_generate_through_the_cli_the_native_and_the_a1111_api(server, tmp_path, capsys, monkeypatch):
    cli = cli_picture(tmp_path, capsys, monkeypatch, "generate", "a red circle", "--model", "shapes", "--upsample-model", "shapes-upsample",
                      "--steps", "3", "--seed", "11")
    native = server.run(command="generate", prompt="a red circle", model="shapes", **{"upsample-model": "shapes-upsample"}, steps=3, seed=11)
    native_bytes = (server.out / native["files"][0]["name"]).read_bytes()
    assert server.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "shapes"}).status_code == 200
    answer = server.client.post("/sdapi/v1/txt2img", json={**A1111_DEFAULT_BODY, "prompt": "a red circle", "steps": 3, "seed": 11})
    assert answer.status_code == 200, answer.text
    [a1111] = answer.json()["images"]
    assert native_bytes == cli
    assert base64.b64decode(a1111) == cli
    info = json.loads(answer.json()["info"])
    assert info["seed"] == 11 and info["all_seeds"] == [11] and info["sd_model_name"] == "shapes" and info["width"] == 64


def test_openai_generations_make_the_same_picture(server):
    # OpenAI's API has no seed: its pictures are the native API's with the seed drawn, as recorded.
    answer = server.client.post("/v1/images/generations", json={"prompt": "a blue square", "model": "shapes", "n": 2, "size": "64x64"})
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert len(data) == 2 and all(item["revised_prompt"] == "a blue square" for item in data)
    made = [Image.open(__import__("io").BytesIO(base64.b64decode(item["b64_json"]))) for item in data]
    seeds = [picture.text["glide"] and json.loads(picture.text["glide"])["seed"] for picture in made]
    assert seeds[1] == seeds[0] + 1
    again = server.run(command="generate", prompt="a blue square", model="shapes", **{"upsample-model": "shapes-upsample"}, seed=seeds[0], num=2)
    assert [np.asarray(p).tolist() for p in made] == [np.asarray(Image.open(server.out / f["name"])).tolist() for f in again["files"]]


def test_inpaint_through_the_cli_the_native_and_the_a1111_api(server, tmp_path, capsys, monkeypatch, picture, square_mask):
    (tmp_path / "in.png").write_bytes(png_bytes(picture))
    (tmp_path / "mask.png").write_bytes(png_bytes(square_mask))
    cli = cli_picture(tmp_path, capsys, monkeypatch, "inpaint", tmp_path / "in.png", tmp_path / "mask.png", "a green circle",
                      "--model", "shapes-inpaint", "--size", "32", "--steps", "3", "--seed", "4")
    native = server.run(command="inpaint", prompt="a green circle", model="shapes-inpaint", size=32, steps=3, seed=4,
                        image=b64(png_bytes(picture)), mask=b64(png_bytes(square_mask)))
    native_bytes = (server.out / native["files"][0]["name"]).read_bytes()
    body = {**A1111_DEFAULT_BODY, "prompt": "a green circle", "steps": 3, "seed": 4, "cfg_scale": 5, "init_images": [b64(png_bytes(picture))],
            "mask": b64(png_bytes(square_mask)), "mask_blur": 4, "inpainting_mask_invert": 0, "resize_mode": 0,
            "override_settings": {"sd_model_checkpoint": "shapes"}}
    answer = server.client.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    # The CLI records the picture's path, the server the upload's hash: the pixels are the same.
    pixels = lambda data: np.asarray(Image.open(__import__("io").BytesIO(data)))  # noqa: E731
    assert np.array_equal(pixels(native_bytes), pixels(cli))
    a1111 = base64.b64decode(answer.json()["images"][0])
    assert json.loads(Image.open(__import__("io").BytesIO(a1111)).text["glide"]) == native["files"][0]["settings"]
    assert a1111 == native_bytes
