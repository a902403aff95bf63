"""Bad input to the server: each gets one clear line with the right status, the CLI's own
message where the CLI has the same option, and nothing is written."""

from __future__ import annotations

import struct
import zlib

import pytest

from glidecli.serve.uploads import UploadLimits
from helpers.glide_cli import invoker
from helpers.paths import MODELS
from helpers.serving import FAST, b64, png_bytes

CLI_VALUES = [
    ({"scale": -1}, ["--scale", "-1"]),
    ({"scale": "inf"}, ["--scale", "inf"]),
    ({"sampler": "euler"}, ["--sampler", "euler"]),
    ({"steps": "abc"}, ["--steps", "abc"]),
    ({"num": 0}, ["-n", "0"]),
    ({"n": 10**7}, ["-n", str(10**7)]),
    ({"seed": 2**32}, ["--seed", str(2**32)]),
    ({"batch-size": "many"}, ["--batch-size", "many"]),
    ({"size": 48}, ["--size", "48"]),
    ({"width": 100, "height": 64}, ["--width", "100", "--height", "64"]),
    ({"strength": 0.5}, ["--strength", "0.5"]),
    ({"eta": "x"}, ["--eta", "x"]),
]


@pytest.mark.parametrize("options, flags", CLI_VALUES, ids=[" ".join(f) for _, f in CLI_VALUES])
def test_a_bad_value_gets_the_clis_message(server, tmp_path, capsys, monkeypatch, options, flags):
    monkeypatch.chdir(tmp_path)
    args = ["generate", "a red circle", "--weights", MODELS / "weights.toml", "--model", "shapes", "--upsample-model", "shapes-upsample"]
    cli = invoker(capsys, monkeypatch)(*args, *flags, "--out", tmp_path / "cli")
    assert cli.code == 2
    line = cli.err.strip().splitlines()[-1]
    answer = server.submit(command="generate", prompt="a red circle", **{"model": "shapes", "upsample-model": "shapes-upsample"}, **options)
    assert answer.status_code == 422
    assert "error: " + answer.json()["detail"] + " (see 'glide generate --help')" == line
    assert server.written() == [] and not (tmp_path / "cli").exists()


REFUSED = [
    ({"command": "paint", "prompt": "x"}, 422, "unknown command 'paint'"),
    ({"prompt": "x"}, 422, "give the command"),
    ({"command": "generate", "prompt": "x", "bogus": 1}, 422, "generate has no option 'bogus'"),
    ({"command": "generate", "prompt": "x", "out": "/tmp"}, 422, "generate has no option 'out'"),
    ({"command": "generate", "prompt": "x", "pattern": "../{seed}"}, 422, "generate has no option 'pattern'"),
    ({"command": "generate", "prompt": "x", "prompts-file": "/etc/passwd"}, 422, "generate has no option 'prompts-file'"),
    ({"command": "generate", "prompt": "x", "scale": 2, "cfg-scale": 3}, 422, "given twice"),
    ({"command": "generate", "prompt": 7}, 422, "is not a prompt"),
    ({"command": "generate", "model": "shapes"}, 422, "missing PROMPT"),
    ({"command": "generate", "prompt": "x", "model": "nope"}, 422, "'nope'"),
    ({"command": "upsample", "prompt": "x", "image": "/etc/passwd"}, 422, "not valid base64"),
    ({"command": "upsample", "prompt": "x", "image": "../../x.png"}, 422, "not valid base64"),
    ({"command": "upsample", "prompt": "x", "model": "shapes-upsample"}, 422, "missing IMAGE"),
    ({"command": "upsample", "prompt": "x", "image": 5}, 422, "must be base64 text or a data: URL"),
    ({"command": "upsample", "prompt": "x", "image": ["a"]}, 422, "must be base64 text"),
    ({"command": "upsample", "prompt": "x", "image": b64(b"just some text, not a picture")}, 422, "not a picture Pillow can read"),
    ({"command": "generate", "prompt": "x", "mask": b64(b"x")}, 422, "generate has no option 'mask'"),
    ({"command": "generate", "prompt": "x", "model": "shapes", "seed-walk": 3, "animate": "gif"}, 422, "use the command line"),
    ({"command": "generate", "prompt": "x AND", "model": "shapes"}, 422, "component 2 of the prompt is empty"),
]


@pytest.mark.parametrize("body, status, fragment", REFUSED, ids=[f for _, _, f in REFUSED])
def test_refused_requests(server, body, status, fragment):
    answer = server.client.post("/glide/v1/jobs", json=body)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["detail"] and "\n" not in answer.json()["detail"]
    assert server.written() == [] and list(server.service.uploads_root.iterdir()) == []


def bomb() -> bytes:
    """A PNG whose header claims 100000 x 100000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_uploads_are_capped_in_bytes_and_pixels(server, picture):
    small = server.make(limits=UploadLimits(max_bytes=2000, max_pixels=20 * 20))
    base = {"command": "upsample", "prompt": "x", "model": "shapes-upsample"}
    answer = small.client.post("/glide/v1/jobs", json={**base, "image": b64(png_bytes(picture))})
    assert answer.status_code == 413 and "32x32 pixels; the limit is 400 pixels" in answer.json()["detail"]
    noise = __import__("numpy").random.default_rng(0).integers(0, 256, (19, 19, 3), dtype="uint8")
    answer = small.client.post("/glide/v1/jobs", data=base, files={"image": ("a.png", png_bytes(noise) + b"\0" * 2000)})
    assert answer.status_code == 413 and "upload limit of 2000 bytes" in answer.json()["detail"]
    answer = server.client.post("/glide/v1/jobs", json={**base, "image": b64(bomb())})
    assert answer.status_code == 413
    answer = server.client.post("/glide/v1/jobs", content=b"x" * (server.service.config.limits.max_bytes * 5), headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert small.written() == [] and server.written() == []


def test_a_name_that_is_a_path_reaches_no_file(server, tmp_path):
    (tmp_path / "secret.png").write_bytes(b"x")
    server.run(command="generate", prompt="x", seed=1, **FAST)
    for name in ("../secret.png", "..%2Fsecret.png", "%2e%2e/secret.png", str(tmp_path / "secret.png"), "00000-1-x.png/..", "x.txt"):
        assert server.client.get(f"/glide/v1/images/{name}").status_code == 404, name
    assert server.client.get("/glide/v1/images/00000-1-x.png").status_code == 200


def test_the_token_guards_every_api_route(server):
    guarded = server.make(token="s3cret-token")
    assert guarded.client.get("/glide/v1/health").status_code == 401
    assert guarded.client.get("/glide/v1/health", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert guarded.client.post("/sdapi/v1/txt2img", json={"prompt": "x"}).status_code == 401
    assert guarded.client.post("/v1/images/generations", json={"prompt": "x"}).status_code == 401
    ok = guarded.client.get("/glide/v1/health", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200
    basic = lambda pair: {"Authorization": "Basic " + b64(pair.encode())}  # noqa: E731 - A1111's --api-auth clients
    assert guarded.client.get("/sdapi/v1/sd-models", headers=basic("user:s3cret-token")).status_code == 200
    assert guarded.client.get("/sdapi/v1/sd-models", headers=basic("user:wrong")).status_code == 401
    assert guarded.client.get("/sdapi/v1/sd-models", headers={"Authorization": "Basic %%%"}).status_code == 401
    # With the token, another origin may call it (a client elsewhere that was given the token).
    assert guarded.client.get("/glide/v1/health", headers={"Authorization": "Bearer s3cret-token", "Origin": "http://elsewhere"}).status_code == 200
    assert guarded.client.get("/").status_code == 200  # the page itself asks for the token


@pytest.mark.parametrize("headers, status", [
    ({"Host": "evil.example:7860"}, 400),
    ({"Host": "127.0.0.1.nip.io"}, 400),
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Origin": "http://127.0.0.1:8000"}, 403),
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),
    ({"Origin": "http://127.0.0.1:7860", "Sec-Fetch-Site": "same-origin"}, 202),
    ({"Host": "localhost:7860"}, 202),
])
def test_foreign_hosts_and_origins_are_refused(server, headers, status):
    answer = server.client.post("/glide/v1/jobs", json={"command": "generate", "prompt": "x", "seed": 1, **FAST}, headers=headers)
    assert answer.status_code == status, answer.text
    if status != 202:
        assert server.service.queue.jobs() == []
        picture = server.client.get("/glide/v1/gallery", headers=headers)
        assert picture.status_code == status


def test_a_cross_origin_page_cannot_read_pictures(server):
    done = server.run(command="generate", prompt="x", seed=1, **FAST)
    url = done["files"][0]["url"]
    assert server.client.get(url, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert server.client.get(url, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
