"""`glide inpaint --width/--height` and `glide outpaint --window WxH` with the small shapes
inpainting model of models/ (32x32, base model alone): the picture and its mask fitted to
a 48x32 rectangle, the unmasked pixels of the fitted picture kept bit for bit, the masked
region repainted in the prompt's colour; an outpainted border painted in 48x32 windows
takes the prompt's background colour; bad sizes refused like glide generate's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_editing import environment, glide, manifest, pixels  # noqa: F401 - fixtures

from glidecli.files.images import load_image, load_mask, tensor_to_pil
from glidecli.files.pngfile import read_png_metadata
from glidecli.train.shapes import SHAPE_COLOURS, draw_scene, nearest_colour, shape_caption
from helpers.glide_cli import assert_one_error_line

INPAINT = ["--model", "shapes-inpaint", "--size", 32, "--scale", 3, "--quiet"]


@pytest.fixture
def wide(tmp_path) -> tuple[Path, Path]:
    """A 96x64 blue picture with a red circle (64x64) in the middle, and a mask of the
    circle's middle (32x32): at 48x32 a plain halving, the mask 16x16."""
    canvas = Image.new("RGB", (96, 64), SHAPE_COLOURS["blue"])
    canvas.paste(draw_scene("red", "circle", "blue", 64), (16, 0))
    canvas.save(tmp_path / "wide.png")
    mask = np.zeros((64, 96), dtype=np.uint8)
    mask[16:48, 32:64] = 255
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    return tmp_path / "wide.png", tmp_path / "mask.png"


def fitted(image: Path, mask: Path, size: tuple[int, int], fit: str) -> tuple[np.ndarray, np.ndarray]:
    """The picture as glide fits it (8-bit) and its keep mask (True = kept), at `size` (w, h)."""
    picture = np.asarray(tensor_to_pil(load_image(image, size, fit)), dtype=np.int16)
    return picture, load_mask(mask, size, fit)[0, 0].numpy() == 1


def test_a_48x32_inpaint_keeps_the_fitted_picture_and_paints_the_prompts_colour(glide, tmp_path, wide):
    """Measured (seeds 0-3, 25 ddpm steps): 92-93% of the masked pixels take the prompt's colour
    with yellow, 86-95% with green."""
    image, mask = wide
    source, keep = fitted(image, mask, (48, 32), "crop")
    assert (~keep).sum() == 16 * 16
    for colour in ("yellow", "green"):
        result = glide("inpaint", image, mask, shape_caption(colour, "circle", "blue"), *INPAINT, "--steps", 25,
                       "--width", 48, "--height", 32, "--seed", 0, "-n", 4, "--batch-size", 4, "--out", tmp_path / colour)
        assert result.code == 0, result.err
        for path in result.paths:
            out = pixels(path)
            assert out.shape == (32, 48, 3)
            assert np.array_equal(out[keep], source[keep])
            shares = Counter(nearest_colour(p) for p in out[~keep])
            assert shares[colour] >= 0.75 * (~keep).sum(), (colour, shares)
            meta = read_png_metadata(path)
            assert meta["size"] == [48, 32] and meta["fit"] == "crop"  # --fit auto with a rectangle: crop
            assert "Size: 48x32" in Image.open(path).text["parameters"]


@pytest.mark.parametrize("fit", ["pad", "stretch"])
def test_pad_and_stretch_fit_the_picture_and_mask_to_the_rectangle(glide, tmp_path, fit):
    """A square picture at 48x32: pad letterboxes it (the black bars are kept, not painted),
    stretch distorts it; either way the kept pixels are the fitted picture's exactly."""
    draw_scene("red", "circle", "blue", 64).save(tmp_path / "square.png")
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    result = glide("inpaint", tmp_path / "square.png", tmp_path / "mask.png", "x", *INPAINT, "--steps", 2,
                   "--width", 48, "--height", 32, "--fit", fit, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    out = pixels(result.paths[0])
    source, keep = fitted(tmp_path / "square.png", tmp_path / "mask.png", (48, 32), fit)
    assert out.shape == (32, 48, 3) and np.array_equal(out[keep], source[keep]) and (~keep).sum() > 0
    if fit == "pad":
        assert (out[:, :8] == 0).all() and (out[:, -8:] == 0).all()
    assert read_png_metadata(result.paths[0])["fit"] == fit


SIZE_ERRORS = [
    (["--width", 50], "multiples of 8"),
    (["--height", 8], "from 16 to 64"),
    (["--width", 128], "from 16 to 64"),
    (["--width", 48, "--fit", "region"], "--fit crop, pad or stretch"),
]


@pytest.mark.parametrize("args, fragment", SIZE_ERRORS, ids=[" ".join(map(str, a)) for a, _ in SIZE_ERRORS])
def test_bad_sizes_are_refused_before_anything_is_written(glide, tmp_path, wide, args, fragment):
    image, mask = wide
    result = glide("inpaint", image, mask, "x", *INPAINT, *args, "--out", tmp_path / "o")
    assert_one_error_line(result, 2, fragment)
    assert not (tmp_path / "o").exists()


def test_outpainting_in_48x32_windows_extends_the_background_the_prompt_asks_for(glide, tmp_path):
    """A red circle on blue, 32x32, grown by 16 pixels left and right in two 48x32 windows
    (each sees the whole picture): the picture stays in the middle bit for bit and the
    border takes the prompt's background. Measured (seeds 0-3): blue 100% of the border with
    the blue prompt, green 86-88% with the green one (against 69-85% in 32x32 windows,
    tests/render/test_edit_small_model.py)."""
    draw_scene("red", "circle", "blue", 32).save(tmp_path / "circle.png")
    original = pixels(tmp_path / "circle.png")
    border = np.ones((32, 64), dtype=bool)
    border[:, 16:48] = False
    for background in ("blue", "green"):
        result = glide("outpaint", tmp_path / "circle.png", shape_caption("red", "circle", background), *INPAINT, "--steps", 25,
                       "--left", 16, "--right", 16, "--window", "48x32", "--seed", 0, "-n", 4, "--batch-size", 4,
                       "--out", tmp_path / background)
        assert result.code == 0, result.err
        for path in result.paths:
            canvas = pixels(path)
            assert canvas.shape == (32, 64, 3) and np.array_equal(canvas[:, 16:48], original)
            shares = Counter(nearest_colour(p) for p in canvas[border])
            assert shares[background] >= 0.75 * border.sum(), (background, shares)
            meta = read_png_metadata(path)
            assert (meta["window"], meta["windows"], meta["context"]) == ([48, 32], 2, 16)
