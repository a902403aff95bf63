"""The front ends' own traffic against a live `glide serve` on the shapes models: each
client's request sequence (tests/serve/data/client_traffic.json, written from its published
source) answers as the client expects; the official OpenAI client streams; the A1111 client
library (webuiapi) works; a client that goes away cancels its job."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidecli.train.shapes import draw_scene
from helpers.serving import png_bytes, start_server

httpx = pytest.importorskip("httpx")
TRAFFIC = json.loads((Path(__file__).parent / "data" / "client_traffic.json").read_text())
PICTURE = png_bytes(np.asarray(draw_scene("red", "circle", "blue", 64)))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    process, url = start_server(folder)
    yield url, folder / "out"
    process.terminate()
    process.wait(30)


def picture_at(answer: dict, where: str) -> list[Image.Image]:
    """The pictures at `where` ('images', or 'data.b64_json': each item's field)."""
    key, _, field = where.partition(".")
    items = answer[key]
    texts = [item[field] for item in items] if field else items
    return [Image.open(io.BytesIO(base64.b64decode(text))) for text in texts]


def replay(client, step: dict) -> None:
    files = {name: ("picture.png", PICTURE, "image/png") for name, value in step.get("files", {}).items() if value == "{picture}"}
    answer = client.request(step["method"], step["path"], json=step.get("json"), data=step.get("form"), files=files or None)
    expect = step["expect"]
    assert answer.status_code == expect["status"], (step["path"], answer.text)
    body = answer.json()
    for key in expect.get("keys", []):
        assert key in body, (step["path"], key)
    for key in expect.get("list_of", []):
        assert isinstance(body, list) and all(key in item for item in body), (step["path"], key)
    for key in expect.get("state_keys", []):
        assert key in body["state"]
    if "pictures" in expect:
        pictures = picture_at(body, expect["pictures"])
        assert len(pictures) == expect.get("count", 1) and all(p.format == "PNG" and p.size[0] > 0 for p in pictures)
    if "info" in expect.get("keys", []):
        info = json.loads(body["info"])
        assert isinstance(info["seed"], int) and isinstance(info["width"], int) and isinstance(info["steps"], int)
        for key in expect.get("info_keys", []):
            assert key in info
        if "info_seed" in expect:
            assert info["seed"] == expect["info_seed"]


@pytest.mark.parametrize("client_name", [name for name in TRAFFIC if not name.startswith("_")])
def test_each_clients_traffic_is_answered_as_it_expects(live, client_name):
    url, _ = live
    with httpx.Client(base_url=url, timeout=300) as client:
        for step in TRAFFIC[client_name]:
            replay(client, step)


def test_the_openai_client_generates_edits_and_streams(live):
    openai = pytest.importorskip("openai")
    url, _ = live
    client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed", timeout=300)
    assert "shapes" in [model.id for model in client.models.list()]
    made = client.images.generate(model="gpt-image-1", prompt="a red circle on a blue background", size="auto")
    assert Image.open(io.BytesIO(base64.b64decode(made.data[0].b64_json))).size == (64, 64)
    edited = client.images.edit(image=("p.png", PICTURE, "image/png"), prompt="a green circle on a blue background")
    assert edited.data[0].b64_json
    events = list(client.images.generate(prompt="a red circle on a blue background", stream=True, partial_images=2))
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    final = Image.open(io.BytesIO(base64.b64decode(events[-1].b64_json)))
    assert final.size == (64, 64) and json.loads(final.text["glide"])["command"] == "generate"


def test_the_a1111_client_library(live):
    webuiapi = pytest.importorskip("webuiapi")
    url, _ = live
    host, port = url.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port))
    api.util_set_model("shapes")
    assert api.util_get_current_model() == "shapes"
    made = api.txt2img(prompt="a red circle on a blue background", steps=8, seed=3)
    assert made.image.size == (64, 64) and made.info["seed"] == 3
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))
    painted = api.img2img(images=[made.image], mask_image=mask, prompt="a green circle on a blue background", steps=8, seed=4)
    assert painted.image.size == (64, 64) and painted.info["is_using_inpainting_conditioning"] is True
    low = Image.open(io.BytesIO(png_bytes(np.asarray(draw_scene("red", "circle", "blue", 16)))))
    assert api.extra_single_image(image=low, upscaler_1="shapes-upsample", upscaling_resize=4).image.size == (64, 64)
    assert api.png_info(made.image).info.startswith("a red circle on a blue background\nSteps: 8")


def test_a_client_that_goes_away_cancels_its_job(live):
    url, out = live
    before = sorted(out.rglob("*.png"))
    with httpx.Client(base_url=url, timeout=1.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 900, "seed": 1})
    with httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + 60
        while client.get("/sdapi/v1/progress").json()["state"]["job_count"]:
            assert time.monotonic() < deadline, "the abandoned job still runs"
            time.sleep(0.2)
    assert sorted(out.rglob("*.png")) == before
