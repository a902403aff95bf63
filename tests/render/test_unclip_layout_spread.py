"""--keep-layout where the object's place is free: models/shapes-decoder-spread (trained on
`glide dataset shapes --spread 0.25`) puts a variation's object where the noise says, so an
off-centre picture's fresh-noise variations land in other places, while --keep-layout gives the
picture back, place included, and its text diff recolours the object (the counts over 16 seeds,
the place at each amount included: benchmarks/unclip_layout.py, models/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glidecli.files.manifest import load_manifest
from glidecli.render.engine import Job, RenderOptions, Session, Stage
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, ClipModels, TextDiff, VaryJob, render_unclip, render_vary
from glidecli.train.shapes import SHAPE_COLOURS
from helpers.paths import MODELS

SHAPES = MODELS / "weights.toml"
CLIP = ClipModels("shapes-clip", "shapes-prior-stats")
PRIOR = Stage("shapes-prior", DEFAULT_PRIOR.sampler, scale=4.0)
DECODER = Stage("shapes-decoder-spread", DEFAULT_DECODER.sampler, scale=3.0)
SOURCE = "a red circle on a blue background"
NAMES = list(SHAPE_COLOURS)
PALETTE = np.array(list(SHAPE_COLOURS.values()), dtype=np.float64)

pytestmark = pytest.mark.skipif(
    not SHAPES.is_file() or "shapes-decoder-spread" not in load_manifest(SHAPES).models, reason=f"the spread decoder is absent: {SHAPES}"
)


def scene(picture: Image.Image) -> tuple[np.ndarray, str]:
    """(the object's mask, its colour): the commonest of the 8 colours is the background, the
    commonest of the others the object."""
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
    labels = ((pixels[:, :, None, :] - PALETTE) ** 2).sum(-1).argmin(-1)
    counts = np.bincount(labels.ravel(), minlength=len(NAMES))
    background = int(counts.argmax())
    counts[background] = 0
    colour = int(counts.argmax())
    return labels == colour, NAMES[colour]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def centre(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()]) / mask.shape[0]


def test_fresh_noise_moves_an_off_centre_object_and_keep_layout_keeps_it_while_the_text_diff_recolours(tmp_path):
    session = Session(load_manifest(SHAPES), device="cpu", dtype="fp32", offline=True)
    path = tmp_path / "red-circle.png"
    # The decoder's own picture (it inverts those to a fraction of a level), the first of seeds
    # 0.. whose red circle sits off-centre.
    drawn = render_unclip(session, [Job(SOURCE, seed, seed) for seed in range(8)], PRIOR, DECODER, None, clip=CLIP, options=RenderOptions(batch_size=8))
    picture = next(done.image for done in drawn if scene(done.image)[1] == "red" and np.abs(centre(scene(done.image)[0]) - 0.5).max() > 0.12)
    picture.save(path)
    source, _ = scene(picture)

    fresh = list(render_vary(session, [Job("", 100 + seed, seed) for seed in range(4)], path, DECODER, None, clip=CLIP, options=RenderOptions(batch_size=4)))
    masks = [scene(done.image)[0] for done in fresh]
    places = np.array([centre(mask) for mask in masks])
    assert sum(iou(mask, source) < 0.5 for mask in masks) >= 2, [iou(mask, source) for mask in masks]
    assert np.linalg.norm(places[:, None] - places[None], axis=-1).max() > 0.15  # the seeds put it in different places

    jobs = [VaryJob("", 100, i, amount=amount) for i, amount in enumerate((0.0, 0.5))]
    kept = list(render_vary(session, jobs, path, DECODER, None, clip=CLIP, text_diff=TextDiff("a green circle on a blue background",
                                                                                            SOURCE),
                            keep_layout=True, options=RenderOptions(batch_size=2)))
    found = [scene(done.image) for done in kept]
    assert [colour for _, colour in found] == ["red", "green"]
    # At amount 0 the inversion gives the picture back, its place included, where none of the fresh
    # variations of the same embedding comes as close. (At 0.5 the place holds in 12 of 16 such
    # pictures, not in this one: benchmarks/unclip_layout.py counts it over seeds.)
    assert iou(found[0][0], source) > 0.9 > max(iou(mask, source) for mask in masks)
