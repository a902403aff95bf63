"""`glide unclip`, `glide vary` and `glide blend` end to end on tiny random unCLIP networks
(helpers/tiny_unclip.py), offline: files, sizes, seeds, recorded settings and bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from glidecli.files.pngfile import read_png_metadata
from helpers.glide_cli import assert_one_error_line, invoker_with_weights
from helpers.paths import MODELS

FAST = ["--prior-steps", "3", "--steps", "3", "--quiet"]
FAST_DECODE = ["--steps", "3", "--quiet"]


@pytest.fixture
def glide(capsys, monkeypatch, tmp_path, tiny_unclip_manifest):
    return invoker_with_weights(capsys, monkeypatch, tmp_path, tiny_unclip_manifest)


@pytest.fixture
def pictures(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name, shape in (("a.png", (40, 56, 3)), ("b.jpg", (48, 48, 3))):
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_unclip_writes_super_resolved_pictures_with_settings(glide, tmp_path):
    result = glide("unclip", "a red cube", "-n", "2", "--seed", "5", "--out", tmp_path / "out", *FAST)
    assert result.code == 0, result.err
    first, second = result.paths
    assert Image.open(first).size == (32, 32)  # the tiny SR's size
    assert not np.array_equal(pixels(first), pixels(second))
    meta = read_png_metadata(second)
    assert meta["prompt"] == "a red cube" and meta["seed"] == 6 and meta["command"] == "unclip"
    assert (meta["prior_model"], meta["prior_sampler"], meta["prior_steps"], meta["prior_scale"]) == ("karlo-prior", "ddpm", "3", 4.0)
    assert (meta["decoder_model"], meta["decoder_steps"], meta["decoder_scale"]) == ("karlo-decoder", "3", 8.0)
    assert (meta["sr_model"], meta["sr_sampler"], meta["sr_steps"]) == ("karlo-sr", "ddpm", "7")
    info = glide("info", second)
    assert info.code == 0 and "prior scale" in info.out and "karlo-decoder" in info.out


def test_unclip_size_64_stops_after_the_decoder(glide, tmp_path):
    result = glide("unclip", "a red cube", "--size", "16", "--seed", "1", "--out", tmp_path / "small", *FAST)
    assert result.code == 0, result.err
    assert Image.open(result.paths[0]).size == (16, 16)
    assert "sr_model" not in read_png_metadata(result.paths[0])
    assert_one_error_line(glide("unclip", "x", "--size", "20", "--out", tmp_path / "bad", *FAST), 2, "--size")


def test_super_resolution_sampling_is_an_option(glide, tmp_path):
    default = glide("unclip", "a red cube", "--seed", "3", "--out", tmp_path / "default", *FAST)
    fewer = glide("unclip", "a red cube", "--seed", "3", "--sr-steps", "3", "--sr-sampler", "ddim", "--out", tmp_path / "fewer", *FAST)
    assert default.code == 0 and fewer.code == 0, default.err + fewer.err
    meta = read_png_metadata(fewer.paths[0])
    assert (meta["sr_sampler"], meta["sr_steps"]) == ("ddim", "3")
    assert not np.array_equal(pixels(default.paths[0]), pixels(fewer.paths[0]))


def test_image_i_uses_seed_s_plus_i_whatever_the_batch(glide, tmp_path):
    batch = glide("unclip", "a blue ball", "-n", "3", "--batch-size", "3", "--seed", "10", "--out", tmp_path / "batch", *FAST)
    alone = glide("unclip", "a blue ball", "--seed", "11", "--out", tmp_path / "alone", *FAST)
    assert batch.code == 0 and alone.code == 0, batch.err + alone.err
    # Identical noise; batched kernels may round differently, at most one 8-bit level.
    assert np.abs(pixels(batch.paths[1]) - pixels(alone.paths[0])).max() <= 1


def test_vary_makes_different_variations_and_records_the_source(glide, tmp_path, pictures):
    result = glide("vary", pictures[0], "-n", "2", "--seed", "3", "--out", tmp_path / "vary", "--json", *FAST_DECODE)
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [r["seed"] for r in records] == [3, 4]
    first, second = (records[0]["path"], records[1]["path"])
    assert not np.array_equal(pixels(first), pixels(second))
    meta = read_png_metadata(first)
    assert meta["image_sha256"] == hashlib.sha256(pictures[0].read_bytes()).hexdigest()
    assert meta["command"] == "vary" and "prior_model" not in meta


def test_blend_frames_run_from_a_to_b_with_one_seed(glide, tmp_path, pictures):
    a, b = pictures
    frames = glide("blend", a, b, "--frames", "3", "--seed", "7", "--out", tmp_path / "blend", *FAST_DECODE)
    assert frames.code == 0, frames.err
    metas = [read_png_metadata(p) for p in frames.paths]
    assert [m["mix"] for m in metas] == [0.0, 0.5, 1.0] and {m["seed"] for m in metas} == {7}
    assert metas[0]["image_b_sha256"] == hashlib.sha256(b.read_bytes()).hexdigest()
    # Mix 0 is picture A's own embedding: the same picture as a variation of A with that seed.
    varied = glide("vary", a, "--seed", "7", "--out", tmp_path / "vary-a", *FAST_DECODE)
    assert np.abs(pixels(frames.paths[0]) - pixels(varied.paths[0])).max() <= 1
    assert not np.array_equal(pixels(frames.paths[0]), pixels(frames.paths[2]))
    half = glide("blend", a, b, "--mix", "0.5", "--seed", "7", "--out", tmp_path / "half", *FAST_DECODE)
    assert np.abs(pixels(half.paths[0]) - pixels(frames.paths[1])).max() <= 1


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["vary", "{missing}"], 1, "not found"),
        (["vary", "{text}"], 1, "not an image"),
        (["blend", "{a}", "{missing}"], 1, "not found"),
        (["blend", "{a}", "{a}", "--mix", "1.5"], 2, "--mix"),
        (["blend", "{a}", "{a}", "--frames", "1"], 2, "--frames"),
        (["blend", "{a}", "{a}", "--frames", str(10**11)], 2, "--frames"),
        (["vary", "{a}", "--scale", "inf"], 2, "--scale"),
        (["blend", "{a}", "{a}", "--frames", "3", "--mix", "0.2"], 2, "not both"),
        (["unclip", "x", "--prior-scale", "-1"], 2, "--prior-scale"),
        (["unclip", "x", "--steps", "lots"], 2, "--steps"),
        (["unclip", "x", "--sr-steps", "lots"], 2, "--sr-steps"),
        (["unclip", "x", "--prior-model", "karlo-decoder"], 1, "kind unclip-decoder"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(glide, tmp_path, pictures, args, code, fragment):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    names = {"missing": tmp_path / "nope.png", "text": text, "a": pictures[0]}
    out = tmp_path / "never"
    result = glide(*[a.format(**names) for a in args], "--out", out, "--quiet")
    assert_one_error_line(result, code, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_missing_weights_offline_is_one_line(glide, tmp_path, monkeypatch):
    manifest = tmp_path / "remote.toml"
    manifest.write_text(
        'version = 1\n[models.clip-vit-l-14]\nkind = "openclip"\nurl = "https://example.invalid/clip.safetensors"\n'
        '[models.karlo-decoder]\nkind = "unclip-decoder"\nurl = "https://example.invalid/decoder.safetensors"\n'
    )
    picture = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(picture)
    result = glide("vary", picture, "--size", "64", "--offline", "--weights", manifest, "--out", tmp_path / "none", "--quiet")
    assert_one_error_line(result, 1)
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())


def test_batch_size_is_auto_by_default_and_one_on_the_cpu(glide, tmp_path, pictures, monkeypatch):
    from glidecli.render import unclip as unclip_module

    sizes = []
    real_batches = unclip_module.batches
    monkeypatch.setattr(unclip_module, "batches", lambda jobs, size: sizes.append(size) or real_batches(jobs, size))
    a, b = pictures
    runs = [
        ("unclip", "a red cube", "-n", "3", *FAST),
        ("vary", a, "-n", "2", *FAST_DECODE),
        ("blend", a, b, "--frames", "2", *FAST_DECODE),
        ("unclip", "a red cube", "-n", "3", "--batch-size", "auto", *FAST),
        ("unclip", "a red cube", "-n", "3", "--batch-size", "2", *FAST),
    ]
    for k, args in enumerate(runs):
        result = glide(*args, "--seed", "4", "--out", tmp_path / f"run{k}")
        assert result.code == 0, result.err
    assert sizes == [1, 1, 1, 1, 2]


def test_offload_gives_the_same_files_and_bad_choices_are_one_line(glide, tmp_path):
    """--offload on the CPU: the same bytes as without (render/offload.py's tests poison
    what waits off the device); a choice it does not know, or --compile with it, is one line."""
    plain = glide("unclip", "a red cube", "--seed", "5", "--out", tmp_path / "plain", *FAST)
    assert plain.code == 0, plain.err
    for choice in ("model", "sequential"):
        offloaded = glide("unclip", "a red cube", "--seed", "5", "--offload", choice, "--out", tmp_path / choice, *FAST)
        assert offloaded.code == 0, offloaded.err
        assert pixels(offloaded.paths[0]).tobytes() == pixels(plain.paths[0]).tobytes()
    assert_one_error_line(glide("unclip", "a red cube", "--offload", "all", "--out", tmp_path / "x", *FAST), 2, "--offload")
    shapes = ["--weights", MODELS / "weights.toml", "--model", "shapes", "--upsample-model", "shapes-upsample"]
    compiled = glide("generate", "a red cube", *shapes, "--offload", "model", "--compile", "--out", tmp_path / "y", "--quiet")
    assert_one_error_line(compiled, 1, "--compile and --offload model do not go together")
    assert not (tmp_path / "x").exists() and not list((tmp_path / "y").glob("*.png"))
