"""`glide train --kind clip` (train/clip_recipe.py): a small CLIP of one's own, trained with
the same loop as GLIDE's networks (train/recipe.py): the loss against open_clip's ClipLoss,
exact resume, the exported openclip entry, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glidecli.files.fetch import fetch_entry
from glidecli.files.manifest import load_manifest
from glidecli.nets.checkpoint import load_network
from glidecli.nets.clip_vit import encode_prompts
from glidecli.nets.tokenizer import ClipTokenizer
from glidecli.train.clip_recipe import per_example_contrastive_loss
from glidecli.train.loop import Trainer, TrainingStopped
from glidecli.train.settings import Hyper, ModelSource, RunPlan
from helpers.glide_cli import assert_one_error_line, invoker

CLIP = ModelSource(name="little-clip", kind="clip", preset="micro", arch_changes={"text_ctx": 16})
QUICK = RunPlan(steps=4, save_every=0, samples=False, log_every=1)
HYPER = Hyper(batch_size=4, lr=1e-3, warmup=2, ema=0.9)


def test_the_per_example_loss_averages_to_open_clips_clip_loss():
    from open_clip.loss import ClipLoss

    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    scale = torch.tensor(14.3)
    ours = per_example_contrastive_loss(images, texts, scale)
    assert ours.shape == (6,)
    assert torch.allclose(ours.mean(), ClipLoss()(images, texts, scale), atol=1e-6)


def _tensors(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(str(folder / f"{name}.safetensors")) for name in ("model", "ema", "optimizer")}


def test_a_stopped_clip_run_resumes_to_exactly_the_uninterrupted_result(shapes, tmp_path):
    whole = Trainer(shapes, tmp_path / "whole", CLIP, HYPER, QUICK).run()
    with pytest.raises(TrainingStopped):
        Trainer(shapes, tmp_path / "split", CLIP, HYPER, QUICK).run(should_stop=lambda step: step == 2)
    resumed = Trainer(shapes, tmp_path / "split", CLIP, HYPER, QUICK, resume=True)
    assert resumed.step == 2 and resumed.run().step == 4
    first, second = (_tensors(tmp_path / run / "checkpoints" / "step-4") for run in ("whole", "split"))
    for name in first:
        assert first[name].keys() == second[name].keys()
        assert all(torch.equal(first[name][k], second[name][k]) for k in first[name]), name
    assert (tmp_path / "whole" / "little-clip.safetensors").read_bytes() == (tmp_path / "split" / "little-clip.safetensors").read_bytes()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(0 < loss < 10 for loss in losses) and whole.step == 4


def test_the_export_is_an_openclip_entry_that_loads_and_encodes(shapes, tmp_path):
    plan = RunPlan(steps=2, save_every=0, samples=True, log_every=1)
    result = Trainer(shapes, tmp_path / "run", CLIP, HYPER, plan).run()
    entry = load_manifest(result.manifest).model("little-clip")
    assert entry.kind == "openclip" and entry.arch.text_ctx == 16 and entry.arch.image_size == 32
    model = load_network("openclip", entry.arch, fetch_entry(entry, progress=False))
    text = encode_prompts(model, ClipTokenizer(16), ["a red circle on a blue background"])
    assert text.pooled.shape == (1, entry.arch.embed_dim) and torch.isfinite(text.tokens).all()
    report = json.loads((tmp_path / "run" / "samples" / "step-2.json").read_text())
    assert report["step"] == 2 and 0 <= report["top1"] <= 1 and report["chance"] == 1 / report["captions"]


@pytest.fixture
def glide(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)
    return invoker(capsys, monkeypatch)


def test_clip_training_refuses_in_one_line_and_writes_nothing(glide, shapes, tmp_path):
    base = ["train", shapes, "--kind", "clip", "--batch-size", "2", "--device", "cpu", "--steps", "1", "-q"]
    done = glide(*base, "--preset", "micro", "--model", "c", "--out", tmp_path / "ok")
    assert done.code == 0, done.err
    assert (tmp_path / "ok" / "weights.toml").is_file()
    refused = glide(*base, "--preset", "micro", "--model", "c", "--prediction", "v", "--out", tmp_path / "v")
    assert_one_error_line(refused, 1, "a CLIP has no setting 'prediction'")
    refused = glide(*base, "--preset", "full", "--model", "c", "--out", tmp_path / "full")
    assert_one_error_line(refused, 1, "unknown preset 'full' for a CLIP; choose one of micro, tiny, small")
    assert not (tmp_path / "v").exists() and not (tmp_path / "full").exists()
