"""`--from IMAGE` and `glide info --command`: a picture's recorded settings taken back. On the
shapes models (and tiny unCLIP weights) every rendering command's picture is made again byte
for byte; flags given win; A1111's `parameters` text maps where it means the same."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from glidecli.files.pngfile import read_png_metadata
from glidecli.request.replay import recorded_values
from glidecli.request.values import RequestError
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

SHAPES = ["--weights", str(MODELS / "weights.toml"), "--quiet"]


@pytest.fixture
def glide(tmp_path, capsys, monkeypatch, tiny_unclip_manifest):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    array = np.zeros((32, 32, 3), np.uint8)
    array[:] = (30, 60, 200)
    array[8:24, 8:24] = (220, 30, 30)
    Image.fromarray(array).save("p.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[4:16, 4:16] = 255
    Image.fromarray(mask).save("m.png")
    big = np.zeros((80, 80, 3), np.uint8)
    big[:] = (30, 160, 50)
    Image.fromarray(big).save("big.png")
    big_mask = np.zeros((80, 80), np.uint8)
    big_mask[30:50, 30:50] = 255
    Image.fromarray(big_mask).save("bm.png")
    (tmp_path / "tiny").symlink_to(tiny_unclip_manifest.parent)
    return invoker(capsys, monkeypatch)


TINY = ["--weights", "tiny/weights.toml", "--quiet"]
COMMANDS = {
    "generate": ["generate", "a red circle", "--model", "shapes", "--upsample-model", "shapes-upsample", "--steps", "3", "--upsample-steps", "2", "--scale", "4", *SHAPES],
    "img2img": ["generate", "a red circle", "--model", "shapes", "--size", "32", "--steps", "4", "--init-image", "p.png", "--strength", "0.5", *SHAPES],
    "upsample": ["upsample", "p.png", "a red square", "--model", "shapes-upsample", "--steps", "2", *SHAPES],
    "inpaint": ["inpaint", "p.png", "m.png", "a green circle", "--model", "shapes-inpaint", "--size", "32", "--steps", "3", *SHAPES],
    "inpaint-region": ["inpaint", "big.png", "bm.png", "a red circle", "--model", "shapes-inpaint", "--size", "32", "--steps", "3", "--fit", "region", "--feather", "4", *SHAPES],
    "outpaint": ["outpaint", "p.png", "a red square", "--right", "16", "--model", "shapes-inpaint", "--size", "32", "--steps", "2", *SHAPES],
    "unclip": ["unclip", "a cat", "--steps", "2", "--prior-steps", "2", "--sr-steps", "2", *TINY],
    "vary": ["vary", "p.png", "--steps", "2", "--sr-steps", "2", *TINY],
    "blend": ["blend", "p.png", "big.png", "--mix", "0.25", "--steps", "2", "--size", "16", *TINY],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_from_makes_the_picture_again_byte_for_byte(glide, tmp_path, name):
    args = COMMANDS[name]
    made = glide(*args, "--seed", "7", "-n", "2", "--out", "first")
    assert made.code == 0, made.err
    second = made.paths[1]  # index 1: its index comes back too
    weights = args[args.index("--weights") : args.index("--weights") + 2]
    again = glide(args[0], "--from", second, *weights, "--quiet", "--out", "again")
    assert again.code == 0, again.err
    assert again.paths[0].name == second.name and again.paths[0].read_bytes() == second.read_bytes()
    # glide info --command prints a command line that makes it again too.
    shown = glide("info", "--command", second)
    assert shown.code == 0 and shown.out.startswith(f"glide {args[0]} ")
    words = shlex.split(shown.out)[1:]
    redo = glide(*words, *weights, "--quiet", "--out", "redo")
    assert redo.code == 0, (shown.out, redo.err)
    assert np.array_equal(np.asarray(Image.open(redo.paths[0])), np.asarray(Image.open(second)))


def test_from_takes_the_recorded_dtype_on_the_same_device(glide, monkeypatch):
    made = glide(*COMMANDS["generate"], "--seed", "7", "--dtype", "bf16", "--out", "first")
    monkeypatch.delenv("GLIDE_DTYPE")  # the suite's fp32: now auto, which --from leaves to the record
    again = glide("generate", "--from", made.paths[0], *SHAPES, "--out", "again")
    assert again.code == 0, again.err
    assert again.paths[0].read_bytes() == made.paths[0].read_bytes() and read_png_metadata(again.paths[0])["dtype"] == "bf16"
    fp32 = glide("generate", "--from", made.paths[0], *SHAPES, "--dtype", "fp32", "--out", "fp32")
    assert read_png_metadata(fp32.paths[0])["dtype"] == "fp32"  # a --dtype given wins


def test_flags_given_win_over_the_record(glide):
    made = glide(*COMMANDS["generate"], "--seed", "7", "--out", "first")
    other = glide("generate", "--from", made.paths[0], "--seed", "8", *SHAPES, "--out", "other")
    assert other.code == 0, other.err
    first, second = read_png_metadata(made.paths[0]), read_png_metadata(other.paths[0])
    assert second["seed"] == 8 and {k: v for k, v in first.items() if k != "seed"} == {k: v for k, v in second.items() if k != "seed"}
    prompt = glide("generate", "a blue square", "--from", made.paths[0], *SHAPES, "--out", "prompt")
    assert read_png_metadata(prompt.paths[0])["prompt"] == "a blue square" and read_png_metadata(prompt.paths[0])["scale"] == 4.0


A1111_TEXT = ("a corgi in a hat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x512, "
              "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Version: v1.6.0")


def test_a1111_parameters_map_where_they_mean_the_same(glide, tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_TEXT)
    Image.new("RGB", (8, 8)).save("a1111.png", pnginfo=info)
    values, unmapped = recorded_values(read_png_metadata("a1111.png"), "generate")
    assert values == {"prompts": "a corgi in a hat", "negative": "blurry", "steps": 20, "sampler": "dpmpp_2m", "scale": 7, "seed": 42,
                      "width": 512, "height": 512}
    assert sorted(unmapped) == ["clip_skip", "model", "version"]
    result = glide("generate", "--from", "a1111.png", "--model", "shapes", "--width", "64", "--height", "32", "--steps", "2",
                   "--upsample-model", "shapes-upsample", "--upsample-steps", "2", *SHAPES, "--out", "o")
    assert result.code == 0, result.err
    assert "warning: a1111.png records settings that map onto no option of glide generate: model, clip_skip, version" in result.err
    record = read_png_metadata(result.paths[0])
    assert (record["prompt"], record["negative_prompt"], record["seed"], record["sampler"], record["scale"]) == ("a corgi in a hat", "blurry", 42, "dpmpp_2m", 7.0)


def test_what_from_refuses(glide, tmp_path):
    Image.new("RGB", (8, 8)).save("plain.png")
    assert_one_error_line(glide("generate", "--from", "plain.png", *SHAPES, "--out", "o"), 2, "holds no recorded settings")
    made = glide(*COMMANDS["generate"], "--seed", "7", "--out", "first")
    assert_one_error_line(glide("upsample", "--from", made.paths[0], *SHAPES, "--out", "o"), 2, "was made by `glide generate`, not upsample")
    assert_one_error_line(glide("generate", "--from", "missing.png", *SHAPES, "--out", "o"), 1, "not found")
    (tmp_path / "text.png").write_text("not a picture")
    assert_one_error_line(glide("generate", "--from", "text.png", *SHAPES, "--out", "o"), 1, "text.png")
    with pytest.raises(RequestError, match="an upload to glide serve"):
        recorded_values({"command": "upsample", "image": "upload:image sha256:00", "prompt": "x"}, "upsample")
    assert not (tmp_path / "o").exists()
