"""A1111's endpoints that its clients probe and call besides txt2img: their shapes (field
names and types, as A1111 answers them), hires fix, extras, png-info, interrogate."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from glidecli.train.shapes import draw_scene
from helpers.serving import b64, png_bytes

A1111 = "/sdapi/v1"
SCENE = "a red circle on a blue background"
FAST_TXT2IMG = {"prompt": SCENE, "steps": 3, "hr_second_pass_steps": 2, "seed": 4}


def pixels(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def test_the_listing_endpoints_answer_a1111s_shapes(server):
    upscalers = server.client.get(f"{A1111}/upscalers").json()
    assert upscalers[0]["name"] == "None" and [u["name"] for u in upscalers[1:]] == ["shapes-upsample", "shapes-sr"]
    assert set(upscalers[1]) == {"name", "model_name", "model_path", "model_url", "scale"} and upscalers[1]["scale"] == 4
    assert server.client.get(f"{A1111}/latent-upscale-modes").json() == []
    assert server.client.get(f"{A1111}/sd-modules").json() == []
    assert server.client.get(f"{A1111}/scripts").json() == {"txt2img": [], "img2img": []}
    assert server.client.get(f"{A1111}/embeddings").json() == {"loaded": {}, "skipped": {}}
    flags = server.client.get(f"{A1111}/cmd-flags").json()
    assert flags["max_images"] == 16 and flags["max_steps"] == 1000 and flags["api_auth"] is False


def test_info_has_a1111s_types(server):
    answer = server.client.post(f"{A1111}/txt2img", json=FAST_TXT2IMG)
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["steps"] == 3 and isinstance(info["seed"], int) and isinstance(info["cfg_scale"], float)
    assert (info["width"], info["height"]) == (64, 64) and info["all_seeds"] == [4]
    assert info["infotexts"][0].startswith(SCENE + "\nSteps: 3, ")


def test_hires_fix_is_the_upsampler_stage_at_its_scale(server):
    native = server.run(command="generate", prompt=SCENE, seed=4, steps="3", model="shapes", **{"upsample-model": "shapes-upsample", "upsample-steps": "2"})
    plain = b64((server.out / native["files"][0]["name"]).read_bytes())
    for hires in ({"hr_scale": 4}, {"hr_scale": 4, "hr_upscaler": "Latent"}, {"hr_upscaler": "shapes-upsample", "hr_resize_x": 64, "hr_resize_y": 64}):
        answer = server.client.post(f"{A1111}/txt2img", json={**FAST_TXT2IMG, "enable_hr": True, **hires})
        assert answer.status_code == 200, answer.text
        assert np.array_equal(pixels(answer.json()["images"][0]), pixels(plain))
    slower = server.client.post(f"{A1111}/txt2img", json={**FAST_TXT2IMG, "enable_hr": True, "hr_scale": 4, "hr_second_pass_steps": 3})
    assert json.loads(slower.json()["info"])["infotexts"][0].count("Upsample steps: 3") == 1


@pytest.mark.parametrize("hires, fragment", [
    ({"hr_scale": 2}, "hr_scale 2: the upsampler shapes-upsample scales by 4"),
    ({"hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler 'R-ESRGAN 4x+' is not an upsampler"),
    ({"hr_resize_x": 1024, "hr_resize_y": 1024}, "makes 64x64 pictures"),
])
def test_hires_fix_that_means_something_else_is_refused(server, hires, fragment):
    answer = server.client.post(f"{A1111}/txt2img", json={**FAST_TXT2IMG, "enable_hr": True, **hires})
    assert answer.status_code == 422 and fragment in answer.json()["detail"], answer.text
    assert server.written() == []


def test_extras_run_the_upsampler_as_the_native_api_does(server):
    low = png_bytes(np.asarray(draw_scene("red", "circle", "blue", 16)))
    answer = server.client.post(f"{A1111}/extra-single-image", json={"image": b64(low), "upscaler_1": "shapes-upsample", "upscaling_resize": 4, "prompt": SCENE})
    assert answer.status_code == 200, answer.text
    native = server.run(command="upsample", prompt=SCENE, image=b64(low), model="shapes-upsample", seed=0)
    assert np.array_equal(pixels(answer.json()["image"]), np.asarray(Image.open(server.out / native["files"][0]["name"]).convert("RGB")))
    batch = server.client.post(f"{A1111}/extra-batch-images", json={"imageList": [{"data": b64(low), "name": "a.png"}] * 2, "prompt": SCENE})
    assert batch.status_code == 200 and len(batch.json()["images"]) == 2
    double = server.client.post(f"{A1111}/extra-single-image", json={"image": b64(low), "upscaling_resize": 2, "prompt": SCENE}).json()
    upsampled = Image.fromarray(pixels(answer.json()["image"])).resize((32, 32), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(double["image"]), np.asarray(upsampled))  # 4x by the upsampler, then down to 2x, as A1111 does
    refused = server.client.post(f"{A1111}/extra-single-image", json={"image": b64(low), "upscaling_resize": 20})
    assert refused.status_code == 422 and "upscaling_resize 20 is not from 0 to 8" in refused.json()["detail"]


def test_png_info_reads_glides_record_and_a1111s_parameters(server):
    made = server.client.post(f"{A1111}/txt2img", json=FAST_TXT2IMG).json()["images"][0]
    info = server.client.post(f"{A1111}/png-info", json={"image": made}).json()
    assert info["info"].startswith(SCENE + "\nSteps: 3") and info["items"]["seed"] == 4 and info["parameters"]["Seed"] == 4
    foreign = PngImagePlugin.PngInfo()
    foreign.add_text("parameters", "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=foreign)
    other = server.client.post(f"{A1111}/png-info", json={"image": b64(buffer.getvalue())}).json()
    assert other["info"].startswith("a cat\n") and other["parameters"]["Steps"] == 20 and other["items"] == {"parameters": other["info"]}
    assert server.client.post(f"{A1111}/png-info", json={"image": b64(b"not a picture")}).status_code == 422


def test_interrogate_ranks_captions_with_the_manifests_clip(server):
    scene = b64(png_bytes(np.asarray(draw_scene("green", "square", "white", 64))))
    answer = server.client.post(f"{A1111}/interrogate", json={"image": scene, "model": "clip"})
    assert answer.status_code == 200 and answer.json() == {"caption": "a green square on a white background"}
    other = server.client.post(f"{A1111}/interrogate", json={"image": scene, "model": "deepdanbooru"})
    assert other.status_code == 422 and "glide has only clip" in other.json()["detail"]


@pytest.mark.parametrize("route, body, fragment", [
    ("/sdapi/v1/txt2img", {"prompt": "x", "batch_size": 100000}, "100000 pictures; this server makes at most 16 per request (--max-images)"),
    ("/sdapi/v1/txt2img", {"prompt": "x", "steps": 5000}, "--steps 5000 asks for 5000 steps; this server takes at most 1000 (--max-steps)"),
    ("/sdapi/v1/txt2img", {"prompt": "x", "batch_size": "many"}, "batch_size: Input should be a valid integer"),
    ("/glide/v1/jobs", {"command": "generate", "prompt": "x", "model": "shapes", "num": 17}, "(--max-images)"),
    ("/glide/v1/jobs", {"command": "generate", "prompt": "x", "model": "shapes", "upsample-steps": "ddim2000"}, "(--max-steps)"),
])
def test_one_request_is_capped(server, route, body, fragment):
    answer = server.client.post(route, json=body)
    assert answer.status_code == 422 and fragment in answer.json()["detail"], answer.text
    assert server.written() == []


def test_the_roles_of_the_manifest_are_shown(server):
    options = server.client.get(f"{A1111}/options").json()
    assert options["sd_model_checkpoint"] == "shapes"
    assert {options["glide_roles"][role] for role in ("base", "upsample", "inpaint", "clip", "unclip-decoder")} == {
        "shapes", "shapes-upsample", "shapes-inpaint", "shapes-clip", "shapes-decoder"}
    roles = server.client.get("/glide/v1/models").json()["roles"]
    assert roles["base"] == {"model": "shapes", "kind": "base", "from": "defaults", "present": True}
    generate = {o["name"]: o for o in server.client.get("/glide/v1/commands").json()["generate"]["options"]}
    assert generate["model"]["default"] == "shapes" and generate["upsample-model"]["default"] == "shapes-upsample"
    made = server.run(command="generate", prompt=SCENE, seed=2, steps="3", **{"upsample-steps": "2"})  # no model named
    assert made["state"] == "done" and made["files"][0]["settings"]["model"] == "shapes"
