"""`glide outpaint` and `glide inpaint` on pictures bigger than the models, end to end on the
tiny random-weight models of test_cli.py (base-inpaint 16x16, upsample-inpaint 32x32: the
two-stage path GLIDE's 64 -> 256 models take), and the bad input both refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import FAST, environment, glide, half_mask, pixels, random_picture, world  # noqa: F401 - fixtures

from glidecli.files.fetch import sha256_file
from glidecli.files.images import load_image, load_mask, tensor_to_pil
from glidecli.files.pngfile import read_png_metadata
from glidecli.render.regions import feather_weights
from helpers.glide_cli import assert_one_error_line


def test_outpaint_grows_the_canvas_and_keeps_the_picture_bit_for_bit(glide, tmp_path):
    source = random_picture(tmp_path / "src.png", (40, 24))
    args = ("outpaint", source, "a beach", *FAST, "--left", 5, "--right", 30, "--top", 7, "--bottom", 3, "--seed", 4)
    result = glide(*args, "-n", 2, "--batch-size", 2, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    first, second = result.paths
    canvas, original = pixels(first), pixels(source)
    assert canvas.shape == (24 + 7 + 3, 40 + 5 + 30, 3)
    assert np.array_equal(canvas[7 : 7 + 24, 5 : 5 + 40], original)
    border = np.ones(canvas.shape[:2], dtype=bool)
    border[7 : 7 + 24, 5 : 5 + 40] = False
    assert np.abs(canvas[border] - canvas[border].mean(axis=0)).mean() > 5  # painted, not left black
    meta = read_png_metadata(first)
    assert meta["command"] == "outpaint" and (meta["seed"], meta["width"], meta["height"]) == (4, 75, 34)
    assert (meta["left"], meta["right"], meta["top"], meta["bottom"]) == (5, 30, 7, 3)
    assert (meta["window"], meta["context"], meta["image_size"]) == (32, 16, [40, 24])
    assert meta["image_sha256"] == sha256_file(source) and meta["upsample_model"] == "upsample-inpaint"
    assert "Size: 75x34" in Image.open(first).text["parameters"]
    # image 1 is seed 5's canvas: the same when rendered alone, and a rerun is identical
    alone = glide(*args[:-1], 5, "--out", tmp_path / "alone")
    again = glide(*args, "--out", tmp_path / "again")
    assert alone.code == again.code == 0, alone.err + again.err
    assert np.abs(pixels(alone.paths[0]) - pixels(second)).max() <= 1
    assert np.array_equal(pixels(again.paths[0]), canvas)
    assert not np.array_equal(pixels(second), canvas)


def test_outpaint_in_rectangular_windows_with_both_stages(glide, tmp_path):
    """--window 48x32: the base model paints 24x16, the upsampler 48x32 windows; the picture
    stays bit for bit and the border is painted."""
    source = random_picture(tmp_path / "src.png", (40, 24))
    result = glide("outpaint", source, "a beach", *FAST, "--right", 30, "--bottom", 10, "--window", "48x32", "--seed", 4,
                   "--out", tmp_path / "o")
    assert result.code == 0, result.err
    canvas = pixels(result.paths[0])
    assert canvas.shape == (34, 70, 3) and np.array_equal(canvas[:24, :40], pixels(source))
    border = np.ones(canvas.shape[:2], dtype=bool)
    border[:24, :40] = False
    assert np.abs(canvas[border] - canvas[border].mean(axis=0)).mean() > 5  # painted, not left black
    meta = read_png_metadata(result.paths[0])
    assert (meta["window"], meta["context"], meta["upsample_model"]) == ([48, 32], 16, "upsample-inpaint")


def test_outpaint_to_a_size_centres_the_picture_and_the_base_model_alone_paints_small_windows(glide, tmp_path):
    source = random_picture(tmp_path / "src.png", (20, 10))
    result = glide("outpaint", source, "x", *FAST, "--to", "41x30", "--size", 16, "--context", 4, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    canvas = pixels(result.paths[0])
    assert canvas.shape == (30, 41, 3) and np.array_equal(canvas[10:20, 10:30], pixels(source))
    meta = read_png_metadata(result.paths[0])
    assert (meta["left"], meta["right"], meta["top"], meta["bottom"], meta["window"], meta["context"]) == (10, 11, 10, 10, 16, 4)
    assert "upsample_model" not in meta


def test_inpaint_of_a_big_picture_keeps_its_size_and_every_pixel_outside_the_feather(glide, tmp_path):
    source = random_picture(tmp_path / "big.png", (90, 70))
    mask = np.zeros((70, 90), dtype=np.uint8)
    mask[50, 80:83] = 255  # three pixels
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    result = glide("inpaint", source, tmp_path / "mask.png", "a hat", *FAST, "--feather", 3, "--context", 5, "--seed", 9, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    out, original = pixels(result.paths[0]), pixels(source)
    assert out.shape == original.shape
    weights = feather_weights(mask > 0, 3)
    assert np.array_equal(out[weights == 0], original[weights == 0])
    assert not np.array_equal(out[mask > 0], original[mask > 0])
    meta = read_png_metadata(result.paths[0])
    assert (meta["fit"], meta["context"], meta["feather"], meta["width"], meta["height"]) == ("region", 5, 3, 90, 70)
    assert meta["image_sha256"] == sha256_file(source) and meta["mask_sha256"] == sha256_file(tmp_path / "mask.png")
    # the square: at least the final model's 32 pixels, around the mask, inside the picture
    left, top, right, bottom = meta["region"]
    assert right - left == bottom - top == 32 and 0 <= left <= 80 and 83 <= right <= 90 and top <= 50 < bottom <= 70
    # --fit crop keeps the old behaviour: the picture fitted to the models' square
    fitted = glide("inpaint", source, tmp_path / "mask.png", "a hat", *FAST, "--fit", "crop", "--out", tmp_path / "fit")
    assert fitted.code == 0, fitted.err
    assert pixels(fitted.paths[0]).shape == (32, 32, 3) and read_png_metadata(fitted.paths[0])["fit"] == "crop"


def test_inpaint_region_on_a_small_picture_and_with_transparency(glide, tmp_path):
    """--fit region works on a picture no bigger than the models too; without a mask file the
    transparent pixels are the mask."""
    rgba = np.random.default_rng(3).integers(0, 256, (24, 30, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[5:9, 10:20, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    result = glide("inpaint", tmp_path / "cut.png", "x", *FAST, "--fit", "region", "--feather", 0, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    out = pixels(result.paths[0])
    keep = rgba[..., 3] == 255
    assert out.shape == (24, 30, 3) and np.array_equal(out[keep], rgba[..., :3][keep].astype(np.int16))
    assert read_png_metadata(result.paths[0])["mask"] == "alpha"


def test_inpaint_at_a_rectangle_with_both_stages_and_the_default_unchanged(glide, tmp_path):
    """--width 48 --height 32 (base model at 24x16, upsampler at 48x32): the kept pixels are
    the picture fitted to 48x32 exactly. Without the options the picture is the one the
    models' own square gives when asked for explicitly, byte for byte (with --fit auto this
    60x40 picture, bigger than the models, is still inpainted at its own size: --fit region)."""
    source, mask = random_picture(tmp_path / "src.png", (60, 40)), half_mask(tmp_path / "mask.png", (60, 40))
    args = ("inpaint", source, mask, "a hat", *FAST, "--seed", 3)
    wide = glide(*args, "--width", 48, "--height", 32, "--fit", "stretch", "--out", tmp_path / "wide")
    assert wide.code == 0, wide.err
    out = pixels(wide.paths[0])
    expected = np.asarray(tensor_to_pil(load_image(source, (48, 32), "stretch")), dtype=np.int16)
    keep = load_mask(mask, (48, 32), "stretch")[0, 0].numpy() == 1
    assert out.shape == (32, 48, 3) and keep.sum() == 32 * 24
    assert np.array_equal(out[keep], expected[keep]) and not np.array_equal(out[~keep], expected[~keep])
    assert read_png_metadata(wide.paths[0])["size"] == [48, 32]
    default = glide(*args, "--fit", "crop", "--out", tmp_path / "default")
    square = glide(*args, "--fit", "crop", "--width", 32, "--height", 32, "--out", tmp_path / "square")
    assert default.code == square.code == 0, default.err + square.err
    assert pixels(default.paths[0]).shape == (32, 32, 3)
    assert np.array_equal(pixels(default.paths[0]), pixels(square.paths[0]))
    assert read_png_metadata(default.paths[0]) == read_png_metadata(square.paths[0])
    # the upsampler's factor (2 here) times the base model's step (2) sets what the sides must be multiples of
    refused = glide(*args, "--width", 50, "--out", tmp_path / "bad")
    assert_one_error_line(refused, 2, "with the 2x upsampler sides must be multiples of 4 from 16 to 64")
    assert not (tmp_path / "bad").exists()


def blank_mask(path: Path, value: int, size=(40, 40)) -> Path:
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8), "L").save(path)
    return path


@pytest.mark.parametrize("fit", ["auto", "crop"])
def test_masks_that_select_nothing_or_everything_are_refused(glide, tmp_path, fit):
    source = random_picture(tmp_path / "src.png")
    for value, fragment in ((0, "selects nothing"), (255, "selects the whole picture")):
        mask = blank_mask(tmp_path / f"mask{value}.png", value)
        result = glide("inpaint", source, mask, "x", *FAST, "--fit", fit, "--out", tmp_path / "o")
        assert_one_error_line(result, 1, fragment)
    inverted = glide("inpaint", source, half_mask(tmp_path / "half.png"), "x", *FAST, "--invert-mask", "--fit", fit, "--out", tmp_path / "o")
    assert inverted.code == 0, inverted.err
    assert [p.name for p in (tmp_path / "o").iterdir()] == [inverted.paths[0].name]


OUTPAINT_USAGE_ERRORS = [
    ([], "nothing to extend"),
    (["--left", "0", "--to", "40x40"], "nothing to extend"),
    (["--to", "30x60"], "smaller than the picture"),
    (["--to", "wide"], "WIDTHxHEIGHT"),
    (["--to", "9000x50"], "--to"),
    (["--to", "50x50", "--right", "3"], "not both"),
    (["--right", "-1"], "--right"),
    (["--right", "9000"], "--right"),
    (["--right", "8000", "--left", "800"], "at most 8192"),
    (["--right", "4", "--context", "32"], "--context"),
    (["--right", "4", "--context", "0"], "--context"),
    (["--right", "4", "--size", "100"], "--size"),
    (["--right", "4", "--window", "wide"], "WIDTHxHEIGHT"),
    (["--right", "4", "--window", "50x32"], "--window"),  # sides must be multiples of 4 with these models
    (["--right", "4", "--window", "48x16", "--context", "16"], "--context"),
]


@pytest.mark.parametrize("args, fragment", OUTPAINT_USAGE_ERRORS, ids=[" ".join(a) or "no sides" for a, _ in OUTPAINT_USAGE_ERRORS])
def test_outpaint_usage_errors(glide, tmp_path, args, fragment):
    source = random_picture(tmp_path / "src.png")
    result = glide("outpaint", source, "x", *FAST, *args, "--out", tmp_path / "o")
    assert_one_error_line(result, 2, fragment)
    assert result.err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_outpaint_failures(glide, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    for image, fragment in ((tmp_path / "gone.png", "not found"), (tmp_path / "notes.txt", "not an image")):
        assert_one_error_line(glide("outpaint", image, "x", *FAST, "--right", 4, "--out", tmp_path / "o"), 1, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("pattern", ["../{slug}.png", "sub/../../{seed}.png", "/tmp/glide-escape-{seed}.png"])
def test_a_pattern_cannot_write_outside_the_output_directory(glide, tmp_path, pattern):
    source = random_picture(tmp_path / "src.png")
    result = glide("outpaint", source, "x", *FAST, "--right", 4, "--seed", 1, "--pattern", pattern, "--out", tmp_path / "o" / "deep")
    assert_one_error_line(result, 1, "outside the output directory")
    assert [p.name for p in tmp_path.rglob("*.png")] == ["src.png"] and not Path("/tmp/glide-escape-1.png").exists()


def test_a_prompt_slug_stays_inside_the_output_directory(glide, tmp_path):
    result = glide("generate", "../../etc/passwd", *FAST, "--size", 16, "--seed", 1, "--pattern", "{slug}/{seed}.png", "--out", tmp_path / "o")
    assert result.code == 0, result.err
    [path] = result.paths
    assert path.resolve().is_relative_to((tmp_path / "o").resolve()) and path.name == "1.png"



def test_outpaint_help(glide):
    text = glide("outpaint", "--help").out
    assert glide("outpaint", "--help").code == 0 and "--left" in text and "--to" in text
    assert "--feather" in glide("inpaint", "--help").out
