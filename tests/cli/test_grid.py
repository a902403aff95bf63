"""`glide grid` on the shapes model: a 3x2 grid's cells equal the single runs byte for byte,
the labels are drawn, the sheet's PNG lists the cells; what it refuses before rendering."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glidecli.files.pngfile import read_png_metadata
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

SHAPES = ["--weights", str(MODELS / "weights.toml"), "--model", "shapes", "--size", "32", "--quiet"]


@pytest.fixture
def glide(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    return invoker(capsys, monkeypatch)


def test_a_3x2_grid_is_its_single_runs_and_a_labelled_sheet(glide, tmp_path):
    prompt = "a red circle on a blue background"
    made = glide("grid", "--x", "scale=1,3,5", "--y", "steps=3,5", "generate", prompt, *SHAPES, "--seed", "4", "--out", "grid")
    assert made.code == 0, made.err
    *cells, sheet = made.paths
    assert len(cells) == 6 and sheet.name == "00000-grid.png"
    for k, (steps, scale) in enumerate((s, c) for s in ("3", "5") for c in ("1", "3", "5")):
        single = glide("generate", prompt, *SHAPES, "--seed", "4", "--scale", scale, "--steps", steps, "--out", f"single{k}")
        assert single.code == 0, single.err
        assert cells[k].read_bytes() == single.paths[0].read_bytes(), (k, steps, scale)
    record = read_png_metadata(sheet)
    assert record["x"] == "scale" and record["y_values"] == ["3", "5"]
    assert [(c["x"], c["y"], c["file"]) for c in record["cells"]][:2] == [("1", "3", cells[0].name), ("3", "3", cells[1].name)]
    picture = np.asarray(Image.open(sheet).convert("L"))
    label_band, left_band = picture[30:58, 60:], picture[60:, :50]  # the x labels above the cells, the y labels left of them
    assert (label_band < 100).sum() > 30 and (left_band < 100).sum() > 30  # dark text on white
    assert Image.open(sheet).width > 3 * 128


def test_seed_and_prompt_axes(glide):
    made = glide("grid", "--x", "seed=1,2", "--y", "prompt-sr=red,green", "generate", "a red circle on a blue background", *SHAPES,
                 "--steps", "3", "--out", "g")
    assert made.code == 0, made.err
    records = [read_png_metadata(path) for path in made.paths[:-1]]
    assert [(r["seed"], r["prompt"]) for r in records] == [(1, "a red circle on a blue background"), (2, "a red circle on a blue background"),
                                                          (1, "a green circle on a blue background"), (2, "a green circle on a blue background")]


@pytest.mark.parametrize("args, fragment", [
    (["--x", "scale=" + ",".join(["1"] * 100), "--y", "steps=" + ",".join(["3"] * 100)], "10000 cells; at most 256"),
    (["--x", "bogus=1,2"], "generate has no option 'bogus'"),
    (["--x", "scale"], "is not OPTION=V1,V2"),
    (["--x", "scale=1,,2"], "is not OPTION=V1,V2"),
    (["--x", "scale=1,-2"], "-2.0 is not in the range"),
    (["--x", "num=1,2"], "-n cannot be an axis"),
    (["--x", "prompt-sr=blue,red"], "'blue' is not in the prompt"),
    (["--x", "scale=1,2", "--y", "scale=3,4"], "both vary scale"),
])
def test_grids_refused_before_anything_renders(glide, tmp_path, args, fragment):
    result = glide("grid", *args, "generate", "a red circle", *SHAPES, "--out", "g")
    assert_one_error_line(result, 2, fragment)
    assert not (tmp_path / "g").exists()


def test_what_grid_needs(glide, tmp_path):
    assert_one_error_line(glide("grid", "--x", "scale=1,2"), 2, "give the command to put on a grid")
    assert_one_error_line(glide("grid", "--x", "scale=1,2", "generate", "x", *SHAPES, "-n", "2", "--out", "g"), 2, "a grid cell is one picture")
    assert_one_error_line(glide("grid", "--x", "scale=1,2", "generate", "x", *SHAPES, "--out", "g.png"), 2, "give a folder")
    assert not (tmp_path / "g").exists()


def test_a_lora_axis_is_its_single_runs(glide):
    """--lora is an option like the others: each cell is the render with that adapter's weight."""
    prompt = "a zorb"
    made = glide("grid", "--x", "lora=shapes-zorb:0,shapes-zorb:1", "generate", prompt, *SHAPES, "--seed", "2", "--steps", "4", "--out", "g")
    assert made.code == 0, made.err
    *cells, sheet = made.paths
    assert len(cells) == 2 and [c["x"] for c in read_png_metadata(sheet)["cells"]] == ["shapes-zorb:0", "shapes-zorb:1"]
    for k, weight in enumerate(("0", "1")):
        single = glide("generate", prompt, *SHAPES, "--seed", "2", "--steps", "4", "--lora", f"shapes-zorb:{weight}", "--out", f"single{k}")
        assert single.code == 0, single.err
        assert cells[k].read_bytes() == single.paths[0].read_bytes(), weight
        assert read_png_metadata(cells[k])["lora"][0]["weight"] == float(weight)
    plain = glide("generate", prompt, *SHAPES, "--seed", "2", "--steps", "4", "--out", "plain")
    pixels = [Image.open(path).tobytes() for path in (cells[0], cells[1], plain.paths[0])]
    assert pixels[0] == pixels[2] and pixels[1] != pixels[2]  # weight 0 is the base model's picture; weight 1 is not
