"""`glide serve` as a user starts it: a live uvicorn on a free loopback port, a job over real
HTTP, Ctrl-C; and the options it refuses before listening."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from helpers.serving import start_server

pytest.importorskip("uvicorn")


def call(url: str, body: dict | None = None, method: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def test_a_live_server_renders_and_stops_on_ctrl_c(tmp_path):
    process, base = start_server(tmp_path)
    try:
        assert call(f"{base}/glide/v1/health")["status"] == "ok"
        job = call(f"{base}/glide/v1/jobs", {"command": "generate", "prompt": "a red circle", "model": "shapes", "size": 32, "steps": 3, "seed": 9})
        deadline = time.monotonic() + 60
        while (status := call(f"{base}/glide/v1/jobs/{job['id']}"))["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status["state"] == "done" and (tmp_path / "out" / status["files"][0]["name"]).is_file()
        with urllib.request.urlopen(f"{base}{status['files'][0]['url']}", timeout=10) as picture:
            assert picture.read(8) == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(urllib.error.HTTPError) as refused:
            call(f"{base}/glide/v1/jobs", {"command": "generate", "prompt": "x", "scale": -1})
        assert refused.value.code == 422
    finally:
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=30)[1]
    assert process.returncode == 0, rest
    assert "Traceback" not in rest


@pytest.mark.parametrize("args, fragment", [
    (["--host", "0.0.0.0"], "give --token too"),
    (["--host", "0.0.0.0", "--token", "short"], "fewer than 8 characters"),
    (["--max-queue", "0"], "--max-queue"),
])
def test_options_refused_before_listening(tmp_path, args, fragment):
    env = {**os.environ, "GLIDE_SERVE_TOKEN": ""}
    env.pop("GLIDE_SERVE_TOKEN")
    done = subprocess.run([sys.executable, "-m", "glidecli", "serve", "--port", "0", "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=60, env=env)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1 and fragment in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "glidecli", "serve", "--port", str(port), "--out", str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")
