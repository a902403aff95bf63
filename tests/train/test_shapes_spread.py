"""`glide dataset shapes --spread`: where the shapes data set's objects may sit. The default
draws the pictures that models/ was trained on (their pixels are pinned below, as the code
before the option drew them); a wider spread puts the shapes farther from the centre."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidecli.train.dataset import DatasetError
from glidecli.train.shapes import SHAPE_COLOURS, draw_scene, write_shapes
from glidecli.train.vocabulary import MAX_SHAPE_SPREAD, SHAPE_SPREAD
from helpers.glide_cli import assert_one_error_line, invoker

# write_shapes(out, 4, size=32, seed=11) before --spread existed: the sha256 of each picture's RGB
# pixels (not of the PNG, whose bytes depend on the zlib build), and its caption.
BEFORE_SPREAD = (
    ("1c6c4fbd4e9ad3ff", "a black triangle on a white background"),
    ("108e66805e6d2c8a", "a green triangle on an orange background"),
    ("95f3366b078e2068", "a black circle on a yellow background"),
    ("49056838fcaf0e49", "a red square on a blue background"),
)


@pytest.fixture
def glide(capsys, monkeypatch):
    return invoker(capsys, monkeypatch)


def pixel_hash(path: Path) -> str:
    return hashlib.sha256(Image.open(path).convert("RGB").tobytes()).hexdigest()[:16]


def object_offset(picture: Image.Image, colour: str) -> tuple[float, float]:
    """The centre of the object's bounding box (pixels nearest its colour) minus the picture's,
    as a share of the side, in x and y."""
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
    palette = np.array(list(SHAPE_COLOURS.values()), dtype=np.float64)
    nearest = ((pixels[:, :, None, :] - palette) ** 2).sum(-1).argmin(-1)
    rows, cols = np.nonzero(nearest == list(SHAPE_COLOURS).index(colour))
    side = pixels.shape[0]
    return ((cols.min() + cols.max() + 1) / 2 / side - 0.5, (rows.min() + rows.max() + 1) / 2 / side - 0.5)


def offsets(spread: float, count: int = 80, size: int = 64) -> np.ndarray:
    """|offset| in x and y of `count` circles drawn with draw_scene's random place (circles: their
    bounding box is centred on the centre drawn; a shape cut by the border reads nearer the centre)."""
    rng = random.Random(5)
    return np.abs([object_offset(draw_scene("red", "circle", "blue", size, rng, spread), "red") for _ in range(count)])


def test_the_default_spread_draws_the_data_set_as_before(tmp_path):
    assert SHAPE_SPREAD == 0.08
    paths = list(write_shapes(tmp_path / "a", 4, size=32, seed=11))
    assert [(pixel_hash(p), p.with_suffix(".txt").read_text().strip()) for p in paths] == list(BEFORE_SPREAD)
    given = list(write_shapes(tmp_path / "b", 4, size=32, seed=11, spread=SHAPE_SPREAD))
    assert [p.read_bytes() for p in given] == [p.read_bytes() for p in paths]


def test_a_wider_spread_puts_the_shapes_farther_from_the_centre():
    near, far = offsets(SHAPE_SPREAD), offsets(0.25)
    tolerance = 1 / 64  # a pixel of the bounding box
    assert near.max() <= SHAPE_SPREAD + tolerance
    assert far.max() <= 0.25 + tolerance
    assert far.max() > 0.2 and far.mean() > 2 * near.mean()
    assert np.all(offsets(0.0) <= tolerance)  # centred


def test_spread_on_the_command_line_and_its_limits(glide, tmp_path):
    result = glide("dataset", "shapes", tmp_path / "d", "-n", 3, "--size", 24, "--seed", 1, "--spread", 0.3)
    assert result.code == 0, result.err
    assert [pixel_hash(p) for p in sorted((tmp_path / "d").glob("*.png"))] == [
        pixel_hash(p) for p in write_shapes(tmp_path / "api", 3, size=24, seed=1, spread=0.3)
    ]
    for bad in ("0.7", "-0.1", "wide"):
        assert_one_error_line(glide("dataset", "shapes", tmp_path / f"bad{bad}", "--spread", bad), 2, "--spread")
        assert not (tmp_path / f"bad{bad}").exists()
    with pytest.raises(DatasetError, match="spread"):
        list(write_shapes(tmp_path / "api-bad", 2, spread=MAX_SHAPE_SPREAD + 0.1))
    assert not (tmp_path / "api-bad").exists()
