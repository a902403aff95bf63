"""The small unCLIP's super-resolution in models/ (shapes-sr, 32 -> 128; trained with `glide train
--kind unclip-sr` on the shapes data set, models/README.md): an `unclip-sr` entry in Karlo's
layout, and `glide unclip` with it runs the prior, the decoder and the SR, whose 128px pictures
keep the colours of the 32px ones. The figures over 8 seeds are in models/README.md
(benchmarks/unclip_sr_colours.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glidecli.files.manifest import load_manifest
from glidecli.render.engine import Job, RenderOptions, Session, Stage
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, DEFAULT_SR, ClipModels, render_unclip
from glidecli.train.shapes import EVAL_SCENES, scene_colours, shape_caption
from helpers.glide_cli import invoker
from helpers.paths import MODELS

MANIFEST = MODELS / "weights.toml"
CLIP = ClipModels("shapes-clip", "shapes-prior-stats")
PRIOR = Stage("shapes-prior", DEFAULT_PRIOR.sampler, scale=4.0)
DECODER = Stage("shapes-decoder", DEFAULT_DECODER.sampler, scale=3.0)
SR = Stage("shapes-sr", DEFAULT_SR.sampler)

pytestmark = pytest.mark.skipif(
    not MANIFEST.is_file() or "shapes-sr" not in load_manifest(MANIFEST).models, reason=f"the small SR is absent: {MANIFEST}"
)


def colours(image: Image.Image) -> tuple[str, str]:
    return scene_colours(np.asarray(image.convert("RGB"), dtype=np.float64))


def test_the_entry_is_small_and_karlos_layout():
    from safetensors import safe_open

    entry = load_manifest(MANIFEST).model("shapes-sr")
    assert entry.kind == "unclip-sr" and entry.source.path.parent == MODELS
    assert entry.source.path.stat().st_size < 6_000_000
    with safe_open(str(entry.source.path), "pt") as handle:
        parts = {key.split(".")[0] for key in handle.keys()}
    assert parts == {"model_first_steps", "model_last_step"}
    assert entry.arch.image_size == 4 * load_manifest(MANIFEST).model("shapes-decoder").arch.image_size


def test_the_128px_pictures_keep_the_32px_colours():
    session = Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)
    jobs = [Job(shape_caption(*scene), seed=0, index=i) for i, scene in enumerate(EVAL_SCENES)]
    options = RenderOptions(batch_size=8)
    with torch.no_grad():
        small = list(render_unclip(session, jobs, PRIOR, DECODER, None, clip=CLIP, options=options))
        large = list(render_unclip(session, jobs, PRIOR, DECODER, SR, clip=CLIP, options=options))
    assert {d.image.size for d in large} == {(128, 128)}
    right_small = sum(colours(d.image) == (scene[0], scene[2]) for d, scene in zip(small, EVAL_SCENES))
    right_large = sum(colours(d.image) == (scene[0], scene[2]) for d, scene in zip(large, EVAL_SCENES))
    same = sum(colours(a.image) == colours(b.image) for a, b in zip(small, large))
    assert right_large >= right_small - 1 and same >= 7, (right_small, right_large, same)


def test_glide_unclip_runs_all_three_networks(capsys, monkeypatch, tmp_path):
    glide = invoker(capsys, monkeypatch)
    made = glide("unclip", "a red circle on a blue background", "--weights", MANIFEST, "--clip-model", "shapes-clip",
                 "--prior-model", "shapes-prior", "--clip-stats", "shapes-prior-stats", "--decoder-model", "shapes-decoder",
                 "--sr-model", "shapes-sr", "--seed", "3", "-q", "--device", "cpu", "--out", tmp_path)
    assert made.code == 0, made.err
    picture = Image.open(made.paths[0])
    assert picture.size == (128, 128) and colours(picture) == ("red", "blue")
