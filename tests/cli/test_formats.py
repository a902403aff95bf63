"""`--format png|jpeg|webp` and `--quality` on the rendering commands (the shapes models): the
names follow the format, the settings travel in every format and come back through `glide info`
and `--from`, WebP at quality 100 has the PNG's pixels, and bad values are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glidecli.files.pictures import read_picture_record
from glidecli.files.pngfile import read_png_metadata
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

SHAPES = ["--weights", str(MODELS / "weights.toml"), "--model", "shapes", "--size", "32", "--steps", "3", "--quiet"]
PROMPT = "a red circle on a blue background"


@pytest.fixture
def glide(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    return invoker(capsys, monkeypatch)


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def made(glide):
    """The same two pictures as PNG, JPEG (.jpg names) and lossless WebP."""
    runs = {}
    for kind, extra in (("png", []), ("jpeg", ["--format", "jpeg", "--quality", "85"]), ("webp", ["--format", "webp", "--quality", "100"])):
        result = glide("generate", PROMPT, *SHAPES, "--seed", "5", "-n", "2", "--out", kind, *extra)
        assert result.code == 0, result.err
        runs[kind] = result.paths
    return runs


def test_names_follow_the_format_and_the_record_travels(made):
    assert [p.name for p in made["png"]] == ["00000-5-a-red-circle-on-a-blue-background.png", "00001-6-a-red-circle-on-a-blue-background.png"]
    assert [p.suffix for p in made["jpeg"]] == [".jpg", ".jpg"] and [p.suffix for p in made["webp"]] == [".webp", ".webp"]
    for kind, pillow in (("jpeg", "JPEG"), ("webp", "WEBP")):
        for png, other in zip(made["png"], made[kind]):
            assert png.stem == other.stem
            with Image.open(other) as image:
                assert image.format == pillow
            assert read_picture_record(other) == read_png_metadata(png)  # the same settings, every one


def test_webp_at_quality_100_has_the_pngs_pixels(made):
    for png, webp, jpeg in zip(made["png"], made["webp"], made["jpeg"]):
        assert np.array_equal(pixels(webp), pixels(png))
        assert not np.array_equal(pixels(jpeg), pixels(png))  # lossy, but close
        assert np.abs(pixels(jpeg).astype(int) - pixels(png)).mean() < 12


def test_info_and_from_read_jpeg_and_webp(glide, made):
    png, jpeg, webp = made["png"][1], made["jpeg"][1], made["webp"][1]
    for picture in (jpeg, webp):
        shown = glide("info", "--json", picture)
        assert shown.code == 0 and json.loads(shown.out) == read_png_metadata(png)
        assert glide("info", "--command", picture).out == glide("info", "--command", png).out
        human = glide("info", picture)
        assert human.code == 0 and PROMPT in human.out and "dpmpp_2m_sde" in human.out
        # --from takes every setting back: the PNG again, byte for byte (index 1 included).
        again = glide("generate", "--from", picture, "--weights", str(MODELS / "weights.toml"), "--quiet", "--out", f"again-{picture.suffix[1:]}")
        assert again.code == 0, again.err
        assert again.paths[0].name == png.name and again.paths[0].read_bytes() == png.read_bytes()
    # and the format is the run's own choice: --from a JPEG into a WebP
    webp_again = glide("generate", "--from", jpeg, "--weights", str(MODELS / "weights.toml"), "--quiet", "--out", "w", "--format", "webp", "--quality", "100")
    assert webp_again.code == 0 and webp_again.paths[0].suffix == ".webp"
    assert np.array_equal(pixels(webp_again.paths[0]), pixels(png))


def test_an_out_file_name_picks_the_format(glide):
    for name, pillow in (("one.jpg", "JPEG"), ("one.JPEG", "JPEG"), ("one.webp", "WEBP"), ("one.png", "PNG")):
        result = glide("generate", PROMPT, *SHAPES, "--seed", "1", "--out", name)
        assert result.code == 0 and result.paths == [result.paths[0]] and result.paths[0].name == name, result.err
        with Image.open(name) as image:
            assert image.format == pillow


def test_the_default_png_is_unchanged_by_the_new_options(glide):
    plain = glide("generate", PROMPT, *SHAPES, "--seed", "3", "--out", "plain")
    chosen = glide("generate", PROMPT, *SHAPES, "--seed", "3", "--out", "chosen", "--format", "png", "--quality", "10")
    assert plain.code == chosen.code == 0
    assert plain.paths[0].read_bytes() == chosen.paths[0].read_bytes()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--format", "gif"], ["--format", "'gif' is not one of 'png', 'jpeg', 'webp'"]),
        (["--format", "jpg"], ["--format", "'jpg' is not one of"]),
        (["--quality", "101"], ["--quality", "101 is not in the range 0 to 100"]),
        (["--quality", "-1"], ["--quality", "-1 is not in the range 0 to 100"]),
        (["--quality", "high"], ["--quality", "'high' is not a whole number"]),
    ],
)
def test_bad_values_are_one_line(glide, tmp_path, args, fragments):
    result = glide("generate", PROMPT, *SHAPES, *args, "--out", "bad")
    assert_one_error_line(result, 2, *fragments)
    assert not (tmp_path / "bad").exists()


def test_an_out_name_of_another_format_is_one_line(glide, tmp_path):
    result = glide("generate", PROMPT, *SHAPES, "--format", "webp", "--out", "x.jpg")
    assert_one_error_line(result, 1, "x.jpg", "--format webp", ".webp")
    assert not (tmp_path / "x.jpg").exists()
    gif = glide("generate", PROMPT, *SHAPES, "--out", "x.gif")
    assert_one_error_line(gif, 1, "PNG, JPEG and WebP files only")


def test_a_jpeg_without_a_record_is_told_as_a_png_without_one(glide, tmp_path):
    messages = {}
    for name in ("plain.png", "plain.jpg", "plain.webp"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / name)
        info = glide("info", name)
        assert_one_error_line(info, 1, "holds no recorded settings")
        replay = glide("generate", "--from", name, "--weights", str(MODELS / "weights.toml"), "--quiet")
        assert_one_error_line(replay, 2, "holds no recorded settings")
        messages[name] = (info.err.replace(name, "NAME"), replay.err.replace(name, "NAME"))
    assert messages["plain.png"] == messages["plain.jpg"] == messages["plain.webp"]


def test_a_grid_in_webp(glide, tmp_path):
    made = glide("grid", "--x", "scale=1,3", "generate", PROMPT, *SHAPES, "--seed", "4", "--format", "webp", "--quality", "100", "--out", "grid")
    assert made.code == 0, made.err
    *cells, sheet = made.paths
    assert [p.suffix for p in cells] == [".webp", ".webp"] and sheet.name == "00000-grid.webp"
    assert read_picture_record(sheet)["x_values"] == ["1", "3"]
    single = glide("generate", PROMPT, *SHAPES, "--seed", "4", "--scale", "3", "--out", "single")
    assert np.array_equal(pixels(cells[1]), pixels(single.paths[0]))
    assert read_picture_record(cells[1]) == read_png_metadata(single.paths[0])


def test_format_as_a_grid_axis(glide):
    made = glide("grid", "--x", "format=png,webp,jpeg", "generate", PROMPT, *SHAPES, "--seed", "4", "--quality", "100", "--out", "grid")
    assert made.code == 0, made.err
    *cells, sheet = made.paths
    assert [p.suffix for p in cells] == [".png", ".webp", ".jpg"] and sheet.suffix == ".png"
    assert np.array_equal(pixels(cells[0]), pixels(cells[1]))
    assert read_picture_record(cells[2]) == read_png_metadata(cells[0])
