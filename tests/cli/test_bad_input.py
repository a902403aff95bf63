"""Odd and bad input to every `glide` command, from a sweep of them: each gets one
'error: ...' line and exit 2 (usage) or 1 (failure), never a traceback or a hang, and
nothing half-written. Runs on the small shapes models in models/ (a few seconds)."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from glidecli.cli import main as cli
from glidecli.files import pngfile
from glidecli.files.pngfile import read_png_metadata
from glidecli.render import engine as render_engine
from glidecli.train import dataset as train_dataset
from glidecli.train import shapes as train_shapes
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

SHAPES = ["--weights", MODELS / "weights.toml", "--model", "shapes", "--size", "32", "--steps", "2", "--quiet"]
UPSAMPLE = ["--weights", MODELS / "weights.toml", "--model", "shapes-upsample", "--steps", "2", "--quiet"]
INPAINT = ["--weights", MODELS / "weights.toml", "--model", "shapes-inpaint", "--size", "32", "--steps", "2", "--quiet"]
TRAIN = ["--preset", "micro", "--model", "m", "--steps", "1", "--batch-size", "2", "--no-samples", "--quiet", "--device", "cpu"]


@pytest.fixture
def glide(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)
    monkeypatch.delenv("GLIDE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    return invoker(capsys, monkeypatch)


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    picture = tmp_path / "picture.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(picture)
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    mask.save(tmp_path / "mask.png")
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "fifo")
    # A PNG whose header claims 100000 x 100000 pixels: Pillow's decompression-bomb guard.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    (tmp_path / "a-file").write_text("not a folder")
    return {"picture": picture, "mask": tmp_path / "mask.png", "pipe": tmp_path / "pipe.png",
            "fifo": tmp_path / "fifo",
            "huge": tmp_path / "huge.png", "file": tmp_path / "a-file", "out": tmp_path / "out"}


@pytest.fixture
def no_hang(files):
    """Should a command open the FIFO after all, a writer arrives after 30 s and closes it
    again: the test then fails on its assertions instead of hanging the suite."""
    done = threading.Event()

    def unblock():
        if not done.wait(30):
            with open(files["pipe"], "wb"):
                pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    yield
    done.set()


# --- pictures that are not pictures -----------------------------------------------------------

PICTURE_CASES = [
    (["info", "{pipe}"], "not a regular file"),
    (["info", "{huge}"], "too large"),
    (["score", "{pipe}", "--prompt", "a red circle", "--weights", MODELS / "weights.toml"], "not a regular file"),
    (["upsample", "{pipe}", "a red circle", *UPSAMPLE, "--out", "{out}"], "not a regular file"),
    (["generate", "a red circle", "--init-image", "{pipe}", "--strength", "0.5", *SHAPES, "--out", "{out}"], "not a regular file"),
    (["inpaint", "{picture}", "{pipe}", "a red circle", *INPAINT, "--out", "{out}"], "not a regular file"),
]


@pytest.mark.parametrize("args, fragment", PICTURE_CASES, ids=[" ".join(map(str, a[:3])) for a, _ in PICTURE_CASES])
def test_a_pipe_or_a_bomb_as_a_picture_is_one_line(glide, files, no_hang, args, fragment):
    assert_one_error_line(glide(*[str(a).format(**files) for a in args]), 1, fragment)
    assert not files["out"].exists()


@pytest.mark.parametrize("record", ["[1, 2]", "3", '"text"'])
def test_info_on_a_glide_chunk_that_is_not_a_record(glide, tmp_path, record):
    info = PngImagePlugin.PngInfo()
    info.add_text("glide", record)  # another tool's chunk of that name
    Image.new("RGB", (4, 4)).save(tmp_path / "other.png", pnginfo=info)
    assert_one_error_line(glide("info", tmp_path / "other.png"), 1, "holds no recorded settings")


# --- option values ---------------------------------------------------------------------------------

USAGE_CASES = [
    (["generate", "x", "--scale", "inf", *SHAPES], "'--scale'"),
    (["generate", "x", "--sampler", "ddim", "--eta", "inf", *SHAPES], "'--eta'"),
    (["generate", "x", "-n", str(10**11), *SHAPES], "--num"),
    # the shapes manifest's [defaults] gives it an upsampler; a missing one is named
    (["generate", "x", *SHAPES, "--upsample-model", "upsample", "--size", "17"], "no upsampler 'upsample'"),
    (["generate", "x", *SHAPES, "--size", "17"], "17 is neither 32 (base model only) nor 64 (with the upsampler)"),
    (["generate", "caf\udce9", *SHAPES], "not UTF-8"),
    (["generate", "x", "--negative", "\udcff", *SHAPES], "not UTF-8"),
    (["train", "{data}", *TRAIN, "--lr", "inf"], "learning rate"),
    (["train", "{data}", *TRAIN, "--seed", str(2**64)], "seed"),
]


@pytest.mark.parametrize("args, fragment", USAGE_CASES, ids=[" ".join(map(str, a[1:4])) for a, _ in USAGE_CASES])
def test_option_values_no_run_can_use_are_usage_errors(glide, files, tmp_path, args, fragment):
    data = tmp_path / "data"
    result = glide(*[str(a).format(data=data) for a in args], "--out", files["out"])
    assert_one_error_line(result, 2, fragment)
    assert not files["out"].exists()


@pytest.mark.parametrize("pattern, fragment", [("{index:>1000000000}", "wider than a file name"), ("y" * 300, "304 bytes")], ids=["wide-field", "long-name"])
def test_output_patterns_that_make_names_too_long(glide, files, pattern, fragment):
    """Refused before the name is built (a gigabyte of spaces) or the error line quotes it."""
    result = glide("generate", "x", *SHAPES, "--pattern", pattern, "--out", files["out"])
    assert_one_error_line(result, 1, fragment)
    assert len(result.err) < 1000


# --- stdin and stdout ------------------------------------------------------------------------------


@pytest.mark.parametrize("stdin, fragment", [(None, "stdin is closed"), (b"a red\xff circle\n", "not UTF-8")])
def test_prompts_from_a_closed_or_binary_stdin(glide, files, monkeypatch, stdin, fragment):
    monkeypatch.setattr(sys, "stdin", None if stdin is None else io.TextIOWrapper(io.BytesIO(stdin)))
    assert_one_error_line(glide("generate", "--prompts-file", "-", *SHAPES, "--out", files["out"]), 1, fragment)


def test_a_closed_stdout_still_writes_the_pictures(glide, files, monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # `glide ... >&-`
    assert cli.run([str(a) for a in ("generate", "x", *SHAPES, "-n", "2", "--seed", "1", "--out", files["out"])]) == 0
    assert sorted(p.name for p in files["out"].iterdir()) == ["00000-1-x.png", "00001-2-x.png"]


# --- files and folders in the way ------------------------------------------------------------------


def test_outputs_under_something_that_is_not_a_folder(glide, files, no_hang, tmp_path):
    list(train_shapes.write_shapes(tmp_path / "data", 2, size=16))
    for args in (["generate", "x", *SHAPES], ["dataset", "shapes"], ["train", tmp_path / "data", *TRAIN]):
        for out, blocker in ((files["fifo"], files["fifo"]), (files["file"] / "sub", files["file"])):
            where = ["--out", out] if args[0] != "dataset" else [out, "-n", "2"]
            result = glide(*args, *where)
            assert_one_error_line(result, 1, str(blocker))
            assert "not a" in result.err.lower()  # "... is not a directory", not "File exists"
    assert files["file"].read_text() == "not a folder"


def test_weights_verify_on_a_folder_says_what_it_is(glide, tmp_path):
    result = glide("weights", "verify", "shapes", "--weights", MODELS / "weights.toml", "--file", tmp_path)
    assert_one_error_line(result, 1, "is not a regular file")


def test_a_full_disk_in_glide_dataset_keeps_the_whole_files(glide, tmp_path, monkeypatch):
    real_save = Image.Image.save
    saved = []

    def save_twice(self, fp, *args, **kwargs):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(train_dataset.Image.Image, "save", save_twice)
    result = glide("dataset", "shapes", tmp_path / "d", "-n", 5)
    assert_one_error_line(result, 1, "00002.png", "No space left on device")
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["00000.png", "00000.txt", "00001.png", "00001.txt"]  # no temp files, no half picture
    monkeypatch.setattr(train_dataset.Image.Image, "save", real_save)
    Image.open(tmp_path / "d" / "00001.png").load()


def test_a_picture_that_appears_meanwhile_is_kept_without_hard_links(tmp_path, monkeypatch):
    """On a file system without hard links the temp file is renamed into place, which
    would replace a file another process wrote since the check before rendering."""
    path = tmp_path / "picture.png"

    def no_links_and_a_rival(source, target):
        Path(target).write_bytes(b"the other run's picture")
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links_and_a_rival)
    with pytest.raises(pngfile.ImageError, match="already exists"):
        pngfile.write_png(Image.new("RGB", (4, 4)), path, {"prompt": "x"})
    assert path.read_bytes() == b"the other run's picture"
    assert [p.name for p in tmp_path.iterdir()] == ["picture.png"]  # no temp file left


def test_a_file_name_that_is_not_utf8_is_recorded_and_read_back(glide, files, tmp_path):
    source = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png"))
    source.write_bytes(files["picture"].read_bytes())
    result = glide("upsample", source, "a red circle", *UPSAMPLE, "--seed", "1", "--out", files["out"])
    assert result.code == 0, result.err
    assert read_png_metadata(result.paths[0])["image"] == str(source)


# --- manifests ---------------------------------------------------------------------------------------

ARCH_CASES = [
    ("model_channels = 32", "model_channels = -32", "model_channels must be at least 1"),
    ("channel_mult = [1, 1, 2, 2]", "channel_mult = []", "channel_mult"),
    ('noise_schedule = "squaredcos_cap_v2"', 'noise_schedule = "cosine"', "noise_schedule 'cosine'"),
    ("diffusion_steps = 1000", "diffusion_steps = 0", "diffusion_steps"),
    ("model_channels = 32", "model_channels = 48", "make no base network"),  # 32 groups cannot split 48
]


@pytest.mark.parametrize("old, new, fragment", ARCH_CASES, ids=[new for _, new, _ in ARCH_CASES])
def test_manifest_arch_values_no_network_has(glide, files, tmp_path, old, new, fragment):
    text = (MODELS / "weights.toml").read_text()
    first = text.index('[models."shapes".arch]')  # change the base model only
    text = text[:first] + text[first:].replace(old, new, 1)
    for name in ("shapes.safetensors", "shapes.tokenizer.json"):
        text = text.replace(f'"{name}"', json.dumps(str(MODELS / name)))
    manifest = tmp_path / "weights.toml"
    manifest.write_text(text)
    result = glide("generate", "x", *SHAPES, "--weights", manifest, "--out", files["out"])
    assert_one_error_line(result, 1, fragment)
    assert not files["out"].exists() or not any(files["out"].iterdir())


# --- Ctrl-C ------------------------------------------------------------------------------------------


def test_ctrl_c_while_the_command_loads_is_one_line(tmp_path):
    probe = (
        "import builtins\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *args, **kwargs):\n"
        "    if name == 'edit':  # from .edit import ..., in glidecli.cli.main\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "import glidecli.cli.main\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and done.stderr == "interrupted; 0 images written\n", done.stderr


# --- training runs -----------------------------------------------------------------------------------


def test_resuming_from_a_damaged_state_file_is_one_line(glide, tmp_path):
    import shutil

    list(train_shapes.write_shapes(tmp_path / "data", 2, size=16))
    run = tmp_path / "run"
    assert glide("train", tmp_path / "data", *TRAIN, "--out", run).code == 0
    (state_file,) = run.glob("checkpoints/step-1/state.json")
    damages = [("step", "abc"), ("data", None), ("hyper", {"lr": "fast"}), ("hyper", {"batch_size": 0})]
    for key, value in damages:
        copy = tmp_path / f"copy-{key}-{value}"
        shutil.copytree(run, copy)
        state = json.loads(state_file.read_text())
        state[key] = {**state[key], **value} if isinstance(value, dict) else value
        (copy / state_file.relative_to(run)).write_text(json.dumps(state))
        result = glide("train", tmp_path / "data", "--resume", "--steps", "2", "--quiet", "--out", copy)
        assert_one_error_line(result, 1, "state.json is incomplete or damaged")


def test_a_jsonl_line_naming_a_pipe_is_skipped_not_read(files, no_hang, tmp_path):
    lines = [{"path": str(files["picture"]), "caption": "noise"}, {"path": str(files["pipe"]), "caption": "a pipe"}]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = train_dataset.scan_dataset(tmp_path / "data.jsonl")
    assert [example.path for example in data.examples] == [files["picture"]]
    assert "1 paths that are not files" in data.report()


# --- resources -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 35184372088832 bytes"),
], ids=["gpu", "cpu"])
def test_out_of_memory_is_one_line_and_keeps_the_finished_pictures(glide, files, monkeypatch, error):
    real_sample_stage = render_engine.sample_stage
    calls = []

    def out_of_memory_at_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real_sample_stage(*args, **kwargs)

    monkeypatch.setattr(render_engine, "sample_stage", out_of_memory_at_the_second_batch)
    result = glide("generate", "x", *SHAPES, "-n", "3", "--batch-size", "1", "--seed", "1", "--out", files["out"])
    assert_one_error_line(result, 1, "out of memory", "--batch-size")
    assert [p.name for p in files["out"].iterdir()] == ["00000-1-x.png"]


@pytest.mark.parametrize("name", ["weights.toml", "m.safetensors"])
def test_a_fresh_training_run_never_replaces_a_manifest_or_weights_in_its_folder(glide, tmp_path, name):
    list(train_shapes.write_shapes(tmp_path / "data", 2, size=16))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name).write_text("the user's own")
    result = glide("train", tmp_path / "data", *TRAIN, "--out", tmp_path / "run")
    assert_one_error_line(result, 1, name, "would replace")
    assert [p.name for p in (tmp_path / "run").iterdir()] == [name]
    assert (tmp_path / "run" / name).read_text() == "the user's own"
