"""`glide train --lora RANK` of unCLIP's prior and decoder (the shapes set's shapes-prior and
shapes-decoder, which learn from shapes-clip): the same LoRA recipe and loop as GLIDE's U-Nets,
checked against PEFT itself, the frozen base, an exact resume and one-line refusals."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glidecli.files.lora_file import read_adapter
from glidecli.files.manifest import load_manifest
from glidecli.files.pngfile import read_png_metadata
from glidecli.nets.checkpoint import load_network
from glidecli.nets.lora import apply_adapters
from glidecli.nets.prior import ClipText
from glidecli.train.loop import Trainer, TrainingStopped
from glidecli.train.settings import Hyper, ModelSource, RunPlan
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

QUICK = RunPlan(steps=4, save_every=0, samples=False, log_every=1)
HYPER = Hyper(batch_size=2, lr=2e-2, warmup=0, ema=0.5)
TARGETS = {"unclip-prior": ["attn.c_qkv", "attn.c_proj"], "unclip-decoder": ["qkv", "encoder_kv", "proj_out", "in_layers.2", "out_layers.3"]}
BASES = {"unclip-prior": "shapes-prior", "unclip-decoder": "shapes-decoder"}
KINDS = pytest.mark.parametrize("kind", list(BASES))


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))


def _trainer(shapes: Path, out: Path, kind: str, **kwargs) -> Trainer:
    lora = {"rank": 2, "alpha": 4.0, "dropout": 0.0, "targets": TARGETS[kind]}
    source = ModelSource(name="adapter", kind=kind, entry=BASES[kind], clip="shapes-clip", lora=lora)
    return Trainer(shapes, out, source, HYPER, QUICK, manifest=load_manifest(MODELS / "weights.toml"), **kwargs)


def _base(kind: str) -> torch.nn.Module:
    entry = load_manifest(MODELS / "weights.toml").model(BASES[kind])
    return load_network(entry.kind, entry.arch, entry.source.path, "cpu", torch.float32).eval()


def _output(network: torch.nn.Module, kind: str) -> torch.Tensor:
    """The network on fixed inputs of the shapes unCLIP's widths (CLIP 64, 24 tokens)."""
    g = torch.Generator().manual_seed(5)
    text = ClipText(torch.randn(2, 64, generator=g), torch.randn(2, 24, 64, generator=g), torch.ones(2, 24, dtype=torch.bool))
    t = torch.tensor([30, 700])
    with torch.no_grad():
        if kind == "unclip-prior":
            return network(torch.randn(2, 64, generator=g), t, text)
        x, image = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 64, generator=g)
        return network(x, t, network.encode_clip(*text, image))


@KINDS
def test_the_adapter_alone_trains_and_peft_loads_it_to_the_same_outputs(shapes, tmp_path, kind):
    peft = pytest.importorskip("peft")
    trainer = _trainer(shapes, tmp_path / "run", kind)
    frozen = {k: v.clone() for k, v in trainer.recipe.base.state_dict().items() if "branches" not in k}
    trainable = sum(p.numel() for p in trainer.model.parameters())
    assert 0 < trainable < sum(v.numel() for v in frozen.values()) / 10
    result = trainer.run()
    after = trainer.recipe.base.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # the base never moved, bit for bit
    base = _base(kind)
    plain = {k.replace(".base_layer", ""): v for k, v in frozen.items()}
    assert plain.keys() == base.state_dict().keys() and all(torch.equal(plain[k], v) for k, v in base.state_dict().items())  # the manifest's
    found = read_adapter(result.weights)
    entry = load_manifest(MODELS / "weights.toml").model(BASES[kind])
    assert (found.base_model, found.base_kind, found.base_sha256) == (entry.name, kind, entry.sha256)

    ours = copy.deepcopy(base)
    apply_adapters(ours, [(found.load(), 1.0)])
    wrapped = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig.from_pretrained(str(result.weights)))
    loaded = peft.set_peft_model_state_dict(wrapped, load_file(str(result.weights / "adapter_model.safetensors")))
    assert not [k for k in loaded.unexpected_keys if "lora" in k]
    theirs = wrapped.base_model.model.eval()
    assert torch.allclose(_output(ours, kind), _output(theirs, kind), atol=1e-6, rtol=0)
    # The adapter learned something: the adapted network's output is not the base's.
    assert (_output(ours, kind) - _output(base, kind)).abs().max() > 1e-3


@KINDS
def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_result(shapes, tmp_path, kind):
    whole = _trainer(shapes, tmp_path / "whole", kind).run()
    with pytest.raises(TrainingStopped):
        _trainer(shapes, tmp_path / "split", kind).run(should_stop=lambda step: step == 2)
    resumed = Trainer(shapes, tmp_path / "split", ModelSource(name=""), HYPER, QUICK, resume=True)
    assert resumed.step == 2
    split = resumed.run()
    for part in ("model", "ema", "optimizer"):
        a, b = (load_file(str(tmp_path / run / "checkpoints" / "step-4" / f"{part}.safetensors")) for run in ("whole", "split"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert (whole.weights / "adapter_model.safetensors").read_bytes() == (split.weights / "adapter_model.safetensors").read_bytes()
    assert whole.manifest.read_text().split("\n", 2)[2] == split.manifest.read_text().split("\n", 2)[2]  # but the comment
    state = json.loads((tmp_path / "split" / "checkpoints" / "step-4" / "state.json").read_text())
    assert state["source"]["lora"]["base_model"] == BASES[kind] and state["source"]["clip"] == "shapes-clip"


def test_the_run_manifest_renders_with_the_adapter_and_names_the_whole_unclip(shapes, tmp_path, capsys, monkeypatch):
    """The CLI's run: the kind is the model's own, the CLIP the manifest's clip role; the run's
    manifest then runs `glide unclip --lora NAME` with no model named."""
    glide = invoker(capsys, monkeypatch)
    trained = glide("train", shapes, "--model", "shapes-prior", "--weights", MODELS / "weights.toml", "--lora", "2", "--out", tmp_path / "run",
                    "--steps", "2", "--batch-size", "2", "--no-samples", "--device", "cpu", "-q")
    assert trained.code == 0, trained.err
    made = load_manifest(tmp_path / "run" / "weights.toml")
    assert made.model("shapes-prior-lora").kind == "lora"
    assert {str(role): name for role, name in made.defaults.items()} == {
        "clip": "shapes-clip", "unclip-prior": "shapes-prior", "clip-stats": "shapes-prior-stats", "unclip-decoder": "shapes-decoder"}
    common = ["--size", "32", "--steps", "3", "--prior-steps", "3", "--seed", "4", "-q", "--device", "cpu"]
    adapted = glide("unclip", "a red circle", "--weights", tmp_path / "run" / "weights.toml", "--lora", "shapes-prior-lora", *common, "--out", tmp_path / "a")
    assert adapted.code == 0, adapted.err
    plain = glide("unclip", "a red circle", "--weights", MODELS / "weights.toml", *common, "--out", tmp_path / "b")
    zero = glide("unclip", "a red circle", "--weights", tmp_path / "run" / "weights.toml", "--lora", "shapes-prior-lora:0", *common, "--out", tmp_path / "c")
    assert Path(zero.paths[0]).read_bytes() != Path(adapted.paths[0]).read_bytes()
    from PIL import Image

    assert Image.open(zero.paths[0]).tobytes() == Image.open(plain.paths[0]).tobytes()  # weight 0: the base's pixels


def test_a_decoder_adapter_goes_on_glide_vary(shapes, tmp_path, capsys, monkeypatch):
    result = _trainer(shapes, tmp_path / "run", "unclip-decoder").run()
    glide = invoker(capsys, monkeypatch)
    picture = next(shapes.glob("*.png"))
    common = ["vary", picture, "--weights", result.manifest, "--size", "32", "--steps", "3", "--seed", "2", "-q", "--device", "cpu"]
    adapted = glide(*common, "--lora", "adapter", "--out", tmp_path / "a")
    zero = glide(*common, "--lora", "adapter:0", "--out", tmp_path / "z")
    plain = glide(*common[:3], MODELS / "weights.toml", *common[4:], "--out", tmp_path / "p")
    assert adapted.code == zero.code == plain.code == 0, (adapted.err, zero.err, plain.err)
    assert read_png_metadata(adapted.paths[0])["decoder_model"] == "shapes-decoder"
    from PIL import Image

    pixels = [Image.open(made.paths[0]).tobytes() for made in (adapted, zero, plain)]
    assert pixels[1] == pixels[2] and pixels[0] != pixels[2]


def test_bad_unclip_lora_runs_are_one_line_and_write_nothing(shapes, tmp_path, capsys, monkeypatch):
    glide = invoker(capsys, monkeypatch)
    # A manifest with the prior and its stats but no CLIP at all.
    text = (MODELS / "weights.toml").read_text().replace('path = "', f'path = "{MODELS}/')
    start = text.index('[models."shapes-clip"]')
    no_clip = tmp_path / "no-clip.toml"
    no_clip.write_text(text[:start].replace('clip = "shapes-clip"\n', "").replace('rank = "shapes-clip"\n', "") + text[text.index('[models."shapes-prior"]'):])
    weights = ["--weights", MODELS / "weights.toml"]
    for flags, code, words in (
        (["--model", "shapes-prior", "--lora", "2", "--weights", no_clip], 2, "needs the CLIP it learns from: --clip NAME"),
        (["--model", "shapes-prior", "--lora", "0", *weights], 2, "--lora"),
        (["--model", "shapes-decoder", "--lora", "0", *weights], 2, "--lora"),
        (["--model", "shapes-prior", "--lora", "2", "--lora-targets", "convs", *weights], 2, "names no layer"),
        (["--model", "shapes-prior", "--lora", "2", "--clip", "shapes-decoder", *weights], 1, "not a CLIP"),
        (["--model", "shapes-prior", "--lora", "2", "--kind", "unclip-decoder", *weights], 2, "is a unclip-prior model"),
        (["--model", "shapes-prior", "--lora", "2", "--prediction", "eps", *weights], 2, "leave out --preset, --kind and --prediction"),
        (["--model", "shapes-prior", *weights], 1, "or --lora RANK to train an adapter of it"),
        (["--kind", "clip", "--preset", "micro", "--model", "c", "--lora", "2"], 2, "--lora does not go with --kind clip"),
        (["--kind", "unclip-sr", "--decoder", "shapes-decoder", "--model", "s", "--lora", "2", *weights], 2, "--lora does not go with --kind unclip-sr"),
    ):
        result = glide("train", shapes, *flags, "--out", tmp_path / "bad", "--steps", "1", "--quiet", "--device", "cpu")
        assert_one_error_line(result, code, words)
        assert not (tmp_path / "bad").exists()
