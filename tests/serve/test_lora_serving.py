"""LoRA adapters in `glide serve`: /sdapi/v1/loras lists the manifest's, prompts select them
with <lora:NAME:WEIGHT> (removed from the text), the native API takes `lora`; a warm server
switches adapters and its base pictures come back bit for bit."""

from __future__ import annotations

import numpy as np
from PIL import Image

from helpers.lora import shapes_adapter, shapes_manifest_with
from helpers.serving import FAST, Server


def _server(tmp_path) -> Server:
    shapes_adapter(tmp_path / "strong", seed=1)
    return Server(tmp_path, shapes_manifest_with(tmp_path / "weights.toml", {"strong": tmp_path / "strong"}))


def _pixels(status: dict, server: Server) -> np.ndarray:
    assert status["state"] == "done", status
    return np.asarray(Image.open(server.out / status["files"][0]["name"]))


def test_tags_and_the_lora_option_select_manifest_adapters(server, tmp_path):
    lora = _server(tmp_path / "lora")
    try:
        listed = lora.client.get("/sdapi/v1/loras").json()
        assert [entry["name"] for entry in listed] == ["shapes-zorb", "strong"] and listed[1]["path"].endswith("strong")
        plain = lora.run(command="generate", prompt="a red circle", seed=3, **FAST)
        tagged = lora.run(command="generate", prompt="a red circle <lora:strong:0.7>", seed=3, **FAST)
        option = lora.run(command="generate", prompt="a red circle", lora=["strong:0.7"], seed=3, **FAST)
        plain_again = lora.run(command="generate", prompt="a red circle", seed=3, **FAST)
        assert np.array_equal(_pixels(tagged, lora), _pixels(option, lora))
        assert not np.array_equal(_pixels(tagged, lora), _pixels(plain, lora))
        assert np.array_equal(_pixels(plain, lora), _pixels(plain_again, lora))
        meta = tagged["files"][0]["settings"]
        assert meta["prompt"] == "a red circle" and meta["lora"][0]["name"] == "strong"
        a1111 = lora.client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle <lora:nowhere:1>", "steps": 3, "override_settings": {"sd_model_checkpoint": "shapes"}})
        assert a1111.status_code == 422 and "no adapter of that name" in a1111.json()["detail"]
        bad_weight = lora.submit(command="generate", prompt="a red circle <lora:strong:x>", **FAST)
        assert bad_weight.status_code == 422 and "is not a number" in bad_weight.json()["detail"]
        server_path = lora.submit(command="generate", prompt="a red circle", lora=[str(tmp_path / "lora" / "strong")], **FAST)
        assert server_path.status_code == 422 and "no adapter of that name" in server_path.json()["detail"]
    finally:
        lora.close()
