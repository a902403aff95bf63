"""The native API's jobs on the shapes models: every route, events in order, cancelling a
queued and a running job, warm models, the queue's bound, failing jobs and two workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glidecli.render import engine as render_engine
from glidecli.render import session as render_session
from helpers.glide_cli import invoker
from helpers.paths import MODELS
from helpers.serving import FAST, wait_until

LONG = {**FAST, "sampler": "ddpm", "steps": "400"}  # about a second per job: long enough to catch it running


def test_a_job_reports_its_files_with_their_settings(server):
    status = server.run(command="generate", prompt="a red circle", seed=11, num=2, **FAST)
    assert status["state"] == "done" and status["images"] == 2 and status["images_done"] == 2
    names = [f["name"] for f in status["files"]]
    assert names == ["00000-11-a-red-circle.png", "00001-12-a-red-circle.png"]
    assert [p.name for p in server.written()] == names
    first = status["files"][0]
    assert first["settings"]["seed"] == 11 and first["settings"]["model"] == "shapes" and first["settings"]["steps"] == "3"
    picture = server.client.get(first["url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content == server.written()[0].read_bytes()
    # The next job numbers on from the files there: nothing is overwritten.
    again = server.run(command="generate", prompt="a red circle", seed=11, **FAST)
    assert again["files"][0]["name"] == "00002-11-a-red-circle.png"
    assert server.client.get("/glide/v1/gallery").json()["images"][0]["name"] == "00002-11-a-red-circle.png"


def test_events_come_in_order(server, monkeypatch):
    from glidecli.serve import jobs

    monkeypatch.setattr(jobs._JobReporter, "STEP_EVENT_INTERVAL", 0.0)  # every step an event
    status = server.run(command="generate", prompt="a blue square", seed=3, **FAST)
    text = server.client.get(f"/glide/v1/jobs/{status['id']}/events").text
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "queued" and kinds[1] == "running" and kinds[-2:] == ["image", "done"]
    steps = [(e["stage"], e["step"], e["total"]) for e in events if e["event"] == "step"]
    assert steps == [("base", 1, 3), ("base", 2, 3), ("base", 3, 3), ("upsample", 1, 2), ("upsample", 2, 2)]
    event_names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert event_names == kinds


def test_step_events_are_thinned_but_keep_each_stages_ends(server, monkeypatch):
    from glidecli.serve import jobs

    monkeypatch.setattr(jobs._JobReporter, "STEP_EVENT_INTERVAL", 1000.0)
    status = server.run(command="generate", prompt="a blue square", seed=3, **{**FAST, "steps": "40"})
    text = server.client.get(f"/glide/v1/jobs/{status['id']}/events").text
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [(e["stage"], e["step"]) for e in events if e["event"] == "step"] == [("base", 1), ("base", 40), ("upsample", 1), ("upsample", 2)]
    assert (status["stage"], status["step"], status["total"]) == ("upsample", 2, 2)  # the job itself follows every step


def test_cancel_while_queued_and_while_running_leaves_no_file(server):
    running = server.submit(command="generate", prompt="a red circle", seed=1, **LONG).json()
    queued = server.submit(command="generate", prompt="a red circle", seed=2, **LONG).json()
    first = server.service.queue.get(running["id"])
    wait_until(lambda: first.step > 0)
    assert queued["state"] == "queued"
    assert server.client.get(f"/glide/v1/jobs/{queued['id']}").json()["position"] == 0
    cancelled = server.client.delete(f"/glide/v1/jobs/{queued['id']}").json()
    assert cancelled["state"] == "cancelled"
    assert server.client.delete(f"/glide/v1/jobs/{running['id']}").status_code == 200
    assert server.service.queue.wait(first, 30)
    status = server.client.get(f"/glide/v1/jobs/{running['id']}").json()
    assert status["state"] == "cancelled" and status["step"] < 400 and status["files"] == []
    assert server.written() == []
    assert server.client.delete(f"/glide/v1/jobs/{running['id']}").status_code == 409  # finished already


def test_a_second_request_reuses_the_loaded_models(server, monkeypatch):
    loads = []
    real = render_session.load_network
    monkeypatch.setattr(render_session, "load_network", lambda kind, *args: loads.append(kind) or real(kind, *args))
    server.run(command="generate", prompt="a red circle", seed=1, **FAST)
    server.run(command="generate", prompt="a green circle", seed=2, **FAST)
    assert sorted(loads) == ["base", "upsample"]
    assert server.client.get("/glide/v1/health").json()["loaded"] == {"cpu": ["shapes", "shapes-upsample"]}


def test_a_full_queue_answers_503_with_retry_after(server):
    small = server.make(max_queue=1)
    running = small.submit(command="generate", prompt="x", seed=1, **LONG).json()
    wait_until(lambda: small.service.queue.get(running["id"]).state == "running")
    assert small.submit(command="generate", prompt="x", seed=2, **LONG).status_code == 202
    full = small.submit(command="generate", prompt="x", seed=3, **LONG)
    assert full.status_code == 503 and full.headers["retry-after"] == "5" and "--max-queue 1" in full.json()["detail"]
    for job in small.service.queue.jobs():
        small.service.queue.cancel(job)


def test_the_server_survives_a_job_that_raises(server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(render_engine, "render_generate", broken)
    failed = server.run(command="generate", prompt="x", seed=1, **FAST)
    assert failed["state"] == "failed" and failed["error"] == "internal error: RuntimeError: boom"
    monkeypatch.undo()
    assert server.run(command="generate", prompt="x", seed=1, **FAST)["state"] == "done"


def test_a_failing_job_says_what_the_cli_says(server, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "weights.toml"
    broken.write_text((MODELS / "weights.toml").read_text().replace('path = "shapes.safetensors"', 'path = "missing.safetensors"'))
    monkeypatch.chdir(tmp_path)
    cli = invoker(capsys, monkeypatch)("generate", "x", "--weights", broken, "--model", "shapes", "--size", "32", "--seed", "1", "--quiet")
    assert cli.code == 1
    other = server.make(manifest=broken)
    failed = other.run(command="generate", prompt="x", seed=1, model="shapes", size=32)
    assert failed["state"] == "failed" and "error: " + failed["error"] == cli.err.strip().splitlines()[-1]
    assert other.written() == []
    assert other.client.get("/glide/v1/health").json()["status"] == "ok"


def test_two_workers_share_the_queue_and_keep_the_seed_contract(server):
    one = server.run(command="generate", prompt="a red circle", seed=5, num=2, **FAST)
    two = server.make(devices="cpu,cpu")
    submitted = [two.submit(command="generate", prompt="a red circle", seed=5 + k, **FAST).json() for k in range(2)]
    jobs = [two.service.queue.get(s["id"]) for s in submitted]
    for job in jobs:
        assert two.service.queue.wait(job, 120) and job.state == "done"
    assert {job.worker for job in jobs} == {"cpu#0", "cpu#1"}
    alone = [np.asarray(Image.open(server.out / f["name"])) for f in one["files"]]
    shared = [np.asarray(Image.open(two.out / job.files[0]["name"])) for job in jobs]
    assert all(np.array_equal(a, b) for a, b in zip(alone, shared))


def test_the_reference_routes(server):
    commands = server.client.get("/glide/v1/commands").json()
    assert set(commands) == {"generate", "clip-guide", "upsample", "inpaint", "outpaint", "unclip", "vary", "blend"}
    scale = next(o for o in commands["generate"]["options"] if o["name"] == "scale")
    assert scale["default"] == 3.0 and scale["aliases"] == ["cfg-scale"] and scale["minimum"] == 0.0
    models = {m["name"]: m for m in server.client.get("/glide/v1/models").json()["models"]}
    assert models["shapes"]["kind"] == "base" and models["shapes"]["cached"] is True
    samplers = [s["name"] for s in server.client.get("/glide/v1/samplers").json()["samplers"]]
    assert samplers == ["ddpm", "ddim", "plms", "dpmpp_2m", "dpmpp_2m_sde"]
    health = server.client.get("/glide/v1/health").json()
    assert health["status"] == "ok" and health["queued"] == 0 and health["devices"] == ["cpu"]
    page = server.client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert server.client.get("/static/app.js").status_code == 200
    assert server.client.get("/glide/v1/jobs/nope").status_code == 404


@pytest.mark.parametrize("form", [False, True], ids=["json", "multipart"])
def test_pictures_come_as_base64_or_as_files(server, picture, square_mask, form):
    from helpers.serving import b64, png_bytes

    options = {"command": "inpaint", "prompt": "a green circle", "model": "shapes-inpaint", "size": "32", "steps": "3", "seed": "4"}
    if form:
        response = server.client.post("/glide/v1/jobs", data=options, files={"image": ("x.png", png_bytes(picture)), "mask": ("y", png_bytes(square_mask))})
    else:
        response = server.client.post("/glide/v1/jobs", json={**options, "image": b64(png_bytes(picture)), "mask": "data:image/png;base64," + b64(png_bytes(square_mask))})
    assert response.status_code == 202, response.text
    job = server.service.queue.get(response.json()["id"])
    assert server.service.queue.wait(job, 60) and job.state == "done", job.error
    settings = job.files[0]["settings"]
    assert settings["image"].startswith("upload:image sha256:") and settings["mask"].startswith("upload:mask sha256:")
    made = np.asarray(Image.open(server.out / job.files[0]["name"]))
    keep = square_mask == 0
    assert np.array_equal(made[keep], picture[keep]) and not np.array_equal(made[~keep], picture[~keep])
    assert list(server.service.uploads_root.iterdir()) == []  # the uploads went with the job
