"""The small unCLIP in models/ (shapes-clip, shapes-prior, shapes-decoder; trained with `glide
train --kind clip|unclip-prior|unclip-decoder` on the shapes data set, models/README.md): its
pictures follow the prompt's colours, its variations keep a picture's colours, and its CLIP
finds held-out pictures' captions. Measured on the pixels as test_small_model.py measures
GLIDE's shapes model; the figures over 16 seeds are in models/README.md
(benchmarks/unclip_shapes.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glidecli.files.fetch import fetch_entry
from glidecli.files.manifest import load_manifest
from glidecli.nets.checkpoint import load_network
from glidecli.nets.tokenizer import ClipTokenizer
from glidecli.render.engine import Job, RenderOptions, Session, Stage
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, ClipModels, render_unclip, render_vary
from glidecli.train.clip_recipe import top1_retrieval
from glidecli.train.dataset import scan_dataset
from glidecli.train.shapes import EVAL_SCENES, draw_scene, scene_colours, shape_caption, write_shapes
from helpers.paths import MODELS

MANIFEST = MODELS / "weights.toml"
CLIP = ClipModels("shapes-clip", "shapes-prior-stats")
PRIOR = Stage("shapes-prior", DEFAULT_PRIOR.sampler, scale=4.0)
DECODER = Stage("shapes-decoder", DEFAULT_DECODER.sampler, scale=3.0)

pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"the small models are absent: {MANIFEST}")


@pytest.fixture(scope="module")
def session() -> Session:
    return Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)


def colours(image: Image.Image) -> tuple[str, str]:
    return scene_colours(np.asarray(image.convert("RGB"), dtype=np.float64))


def test_the_entries_are_small_and_beside_the_manifest():
    manifest = load_manifest(MANIFEST)
    for name, kind in (("shapes-clip", "openclip"), ("shapes-prior", "unclip-prior"), ("shapes-prior-stats", "clip-stats"), ("shapes-decoder", "unclip-decoder")):
        entry = manifest.model(name)
        assert entry.kind == kind and entry.source.path.parent == MODELS
        assert entry.source.path.stat().st_size < 8_000_000, name


def test_unclip_pictures_have_the_prompted_colours(session):
    jobs = [Job(shape_caption(*scene), seed=0, index=i) for i, scene in enumerate(EVAL_SCENES)]
    with torch.no_grad():
        done = list(render_unclip(session, jobs, PRIOR, DECODER, None, clip=CLIP, options=RenderOptions(batch_size=8)))
    right = sum(colours(d.image) == (scene[0], scene[2]) for d, scene in zip(done, EVAL_SCENES))
    assert right >= 7, right  # 16 seeds: see models/README.md


def test_variations_keep_the_pictures_colours(session, tmp_path):
    kept = 0
    for k, scene in enumerate(EVAL_SCENES):
        source = tmp_path / f"scene-{k}.png"
        draw_scene(scene[0], scene[1], scene[2], 32).save(source)
        with torch.no_grad():
            (done,) = list(render_vary(session, [Job("", 1, 0)], source, DECODER, None, clip=CLIP))
        kept += colours(done.image) == (scene[0], scene[2])
    assert kept >= 6, kept


def test_the_clip_finds_held_out_captions(tmp_path):
    manifest = load_manifest(MANIFEST)
    list(write_shapes(tmp_path / "held-out", 64, size=64, seed=999))
    entry = manifest.model("shapes-clip")
    model = load_network("openclip", entry.arch, fetch_entry(entry, progress=False))
    accuracy, chance, _ = top1_retrieval(model, scan_dataset(tmp_path / "held-out"), ClipTokenizer(entry.arch.text_ctx), entry.arch, "cpu")
    assert accuracy > 0.8 and chance < 0.05, (accuracy, chance)
