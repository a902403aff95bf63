"""The `glide` command end to end, on tiny random-weight models (base 16x16, upsampler
32x32) described by a manifest written here. No network: every entry is a local path."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers

from glidecli import __version__
from glidecli.cli import edit as cli_edit
from glidecli.cli import generate as cli_generate
from glidecli.diffusion.noise import MAX_SEED
from glidecli.files.fetch import sha256_file
from glidecli.files.images import load_image, load_mask, tensor_to_pil
from glidecli.files.manifest import load_manifest, packaged_manifest_path, toml_value
from glidecli.files.pngfile import read_png_metadata
from glidecli.nets.checkpoint import build_network, random_init_, save_network
from glidecli.nets.unet import Text2ImUNet
from glidecli.render import engine as render
from glidecli.render import session
from glidecli.render.pipeline import SamplerChoice
from glidecli.request.commands import REQUESTS, with_roles
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.tiny import TINY_CLIP, tiny_network

KINDS = ("base", "upsample", "base-inpaint", "upsample-inpaint", "clip-image", "clip-text")
FAST = ["--steps", "2", "--upsample-steps", "2", "--quiet"]


def write_manifest(path: Path, entries: dict[str, tuple[str, str, object]], tokenizer: str, extra: str = "") -> Path:
    """entries: name -> (kind, file or https URL, arch config)."""
    lines = ["version = 1"]
    for name, (kind, file, arch) in entries.items():
        source = "url" if file.startswith("https://") else "path"
        lines += [f"[models.{name}]", f'kind = "{kind}"', f"{source} = {json.dumps(file)}", extra, f"[models.{name}.arch]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in dataclasses.asdict(arch).items()]
    lines += ["[tokenizers.gpt2]", f"path = {json.dumps(tokenizer)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class World(NamedTuple):
    root: Path
    manifest: Path
    entries: dict  # name -> (kind, file, arch)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("weights")
    # GPT-2-shaped byte-level BPE without merges: one token per byte, <|endoftext|> at 50256.
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = 50256
    bpe = Tokenizer(models.BPE(vocab, []))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.save(str(root / "gpt2.json"))
    entries = {}
    for seed, kind in enumerate(KINDS):
        if kind.startswith("clip"):  # CLIP's real BPE ids reach 49407
            network = random_init_(build_network(kind, dataclasses.replace(TINY_CLIP, n_vocab=49408)), seed=seed)
        else:  # GLIDE pads with token 50256
            network = tiny_network(kind, seed=seed, n_vocab=50257)
        save_network(network, root / f"{kind}.safetensors")
        entries[kind] = (kind, f"{kind}.safetensors", network.config)
    return World(root, write_manifest(root / "weights.toml", entries, "gpt2.json"), entries)


@pytest.fixture(autouse=True)
def environment(world, tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_WEIGHTS", str(world.manifest))
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("GLIDE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def glide(capsys, monkeypatch):
    return invoker(capsys, monkeypatch)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


# --- generate ------------------------------------------------------------------------------


def test_generate_runs_both_stages_and_records_everything(glide, tmp_path):
    result = glide("generate", "a red hat", *FAST, "--seed", 11, "--negative", "blur", "--out", tmp_path / "o")
    assert result.code == 0, result.err
    [path] = result.paths
    assert path.name == "00000-11-a-red-hat.png" and Image.open(path).size == (32, 32)
    assert "seed 11" in result.err
    meta = read_png_metadata(path)
    assert meta["prompt"] == "a red hat" and meta["negative_prompt"] == "blur"
    assert (meta["seed"], meta["index"], meta["size"], meta["scale"]) == (11, 0, 32, 3.0)
    assert (meta["model"], meta["sampler"], meta["steps"]) == ("base", "dpmpp_2m_sde", "2")
    assert (meta["upsample_model"], meta["upsample_sampler"], meta["upsample_steps"], meta["upsample_temp"]) == (
        "upsample", "dpmpp_2m", "2", 0.997)
    assert meta["command"] == "generate" and meta["glidecli_version"] == __version__
    assert "Negative prompt: blur" in Image.open(path).text["parameters"]


def test_strong_guidance_with_few_solver_steps_warns_and_runs(glide, tmp_path):
    result = glide("generate", "x", *FAST, "--scale", "10", "--size", "16", "--seed", 1, "--out", tmp_path)
    assert result.code == 0 and "warning: --scale 10 with 2 dpmpp_2m_sde steps" in result.err
    calm = glide("generate", "x", *FAST, "--size", "16", "--seed", 1, "--out", tmp_path / "calm")
    assert calm.code == 0 and "warning" not in calm.err


def test_size_of_the_base_model_skips_the_upsampler(glide, tmp_path):
    result = glide("generate", "hat", *FAST, "--size", 16, "--seed", 1, "--out", tmp_path)
    assert result.code == 0, result.err
    [path] = result.paths
    assert Image.open(path).size == (16, 16)
    assert "upsample_model" not in read_png_metadata(path)


def test_image_i_of_a_batch_is_seed_plus_i_alone(glide, tmp_path):
    batch = glide("generate", "cat", *FAST, "-n", 3, "--batch-size", 2, "--seed", 40, "--out", tmp_path / "batch")
    alone = glide("generate", "cat", *FAST, "--seed", 42, "--out", tmp_path / "alone")
    assert batch.code == alone.code == 0, batch.err + alone.err
    assert [read_png_metadata(p)["seed"] for p in batch.paths] == [40, 41, 42]
    assert np.abs(pixels(batch.paths[2]) - pixels(alone.paths[0])).max() <= 1
    assert np.abs(pixels(batch.paths[0]) - pixels(batch.paths[1])).max() > 1


def test_models_load_once_and_text_is_encoded_once_per_batch(glide, tmp_path, monkeypatch):
    loads, encodings = [], []
    real_load, real_encode = session.load_network, Text2ImUNet.encode_text
    monkeypatch.setattr(session, "load_network", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    monkeypatch.setattr(Text2ImUNet, "encode_text", lambda self, *a: encodings.append(1) or real_encode(self, *a))
    result = glide("generate", "cat", *FAST, "-n", 3, "--batch-size", 2, "--out", tmp_path)
    assert result.code == 0, result.err
    assert sorted(loads) == ["base", "upsample"]
    assert len(encodings) == 2 * (2 + 1)  # per batch: prompt and empty prompt (base), prompt (upsampler)


def test_no_checkpoint_file_is_read_twice_and_auto_batches_one_on_the_cpu(glide, tmp_path, monkeypatch):
    import safetensors

    opened, batches = [], []
    real_open, real_sample_stage = safetensors.safe_open, render.sample_stage
    monkeypatch.setattr(safetensors, "safe_open", lambda path, *a, **k: opened.append(Path(path).name) or real_open(path, *a, **k))
    monkeypatch.setattr(render, "sample_stage", lambda m, c, noise, *a, **k: batches.append(len(noise)) or real_sample_stage(m, c, noise, *a, **k))
    result = glide("generate", "cat", *FAST, "-n", 3, "--out", tmp_path)  # --batch-size auto, the default
    assert result.code == 0, result.err
    assert sorted(opened) == ["base.safetensors", "upsample.safetensors"] and batches == [1] * 6


def test_compile_reaches_both_networks(glide, tmp_path, monkeypatch):
    from glidecli.render import accel

    compiled = []

    class Recording:  # compiling for real is tested in tests/render/test_accel.py
        def __init__(self, network, *, name, note):
            compiled.append(name)
            self.network = network

        def __call__(self, *args, **kwargs):
            return self.network(*args, **kwargs)

    monkeypatch.setattr(accel, "CompiledNetwork", Recording)
    result = glide("generate", "cat", *FAST, "--compile", "--out", tmp_path)
    assert result.code == 0 and sorted(compiled) == ["base", "upsample"], result.err


def test_prompts_file_and_resuming_with_skip_existing(glide, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red hat\n\n  a blue boat  \n")
    args = ["generate", "--prompts-file", prompts, *FAST, "--size", 16, "-n", 2, "--seed", 7, "--out", tmp_path / "o"]
    first = glide(*args)
    assert first.code == 0, first.err
    names = [p.name for p in first.paths]
    assert names == ["00000-7-a-red-hat.png", "00001-8-a-red-hat.png", "00002-7-a-blue-boat.png", "00003-8-a-blue-boat.png"]
    before = {p: pixels(p) for p in first.paths}
    first.paths[2].unlink()

    refused = glide(*args)
    assert_one_error_line(refused, 1, "already exists", "--skip-existing")
    assert not first.paths[2].exists()  # refused before any work

    resumed = glide(*args, "--skip-existing")
    assert resumed.code == 0, resumed.err
    assert resumed.paths == [first.paths[2]]
    assert np.abs(pixels(first.paths[2]) - before[first.paths[2]]).max() <= 1
    assert "skipping 3 of 4" in resumed.err

    from_stdin = glide("generate", "--prompts-file", "-", *FAST, "--size", 16, "--seed", 7, "--out", tmp_path / "s", stdin="a red hat\n")
    assert from_stdin.code == 0 and np.array_equal(pixels(from_stdin.paths[0]), before[first.paths[0]])


def test_json_lines_and_overwrite(glide, tmp_path):
    out = tmp_path / "pic.png"
    result = glide("generate", "boat", *FAST, "--size", 16, "-n", 2, "--seed", 3, "--out", out, "--json")
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [(r["index"], r["seed"], r["prompt"]) for r in records] == [(0, 3, "boat"), (1, 4, "boat")]
    assert [Path(r["path"]).name for r in records] == ["pic-0.png", "pic-1.png"]
    assert records[1]["settings"] == read_png_metadata(records[1]["path"])
    again = glide("generate", "boat", *FAST, "--size", 16, "-n", 2, "--seed", 3, "--out", out, "--overwrite")
    assert again.code == 0 and len(again.paths) == 2


def test_files_are_announced_in_order_when_later_ones_land_first(glide, tmp_path, monkeypatch):
    from glidecli.files import pictures, writer

    landed, real_write = [], pictures.write_picture

    def slow_for_the_first(image, path, meta, *args, **kwargs):
        time.sleep(0.3 if meta["index"] == 0 else 0.0)  # picture 0 lands after picture 1
        landed.append(meta["index"])
        return real_write(image, path, meta, *args, **kwargs)

    monkeypatch.setattr(pictures, "write_picture", slow_for_the_first)
    monkeypatch.setattr(writer, "default_threads", lambda: 3)  # a pool even on a 1-core machine
    result = glide("generate", "boat", *FAST, "--size", 16, "-n", 3, "--batch-size", 3, "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert [json.loads(line)["index"] for line in result.out.splitlines()] == [0, 1, 2]
    assert landed[0] != 0 and sorted(landed) == [0, 1, 2]  # the writes did overlap
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(json.loads(line)["path"]).name for line in result.out.splitlines()]


def test_info_prints_the_recorded_settings(glide, tmp_path):
    [path] = glide("generate", "owl", *FAST, "--size", 16, "--seed", 9, "--out", tmp_path).paths
    human = glide("info", path)
    assert human.code == 0 and "owl" in human.out and "seed" in human.out and "dpmpp_2m_sde" in human.out
    raw = glide("info", path, "--json")
    assert json.loads(raw.out) == read_png_metadata(path)
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert_one_error_line(glide("info", tmp_path / "plain.png"), 1, "no recorded settings")



def test_info_reads_several_pictures(glide, tmp_path):
    paths = glide("generate", "owl", *FAST, "--size", 16, "--seed", 9, "-n", 2, "--out", tmp_path).paths
    human = glide("info", *paths)
    assert human.code == 0 and [line for line in human.out.splitlines() if line.startswith("==> ")] == [f"==> {p} <==" for p in paths]
    lines = glide("info", *paths, "--json").out.splitlines()  # one object per line, each with its file
    assert [json.loads(line) for line in lines] == [{"file": str(p), **read_png_metadata(p)} for p in paths]
    commands = glide("info", *paths, "--command").out.splitlines()
    assert len(commands) == 2 and all(c.startswith("glide generate") for c in commands) and "--seed 10" in commands[1]
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    mixed = glide("info", paths[0], tmp_path / "plain.png")  # the one without settings is named; the other still printed
    assert mixed.code == 1 and "owl" in mixed.out and mixed.err.strip() == f"error: {tmp_path / 'plain.png'} holds no recorded settings"

def test_long_prompt_warns_and_continues(glide, tmp_path):
    result = glide("generate", "a very long prompt indeed", *FAST, "--size", 16, "--out", tmp_path)
    assert result.code == 0 and "warning:" in result.err and "cut" in result.err


# --- upsample, inpaint, clip-guide ------------------------------------------------------------


def random_picture(path: Path, size=(40, 40), mode="RGB", seed=0) -> Path:
    values = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    Image.fromarray(values, mode).save(path)
    return path


def test_upsample_any_picture(glide, tmp_path):
    source = random_picture(tmp_path / "in.png", (30, 18))
    result = glide("upsample", source, "a face", "--upsample-steps", 2, "--seed", 5, "--quiet", "--out", tmp_path / "o")
    assert result.code == 0, result.err
    [path] = result.paths
    meta = read_png_metadata(path)
    assert Image.open(path).size == (32, 32) and meta["command"] == "upsample" and meta["image"] == str(source)


def half_mask(path: Path, size=(40, 40)) -> Path:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[:, size[0] // 2 :] = 255  # white (right half) = repaint
    Image.fromarray(mask, "L").save(path)
    return path


def test_inpaint_keeps_the_unmasked_region_exactly(glide, tmp_path):
    source, mask = random_picture(tmp_path / "src.png"), half_mask(tmp_path / "mask.png")
    result = glide("inpaint", source, mask, "a hat", *FAST, "--fit", "crop", "--seed", 2, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    [path] = result.paths
    out, expected = pixels(path), np.asarray(tensor_to_pil(load_image(source, 32)), dtype=np.int16)
    keep = load_mask(mask, 32)[0, 0].numpy() == 1
    assert out.shape == (32, 32, 3) and keep.sum() == 32 * 16
    assert np.array_equal(out[keep], expected[keep])
    assert not np.array_equal(out[~keep], expected[~keep])
    meta = read_png_metadata(path)
    assert (meta["scale"], meta["sampler"], meta["upsample_sampler"], meta["fit"]) == (5.0, "ddpm", "ddpm", "crop")

    inverted = glide("inpaint", source, mask, "a hat", *FAST, "--fit", "crop", "--invert-mask", "--out", tmp_path / "inv")
    assert inverted.code == 0, inverted.err
    out = pixels(inverted.paths[0])
    assert np.array_equal(out[~keep], expected[~keep]) and read_png_metadata(inverted.paths[0])["invert_mask"] is True


def test_inpaint_repaints_the_transparent_pixels_of_an_rgba_picture(glide, tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (24, 24, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:, :12, 3] = 0  # left half transparent = repaint
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    result = glide("inpaint", tmp_path / "cut.png", "a hat", *FAST, "--size", 16, "--fit", "crop", "--out", tmp_path / "o")
    assert result.code == 0, result.err
    out = pixels(result.paths[0])
    expected = np.asarray(tensor_to_pil(load_image(tmp_path / "cut.png", 16)), dtype=np.int16)
    assert np.array_equal(out[:, 8:], expected[:, 8:]) and read_png_metadata(result.paths[0])["mask"] == "alpha"


def test_inpaint_input_errors(glide, tmp_path):
    source = random_picture(tmp_path / "src.png")
    small_mask = half_mask(tmp_path / "small.png", (20, 20))
    assert_one_error_line(glide("inpaint", source, small_mask, "x", *FAST, "--out", tmp_path), 1, "same size")
    assert_one_error_line(glide("inpaint", source, "x", *FAST, "--out", tmp_path), 1, "no transparency")
    assert_one_error_line(glide("inpaint", source, *FAST), 2, "IMAGE [MASK] PROMPT")


def test_clip_guide(glide, tmp_path):
    result = glide("clip-guide", "a lighthouse", *FAST, "--clip-scale", 5, "--seed", 4, "--out", tmp_path)
    assert result.code == 0, result.err
    meta = read_png_metadata(result.paths[0])
    assert Image.open(result.paths[0]).size == (32, 32)
    assert (meta["command"], meta["clip_scale"], meta["clip_image_model"]) == ("clip-guide", 5.0, "clip-image")
    assert "scale" not in meta  # no classifier-free guidance


# --- weights ---------------------------------------------------------------------------------


def test_weights_list(glide, world):
    rows = json.loads(glide("weights", "list", "--json").out)
    assert [row["name"] for row in rows] == [*KINDS, "gpt2"]
    assert all(row["cached"] and row["size"] > 0 for row in rows)
    table = glide("weights", "list")
    assert table.code == 0 and "upsample-inpaint" in table.out and "yes" in table.out


def test_weights_download_gives_local_paths(glide, world):
    result = glide("weights", "download", "base", "gpt2", "--quiet")
    assert result.code == 0 and result.paths == [world.root / "base.safetensors", world.root / "gpt2.json"]
    assert len(glide("weights", "download", "--all", "-q").paths) == len(KINDS) + 1
    assert_one_error_line(glide("weights", "download", "nope"), 1, "nope")
    assert_one_error_line(glide("weights", "download"), 2, "--all")


def test_weights_convert(glide, tmp_path):
    state = {"a.weight": torch.randn(3, 2), "b": torch.arange(4)}
    torch.save(state, tmp_path / "m.pt")
    result = glide("weights", "convert", tmp_path / "m.pt", tmp_path / "m.safetensors")
    assert result.code == 0, result.err
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "m.safetensors")["a.weight"], state["a.weight"])
    assert_one_error_line(glide("weights", "convert", tmp_path / "m.pt", tmp_path / "m.safetensors"), 1, "--overwrite")
    assert glide("weights", "convert", tmp_path / "m.pt", tmp_path / "m.safetensors", "--overwrite").code == 0
    assert_one_error_line(glide("weights", "convert", tmp_path / "none.pt", tmp_path / "n.safetensors"), 1, "none.pt")


def test_weights_verify(glide, world, tmp_path):
    digest = sha256_file(world.root / "base.safetensors")
    unrecorded = glide("weights", "verify", "base")
    assert unrecorded.code == 0 and digest in unrecorded.out and "unrecorded" in unrecorded.out
    base = {"base": world.entries["base"]}
    pinned = write_manifest(world.root / "pinned.toml", base, "gpt2.json", f'sha256 = "{digest}"')
    assert "ok" in glide("weights", "verify", "base", "--weights", pinned).out
    wrong = write_manifest(world.root / "wrong.toml", base, "gpt2.json", f'sha256 = "{"0" * 64}"')
    assert_one_error_line(glide("weights", "verify", "base", "--weights", wrong), 1, digest)


# --- bad input ---------------------------------------------------------------------------------

USAGE_ERRORS = [
    (["generate", *FAST], "PROMPT"),
    (["generate", "x", "--scale", "-1"], "--scale"),
    (["generate", "x", "-n", "0"], "--num"),
    (["generate", "x", "--batch-size", "0"], "--batch-size"),
    (["upsample", "a.png", "x", "--batch-size", "many"], "'auto' or a positive integer"),
    (["generate", "x", "--size", "100"], "--size"),
    (["generate", "x", "--steps", "abc"], "--steps"),
    (["generate", "x", "--upsample-steps", "fast9"], "--upsample-steps"),
    (["generate", "x", "--sampler", "euler"], "euler"),
    (["generate", "x", "--sampler", "dpmpp_2m", "--steps", "fast27"], "fast27"),
    (["generate", "x", "--eta", "0.5"], "eta"),
    (["clip-guide", "x", "--sampler", "plms"], "--sampler"),
    (["generate", "x", "--threshold", "0.2"], "threshold"),
    (["generate", "x", "--seed", str(MAX_SEED + 1)], "--seed"),
    (["generate", "x", "--seed", "-1"], "--seed"),
    (["generate", "x", "--seed", str(MAX_SEED), "-n", "2"], "--seed"),
    (["generate", "x", "--prompts-file", "p.txt"], "not both"),
    (["generate", "x", "-n", "2", "--pattern", "{slug}.png"], "--pattern"),
    (["generate", "x", "--skip-existing", "--overwrite"], "exclude"),
    (["generate", "x", "--frobnicate"], "--frobnicate"),
    (["frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize("args, fragment", USAGE_ERRORS, ids=[" ".join(a[1:]) for a, _ in USAGE_ERRORS])
def test_usage_errors(glide, tmp_path, args, fragment):
    result = glide(*args)
    assert_one_error_line(result, 2, fragment)
    assert result.err.count("\n") == 1 and not list(tmp_path.glob("outputs/*"))


def test_failures_before_any_work(glide, tmp_path):
    (tmp_path / "blocker").write_text("a file, not a directory")
    (tmp_path / "notes.txt").write_text("not an image")
    cases = [
        (["generate", "x", "--out", tmp_path / "blocker" / "sub"], "blocker"),
        (["generate", "x", "--model", "nosuch"], "nosuch"),
        (["generate", "x", "--model", "upsample"], "of kind upsample"),
        (["generate", "x", "--weights", tmp_path / "missing.toml"], "missing.toml"),
        (["generate", "--prompts-file", tmp_path / "gone.txt"], "gone.txt"),
        (["upsample", tmp_path / "gone.png", "x"], "gone.png"),
        (["upsample", tmp_path / "notes.txt", "x"], "not an image"),
        (["info", tmp_path / "notes.txt"], "notes.txt"),
    ]
    if not torch.cuda.is_available():
        cases.append((["generate", "x", "--device", "cuda"], "cuda is not available"))
    for args, fragment in cases:
        result = glide(*args, *(FAST if args[0] != "info" else []))
        assert_one_error_line(result, 1, str(fragment))
        assert result.err.count("\n") == 1, result.err


def manifest_with(world: World, path: Path, base: str | None = None, tokenizer: str | None = None) -> Path:
    """The tiny manifest with absolute paths, the base model's file (or URL) and the tokenizer replaced."""
    entries = {name: (kind, str(world.root / file), arch) for name, (kind, file, arch) in world.entries.items()}
    if base is not None:
        entries["base"] = ("base", base, entries["base"][2])
    return write_manifest(path, entries, tokenizer or str(world.root / "gpt2.json"))


def test_missing_corrupt_and_offline_weights(glide, world, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "junk.json").write_text("{}")
    cases = [
        (manifest_with(world, tmp_path / "a.toml", base=str(tmp_path / "absent.safetensors")), "absent.safetensors"),
        (manifest_with(world, tmp_path / "b.toml", base=str(tmp_path / "junk.safetensors")), "junk.safetensors"),
        (manifest_with(world, tmp_path / "c.toml", tokenizer=str(tmp_path / "junk.json")), "junk.json"),
        (manifest_with(world, tmp_path / "d.toml", base="https://example.invalid/base.safetensors"), "offline"),
    ]
    for manifest, fragment in cases:
        result = glide("generate", "x", *FAST, "--weights", manifest, "--offline", "--out", tmp_path / "o")
        assert_one_error_line(result, 1, fragment)
    assert not list((tmp_path / "o").glob("*.png"))


def test_ctrl_c_keeps_finished_images_and_exits_130(glide, tmp_path, monkeypatch):
    calls = []
    real_sample_stage = render.sample_stage

    def interrupt_third_stage(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # second image, base stage
            raise KeyboardInterrupt
        return real_sample_stage(*args, **kwargs)

    monkeypatch.setattr(render, "sample_stage", interrupt_third_stage)
    result = glide("generate", "x", *FAST, "-n", 3, "--out", tmp_path / "o")
    assert result.code == 130 and result.err.splitlines()[-1] == "interrupted; 1 image written"
    assert "Traceback" not in result.err
    assert [p.name for p in (tmp_path / "o").iterdir()] == [result.paths[0].name]  # whole, no temp files
    Image.open(result.paths[0]).load()


def test_real_sigint_in_a_batch(world, tmp_path):
    out = tmp_path / "o"
    env = {**os.environ, "GLIDE_WEIGHTS": str(world.manifest), "GLIDE_CACHE": str(tmp_path / "c"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "glidecli", "generate", "x", "--steps", "20", "--size", "16", "-n", "100", "-q", "--out", str(out)]
    # A test run started in the background of a shell ignores SIGINT, and so would the child it
    # starts (Python keeps an ignored SIGINT ignored): the child gets the default back, as from a terminal.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    first = process.stdout.readline()  # the first finished image
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=60)
    printed = {Path(line).name for line in (first + rest).splitlines()}
    files = sorted(p.name for p in out.iterdir())
    assert process.returncode == 130, err
    assert "Traceback" not in err and re.fullmatch(r"interrupted; (\d+) images? written", err.splitlines()[-1])
    assert int(err.split()[-3]) == len(files) >= 1 and printed <= set(files)
    assert all(name.endswith(".png") for name in files)  # no temp files left
    for name in files:
        assert Image.open(out / name).size == (16, 16)


# --- the command line itself ----------------------------------------------------------------------


def test_version_and_help(glide):
    assert glide("--version").out.strip() == f"glide (glidecli) {__version__}"
    for command in ("generate", "upsample", "inpaint", "clip-guide", "info", "weights"):
        assert glide(command, "--help").code == 0
    assert "IMAGE [MASK] PROMPT" in glide("inpaint", "--help").out
    for args in (["--help"], ["generate", "--help"], ["weights", "verify", "--help"]):
        text = glide(*args).out
        assert "--help" in text and "<bool>" not in text  # flags take no value; --help shows none


def test_help_and_weights_list_do_not_import_torch(world):
    probe = "import sys; from glidecli.cli.main import run; run(sys.argv[1:]); print('torch' in sys.modules)"
    for args in (["--help"], ["generate", "--help"], ["weights", "list"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env={**os.environ, "GLIDE_WEIGHTS": str(world.manifest)})
        assert done.stdout.strip().splitlines()[-1] == "False", (args, done.stderr)


@pytest.mark.parametrize(
    "command, base, upsample",
    [
        (cli_generate.generate, render.DEFAULT_BASE, render.DEFAULT_UPSAMPLE),
        (cli_edit.inpaint, render.DEFAULT_INPAINT_BASE, render.DEFAULT_INPAINT_UPSAMPLE),
    ],
)
def test_command_defaults_are_the_documented_settings(command, base, upsample):
    default = {name: param.default for name, param in inspect.signature(command).parameters.items()}
    # the models are the manifest's roles (None on the command line): the packaged manifest's are the documented ones
    assert default["model"] is default["upsample_model"] is None
    request = with_roles(REQUESTS[command.__name__](), load_manifest(packaged_manifest_path()).roles())
    assert (request.model, default["sampler"], default["steps"], default["scale"]) == (
        base.model, base.sampler.name, base.sampler.steps, base.scale)
    assert (request.upsample_model, default["upsample_sampler"], default["upsample_steps"], default["upsample_temp"]) == (
        upsample.model, upsample.sampler.name, upsample.sampler.steps, upsample.temperature)


def test_python_api_without_the_command_line(world):
    session = render.Session(load_manifest(world.manifest), device="cpu")
    base = render.Stage("base", SamplerChoice("ddim", "3"), scale=2.0)
    jobs = [render.Job("a kite", seed=5, index=0), render.Job("a kite", seed=6, index=1)]
    done = list(render.render_generate(session, jobs, base, None, options=render.RenderOptions(batch_size=2)))
    assert [d.meta["seed"] for d in done] == [5, 6] and done[0].image.size == (16, 16)
    assert done[0].meta["sampler"] == "ddim" and "command" not in done[0].meta


def test_glide_device_is_the_standing_choice_of_device_auto(glide, tmp_path, monkeypatch):
    from glidecli.render.session import resolve_device

    monkeypatch.setenv("GLIDE_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("GLIDE_DEVICE", "")  # empty: as if unset
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    monkeypatch.setenv("GLIDE_DEVICE", "tpu")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit --device wins
    result = glide("generate", "hat", *FAST, "--size", 16, "--out", tmp_path / "o")
    assert_one_error_line(result, 1, "GLIDE_DEVICE='tpu' is not a device", "cpu, cuda")
    assert not list(tmp_path.rglob("*.png"))


def test_skip_existing_without_the_first_runs_seed_says_how_to_resume(glide, tmp_path):
    first = glide("generate", "hat", *FAST, "--size", 16, "-n", 2, "--seed", 5, "--out", tmp_path)
    assert first.code == 0, first.err
    again = glide("generate", "hat", *FAST, "--size", 16, "-n", 2, "--seed", 9, "--skip-existing", "--out", tmp_path)
    assert again.code == 0 and "note: none of these files exist" in again.err and "give its --seed" in again.err
    assert str(first.paths[0]) in again.err
    resumed = glide("generate", "hat", *FAST, "--size", 16, "-n", 2, "--seed", 5, "--skip-existing", "--out", tmp_path)
    assert resumed.code == 0 and "skipping 2 of 2" in resumed.err and "note:" not in resumed.err
