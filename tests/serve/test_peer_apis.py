"""The A1111 subset and OpenAI's images API: their routes, their fields' mappings, and what
they refuse."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from helpers.serving import b64, png_bytes, wait_until

LONG = {"prompt": "x", "steps": 400, "sampler_name": "DDPM", "override_settings": {"sd_model_checkpoint": "shapes"}}


def decoded(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_a1111_models_options_and_samplers(server):
    assert [m["model_name"] for m in server.client.get("/sdapi/v1/sd-models").json()] == ["shapes", "shapes-seq", "shapes-words"]  # the base models of models/weights.toml
    assert server.client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "shapes"  # no 'base' here: the first base model
    assert server.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "shapes", "CLIP_stop_at_last_layers": 2}).status_code == 200
    assert server.client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "shapes"
    wrong = server.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "shapes-upsample"})
    assert wrong.status_code == 422 and "no checkpoint 'shapes-upsample'" in wrong.json()["detail"]
    samplers = {s["name"]: s["aliases"] for s in server.client.get("/sdapi/v1/samplers").json()}
    assert "euler a" in samplers["dpmpp_2m_sde"] and "euler" in samplers["ddim"] and "lms" in samplers["plms"]
    assert [s["name"] for s in server.client.get("/sdapi/v1/schedulers").json()] == ["automatic"]
    assert server.client.get("/sdapi/v1/sd-vae").json() == []
    assert [lora["name"] for lora in server.client.get("/sdapi/v1/loras").json()] == ["shapes-zorb"]  # models/weights.toml's adapter
    assert server.client.post("/sdapi/v1/skip").json() == {}  # nothing running: nothing to stop


@pytest.mark.parametrize("name, glide", [("DPM++ 2M Karras", "dpmpp_2m"), ("Euler", "ddim"), ("DDIM", "ddim"), ("LMS", "plms"),
                                          ("DPM++ 2M SDE Karras", "dpmpp_2m_sde"), ("ddpm", "ddpm")])
def test_a1111_sampler_names_map_to_the_nearest(server, name, glide):
    body = {"prompt": "a red circle", "steps": 4, "seed": 2, "sampler_name": name, "override_settings": {"sd_model_checkpoint": "shapes"}}
    answer = server.client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["info"])["sampler_name"] == glide


def test_a1111_batches_sizes_and_random_seeds(server):
    body = {"prompt": "a red circle", "steps": 3, "seed": -1, "batch_size": 2, "n_iter": 2, "width": 128, "height": 64,
            "override_settings": {"sd_model_checkpoint": "shapes"}, "some_extension_field": 1}
    answer = server.client.post("/sdapi/v1/txt2img", json=body).json()
    info = json.loads(answer["info"])
    assert info["ignored_fields"] == ["some_extension_field"]
    assert len(answer["images"]) == 4 and info["all_seeds"] == [info["seed"] + k for k in range(4)]
    assert decoded(answer["images"][0]).size == (128, 64) and (info["width"], info["height"]) == (128, 64)
    assert len(info["infotexts"]) == 4 and info["infotexts"][0].startswith("a red circle\n")


@pytest.mark.parametrize("field, value", [("restore_faces", True), ("styles", ["cinematic"]), ("tiling", True),
                                           ("subseed_strength", 0.5), ("script_name", "x/y plot"), ("alwayson_scripts", {"controlnet": {}})])
def test_a1111_fields_that_would_change_the_picture_are_refused(server, field, value):
    answer = server.client.post("/sdapi/v1/txt2img", json={"prompt": "x", field: value})
    assert answer.status_code == 422 and answer.json()["detail"].startswith(f"{field}=") and server.written() == []


def test_a1111_img2img_starts_from_the_picture(server, picture):
    body = {"prompt": "a red circle", "steps": 10, "seed": 3, "init_images": [b64(png_bytes(picture))], "denoising_strength": 0.3,
            "override_settings": {"sd_model_checkpoint": "shapes"}}
    answer = server.client.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    made = decoded(answer.json()["images"][0])
    settings = json.loads(made.text["glide"])
    assert settings["strength"] == 0.3 and settings["init_image"].startswith("upload:init-image sha256:")
    assert len(server.client.post("/sdapi/v1/img2img", json={**body, "init_images": []}).json()["detail"]) > 0


def test_a1111_progress_and_interrupt_keep_finished_pictures(server):
    import threading

    results = {}
    call = threading.Thread(target=lambda: results.update(answer=server.client.post("/sdapi/v1/txt2img", json={**LONG, "batch_size": 3, "n_iter": 1})))
    call.start()
    wait_until(lambda: server.service.queue.running() and server.service.queue.running()[0].images_done >= 1 and server.service.queue.running()[0].step > 0)
    progress = server.client.get("/sdapi/v1/progress").json()
    assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] in (400, 15) and progress["state"]["job_count"] == 1
    assert server.client.post("/sdapi/v1/interrupt").status_code == 200
    call.join(60)
    answer = results["answer"]
    assert answer.status_code == 200 and 1 <= len(answer.json()["images"]) < 3
    assert json.loads(answer.json()["info"])["interrupted"] is True
    assert len(server.written()) == len(answer.json()["images"])
    assert server.client.get("/sdapi/v1/progress").json()["progress"] == 0


def test_openai_edits_repaint_the_transparent_part_of_the_mask(server, picture, square_mask):
    mask = np.full((32, 32, 4), 255, np.uint8)
    mask[..., 3] = np.where(square_mask > 0, 0, 255)  # OpenAI: transparent = repaint
    files = {"image": ("i.png", png_bytes(picture)), "mask": ("m.png", png_bytes(mask))}
    answer = server.client.post("/v1/images/edits", data={"prompt": "a green circle", "model": "shapes", "n": "1"}, files=files)
    assert answer.status_code == 200, answer.text
    made = np.asarray(decoded(answer.json()["data"][0]["b64_json"]).convert("RGB"))
    keep = square_mask == 0
    assert np.array_equal(made[keep], picture[keep]) and not np.array_equal(made[~keep], picture[~keep])
    url = server.client.post("/v1/images/edits", data={"prompt": "x", "model": "shapes-inpaint", "response_format": "url"}, files=files).json()
    assert url["data"][0]["url"].startswith("http://127.0.0.1:7860/glide/v1/images/")
    opaque = {"image": files["image"], "mask": ("m.png", png_bytes(picture))}
    assert "must have transparency" in server.client.post("/v1/images/edits", data={"prompt": "x"}, files=opaque).json()["detail"]


def test_openai_variations_run_vary(server, picture, tiny_unclip_manifest):
    unclip = server.make(manifest=tiny_unclip_manifest)
    answer = unclip.client.post("/v1/images/variations", data={"n": "2", "size": "32x32"}, files={"image": ("p.png", png_bytes(picture))})
    assert answer.status_code == 200, answer.text
    made = [decoded(item["b64_json"]) for item in answer.json()["data"]]
    assert len(made) == 2 and made[0].size == (32, 32) and json.loads(made[0].text["glide"])["command"] == "vary"


@pytest.mark.parametrize("body, fragment", [
    ({"prompt": "x", "output_format": "gif"}, "output_format: Input should be 'png', 'jpeg' or 'webp'"),
    ({"prompt": "x", "output_format": "jpeg", "output_compression": 101}, "output_compression: Input should be less than or equal to 100"),
    ({"prompt": "x", "n": 0}, "n: Input should be greater than or equal to 1"),
    ({"prompt": "x", "size": "big"}, "not WIDTHxHEIGHT"),
    ({"prompt": "x", "size": "100x100", "model": "shapes"}, "--width"),
    ({"prompt": "x", "model": "shapes-upsample"}, "is not a base or unclip-prior model"),
    ({"prompt": "x", "response_format": "gif"}, "response_format"),
    ({"n": 1}, "prompt: Field required"),
    ({"prompt": "x", "temperature": 1}, "unknown field 'temperature'"),
])
def test_openai_refusals(server, body, fragment):
    answer = server.client.post("/v1/images/generations", json=body)
    assert answer.status_code == 422 and fragment in answer.json()["detail"], answer.text
    assert server.written() == []


def test_openai_output_formats_carry_the_settings(server):
    from glidecli.files.pictures import read_picture_record

    body = {"prompt": "a red circle on a blue background", "model": "shapes", "n": 1}
    png = server.client.post("/v1/images/generations", json=body).json()
    seed = read_picture_record(base64.b64decode(png["data"][0]["b64_json"]))["seed"]
    body["prompt"] = "a red circle on a blue background"
    answers = {}
    for output_format, compression in (("webp", 100), ("jpeg", 80)):
        answer = server.client.post("/v1/images/generations", json={**body, "output_format": output_format, "output_compression": compression})
        assert answer.status_code == 200 and answer.json()["output_format"] == output_format, answer.text
        answers[output_format] = base64.b64decode(answer.json()["data"][0]["b64_json"])
    assert Image.open(io.BytesIO(answers["webp"])).format == "WEBP" and Image.open(io.BytesIO(answers["jpeg"])).format == "JPEG"
    for data in answers.values():
        record = read_picture_record(data)
        assert record["command"] == "generate" and record["prompt"] == body["prompt"]
    again = server.client.post("/glide/v1/jobs", json={"command": "generate", "prompt": body["prompt"], "model": "shapes", "seed": seed,
                                                        "upsample-model": "shapes-upsample", "format": "webp", "quality": 100})
    job = server.service.queue.get(again.json()["id"])
    assert server.service.queue.wait(job, 120) and job.files[0]["name"].endswith(".webp")
    same = np.asarray(Image.open(server.out / job.files[0]["name"]).convert("RGB"))
    first = np.asarray(Image.open(io.BytesIO(base64.b64decode(png["data"][0]["b64_json"]))).convert("RGB"))
    assert np.array_equal(same, first)  # webp at 100 is lossless
    names = [item["name"] for item in server.client.get("/glide/v1/gallery").json()["images"]]
    assert any(name.endswith(".webp") for name in names) and any(name.endswith(".jpg") for name in names)
