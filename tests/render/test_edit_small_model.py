"""Outpainting and inpainting big pictures with the small inpainting model of models/
(`shapes-inpaint`, 32x32, repaints object or background in the prompt's colour), measured
on the pixels: the new border takes the background colour the prompt asks for, the
original picture sits in the canvas bit for bit, and a big picture changes only inside its
feathered mask, where the prompt's colour appears."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidecli.files.manifest import load_manifest
from glidecli.render.engine import Job, RenderOptions, Session, Stage
from glidecli.render.outpaint import OutpaintSource, render_outpaint
from glidecli.render.pipeline import SamplerChoice
from glidecli.render.region_inpaint import RegionSource, render_inpaint_region
from glidecli.render.regions import Extension, feather_weights
from glidecli.train.shapes import SHAPE_COLOURS, draw_scene, nearest_colour, shape_caption
from helpers.paths import MODELS

MANIFEST = MODELS / "weights.toml"
MODEL = "shapes-inpaint"
STAGE = Stage(MODEL, SamplerChoice("ddpm", "25"), scale=3.0)  # as the inpainting tests of test_small_model.py
SEEDS = (0, 1, 2, 3)

pytestmark = pytest.mark.skipif(
    not MANIFEST.is_file() or MODEL not in load_manifest(MANIFEST).models, reason=f"no {MODEL} in {MANIFEST}"
)


@pytest.fixture(scope="module")
def session() -> Session:
    return Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)


def colour_shares(pixels: np.ndarray) -> Counter:
    """Share of the pixels [N, 3] nearest to each data set colour."""
    names = Counter(nearest_colour(p) for p in pixels)
    return Counter({name: count / len(pixels) for name, count in names.items()})


def outpaint(session, source: Path, prompt: str, extension: Extension, seeds=SEEDS, batch_size=None) -> list[np.ndarray]:
    jobs = [Job(prompt, seed, index) for index, seed in enumerate(seeds)]
    done = render_outpaint(session, jobs, OutpaintSource(source, extension), STAGE, None, options=RenderOptions(batch_size=batch_size or len(jobs)))
    return [np.asarray(item.image) for item in done]


def test_outpainting_extends_the_background_the_prompt_asks_for(session, tmp_path):
    """A red circle on blue, 32x32, grown by 16 pixels left and right (two 32-pixel windows,
    each half picture): with a blue-background prompt the new border is mostly blue, with
    a green-background prompt mostly green; the picture stays in the middle bit for bit.
    (Measured: blue 69-81% of the border with the blue prompt, green 66-85% with the green
    one; the rest is mostly red, because this model draws its centred object in every window.)"""
    picture = draw_scene("red", "circle", "blue", 32)
    picture.save(tmp_path / "circle.png")
    original = np.asarray(picture)
    extension = Extension(left=16, right=16)
    border = np.ones((32, 64), dtype=bool)
    border[:, 16:48] = False
    shares = {}
    for background in ("blue", "green"):
        canvases = outpaint(session, tmp_path / "circle.png", shape_caption("red", "circle", background), extension)
        for canvas in canvases:
            assert canvas.shape == (32, 64, 3)
            assert np.array_equal(canvas[:, 16:48], original)  # the picture, bit for bit at its offset
        shares[background] = [colour_shares(canvas[border]) for canvas in canvases]
    print({bg: [round(s[bg], 2) for s in found] for bg, found in shares.items()})
    for background, found in shares.items():
        assert all(share[background] >= 0.5 for share in found), (background, found)
        assert all(share.most_common(1)[0][0] == background for share in found), (background, found)
    # the prompt decides: blue is the border's colour only when the prompt asks for it
    assert min(s["blue"] for s in shares["blue"]) > max(s["blue"] for s in shares["green"]) + 0.3


def test_outpainting_is_reproducible_from_the_seed(session, tmp_path):
    """Corners too (all four sides): a rerun gives the same canvas byte for byte; the picture
    of seed S + 1 alone matches image 1 of a batch (batched kernels may round the last
    float bits differently, as for every glide picture: within a few levels)."""
    draw_scene("red", "circle", "blue", 32).save(tmp_path / "circle.png")
    extension = Extension(left=8, right=4, top=12, bottom=6)
    prompt = shape_caption("red", "circle", "blue")
    first = outpaint(session, tmp_path / "circle.png", prompt, extension, seeds=(7, 8), batch_size=2)
    again = outpaint(session, tmp_path / "circle.png", prompt, extension, seeds=(7, 8), batch_size=2)
    alone = outpaint(session, tmp_path / "circle.png", prompt, extension, seeds=(8,), batch_size=1)
    assert first[0].shape == (50, 44, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])
    difference = np.abs(first[1].astype(int) - alone[0])
    assert difference.max() <= 8 and difference.mean() < 0.5, (difference.max(), difference.mean())


def test_a_big_picture_changes_only_inside_its_feathered_mask(session, tmp_path):
    """A 320x256 blue picture with a red circle drawn at 128x128 somewhere in it; the mask
    is the circle's middle (64x64). The square around it (context 32) is 128 pixels, inpainted
    at 32x32 and scaled back 4x: the masked middle takes the prompt's colour, the picture
    keeps its size, and every pixel outside the 6-pixel feather is the source's byte."""
    canvas = Image.new("RGB", (320, 256), SHAPE_COLOURS["blue"])
    canvas.paste(draw_scene("red", "circle", "blue", 128), (150, 70))
    canvas.save(tmp_path / "big.png")
    mask = np.zeros((256, 320), dtype=bool)
    mask[70 + 32 : 70 + 96, 150 + 32 : 150 + 96] = True
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    source = np.asarray(canvas)
    outside = feather_weights(mask, 6) == 0
    region = RegionSource(tmp_path / "big.png", tmp_path / "mask.png", context=32, feather=6)
    for colour in ("yellow", "green"):
        jobs = [Job(shape_caption(colour, "circle", "blue"), seed, index) for index, seed in enumerate(SEEDS)]
        done = list(render_inpaint_region(session, jobs, region, STAGE, None, options=RenderOptions(batch_size=len(jobs))))
        for item in done:
            result = np.asarray(item.image)
            assert result.shape == source.shape
            assert np.array_equal(result[outside], source[outside])
            middle = result[70 + 44 : 70 + 84, 150 + 44 : 150 + 84].reshape(-1, 3)
            assert colour_shares(middle)[colour] >= 0.75, (colour, colour_shares(middle))
            assert item.meta["region"] == [150, 70, 278, 198] and item.meta["fit"] == "region"
