"""Animations on the shapes model: a seed walk's frames (frame 0 is the plain picture, the
noise turns a full circle), --animate's frame count and frames equal to the written ones
(WebP is lossless), blend --frames, --show-steps; and what they refuse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from glidecli.diffusion.noise import ImageNoise
from glidecli.files.pngfile import read_png_metadata
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

SHAPES = ["--weights", str(MODELS / "weights.toml"), "--model", "shapes", "--size", "32", "--steps", "4", "--quiet"]
TWO_STAGES = ["--weights", str(MODELS / "weights.toml"), "--model", "shapes", "--upsample-model", "shapes-upsample", "--steps", "6",
              "--upsample-steps", "2", "--seed", "3", "--quiet"]


@pytest.fixture
def glide(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    return invoker(capsys, monkeypatch)


def frames_of(path) -> list[np.ndarray]:
    with Image.open(path) as animation:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(animation)]


def test_walk_noise_turns_a_full_circle():
    plain = ImageNoise([5]).initial((3, 8, 8))
    assert torch.equal(ImageNoise([5], [0.0]).initial((3, 8, 8)), plain)
    quarter = ImageNoise([5], [math.pi / 2]).initial((3, 8, 8))
    assert torch.allclose(quarter, ImageNoise([6]).initial((3, 8, 8)), atol=1e-6)  # a quarter turn: seed + 1's noise
    assert torch.allclose(ImageNoise([5], [2 * math.pi]).initial((3, 8, 8)), plain, atol=1e-6)


def test_a_seed_walk_and_its_animation(glide):
    made = glide("generate", "a red circle on a blue background", *SHAPES, "--seed", "2", "--seed-walk", "5", "--animate", "webp", "--out", "walk")
    assert made.code == 0, made.err
    *pictures, animation = made.paths
    assert len(pictures) == 5 and animation.suffix == ".webp" and animation.stem == pictures[0].stem
    frames = frames_of(animation)
    assert len(frames) == 5 and all(np.array_equal(f, np.asarray(Image.open(p))) for f, p in zip(frames, pictures))
    records = [read_png_metadata(p) for p in pictures]
    assert [r["walk_angle"] for r in records] == [round(2 * math.pi * k / 5, 6) for k in range(5)] and records[0]["walk_seed"] == 3
    plain = glide("generate", "a red circle on a blue background", *SHAPES, "--seed", "2", "--out", "plain")
    assert np.array_equal(np.asarray(Image.open(plain.paths[0])), np.asarray(Image.open(pictures[0])))  # frame 0: the plain picture
    assert len({np.asarray(Image.open(p)).tobytes() for p in pictures}) == 5


def test_a_seed_walk_without_animate_writes_the_frames_alone(glide):
    made = glide("generate", "a red circle", *SHAPES, "--seed", "2", "--seed-walk", "3", "--out", "walk")
    assert made.code == 0, made.err
    assert [p.suffix for p in made.paths] == [".png"] * 3 and sorted(p.name for p in made.paths[0].parent.iterdir()) == sorted(p.name for p in made.paths)


def test_blend_frames_become_an_animation(glide, tmp_path, tiny_unclip_manifest):
    for name, colour in (("a.png", (220, 30, 30)), ("b.png", (30, 60, 220))):
        Image.new("RGB", (32, 32), colour).save(name)
    made = glide("blend", "a.png", "b.png", "--frames", "3", "--animate", "gif", "--weights", tiny_unclip_manifest, "--steps", "2",
                 "--size", "16", "--seed", "1", "--quiet", "--out", "b")
    assert made.code == 0, made.err
    *pictures, animation = made.paths
    assert len(pictures) == 3 and animation.suffix == ".gif" and 1 <= len(frames_of(animation)) <= 3  # GIF merges equal frames


def test_show_steps_writes_the_sampling_as_frames(glide):
    made = glide("generate", "a red circle on a blue background", *TWO_STAGES, "--show-steps", "2", "--animate", "webp", "--out", "s")
    assert made.code == 0, made.err
    [picture] = made.paths
    folder = picture.with_name(picture.stem + "-steps")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["00-base-002.png", "01-base-004.png", "02-base-006.png", "03-upsample-002.png"]
    frames = frames_of(picture.with_name(picture.stem + "-steps.webp"))
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    last = np.asarray(Image.open(folder / names[-1]))
    assert np.array_equal(frames[-1], last) and read_png_metadata(folder / names[0])["stage"] == "base"
    # The picture itself is the one plain generation makes.
    plain = glide("generate", "a red circle on a blue background", *TWO_STAGES, "--out", "p")
    assert plain.paths[0].read_bytes() == picture.read_bytes()


@pytest.mark.parametrize("args, fragment", [
    (["--animate", "gif"], "give --seed-walk N or --show-steps N"),
    (["--animate", "mp4", "--seed-walk", "3"], "'mp4' is not one of 'gif', 'webp'"),
    (["--seed-walk", "1"], "1 is not in the range 2 to 1000"),
    (["--seed-walk", "3", "--best-of", "2"], "--seed-walk keeps one seed pair"),
    (["--show-steps", "2", "--best-of", "2"], "cannot follow --best-of"),
    (["--seed-walk", "3", "--seed", str(2**32 - 1)], "a seed walk turns towards seed + 1"),
])
def test_what_animations_refuse(glide, tmp_path, args, fragment):
    assert_one_error_line(glide("generate", "x", *SHAPES, *args, "--out", "o"), 2, fragment)
    assert not (tmp_path / "o").exists()
