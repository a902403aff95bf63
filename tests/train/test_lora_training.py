"""`glide train --lora RANK`: a LoRA adapter of a manifest model trained with the base frozen,
through the same loop (EMA, checkpoints, exact resume), written in PEFT's format."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from glidecli.files.lora_file import read_adapter
from glidecli.files.manifest import load_manifest
from glidecli.train.loop import Trainer, TrainingStopped
from glidecli.train.settings import Hyper, ModelSource, RunPlan
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

LORA = {"rank": 2, "alpha": 4.0, "dropout": 0.1, "targets": ["qkv", "proj_out", "encoder_kv", "attn.c_qkv", "attn.c_proj"]}
QUICK = RunPlan(steps=4, save_every=0, samples=False, log_every=1)
HYPER = Hyper(batch_size=2, lr=1e-2, warmup=0, ema=0.5)


def _source() -> ModelSource:
    return ModelSource(name="adapter", kind="base", entry="shapes", lora=dict(LORA))


def _trainer(shapes, out, **kwargs) -> Trainer:
    return Trainer(shapes, out, _source(), HYPER, QUICK, manifest=load_manifest(MODELS / "weights.toml"), **kwargs)


def test_only_the_adapter_trains_and_the_result_is_a_peft_adapter(shapes, tmp_path):
    trainer = _trainer(shapes, tmp_path / "run")
    trainable = sum(p.numel() for p in trainer.model.parameters())
    base = sum(p.numel() for name, p in trainer.recipe.base.named_parameters() if "branches" not in name)
    assert 0 < trainable < base / 10
    before = {k: v.clone() for k, v in trainer.recipe.base.state_dict().items() if "branches" not in k}
    result = trainer.run()
    after = trainer.recipe.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base network never moved
    assert result.weights == tmp_path / "run" / "adapter" and not (tmp_path / "run" / "adapter.safetensors").exists()
    found = read_adapter(result.weights)
    assert (found.base_model, found.base_kind) == ("shapes", "base")
    assert found.base_sha256 == load_manifest(MODELS / "weights.toml").model("shapes").sha256
    adapter = found.load()
    assert all(pair.rank == 2 and pair.scaling == 2.0 for pair in adapter.pairs.values())
    assert any(pair.up.abs().sum() > 0 for pair in adapter.pairs.values())  # lora_B started at zero and learned
    checkpoint = load_file(str(tmp_path / "run" / "checkpoints" / "step-4" / "model.safetensors"))
    assert sum(t.numel() for t in checkpoint.values()) == trainable  # checkpoints hold the adapter alone
    manifest = load_manifest(result.manifest)
    assert manifest.model("adapter").kind == "lora" and manifest.model("shapes").kind == "base"
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig.from_pretrained(str(result.weights))
    assert config.r == 2 and config.lora_alpha == 4.0 and set(config.target_modules) == set(LORA["targets"])


def test_a_stopped_lora_run_resumes_to_exactly_the_uninterrupted_result(shapes, tmp_path):
    whole = _trainer(shapes, tmp_path / "whole").run()
    with pytest.raises(TrainingStopped):
        _trainer(shapes, tmp_path / "split").run(should_stop=lambda step: step == 2)
    resumed = _trainer(shapes, tmp_path / "split", resume=True)
    assert resumed.step == 2
    split = resumed.run()
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-4" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "split" / "checkpoints" / "step-4" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (whole.weights / "adapter_model.safetensors").read_bytes() == (split.weights / "adapter_model.safetensors").read_bytes()
    state = json.loads((tmp_path / "split" / "checkpoints" / "step-4" / "state.json").read_text())
    assert state["source"]["lora"]["base_sha256"] == load_manifest(MODELS / "weights.toml").model("shapes").sha256


def test_a_changed_base_model_is_refused_on_resume(shapes, tmp_path):
    with pytest.raises(TrainingStopped) as stopped:
        _trainer(shapes, tmp_path / "run").run(should_stop=lambda step: step == 1)
    state_file = stopped.value.checkpoint / "state.json"
    state = json.loads(state_file.read_text())
    state["source"]["lora"]["base_sha256"] = "0" * 64
    state_file.write_text(json.dumps(state))
    from glidecli.train.start import TrainingError

    with pytest.raises(TrainingError, match="has changed"):
        _trainer(shapes, tmp_path / "run", resume=True)


def test_bad_lora_options_are_one_line(shapes, tmp_path, capsys, monkeypatch):
    glide = invoker(capsys, monkeypatch)
    weights = ["--weights", str(MODELS / "weights.toml")]
    for flags, words in (
        (["--model", "shapes", "--lora", "0"], "--lora"),
        (["--model", "shapes", "--lora-alpha", "2"], "go with --lora RANK"),
        (["--model", "shapes", "--lora", "2", "--kind", "base-inpaint"], "leave out --preset, --kind and --prediction"),
        (["--model", "shapes", "--lora", "2", "--lora-targets", "nothing_here"], "no layer"),
    ):
        result = glide("train", shapes, *flags, *weights, "--out", tmp_path / "bad", "--steps", "1", "--quiet", "--device", "cpu")
        assert_one_error_line(result, result.code, words)
        assert result.code in (1, 2)
        assert not (tmp_path / "bad").exists()
    assert dataclasses.asdict(_source())["lora"]["rank"] == 2
