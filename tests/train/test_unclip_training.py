"""`glide train --kind unclip-prior|unclip-decoder` (train/unclip_recipes.py): the losses
against an independent computation, dropout of captions and embeddings, exact resume, the
manifests that `glide unclip` and `vary` take as they stand, and one-line refusals.

tests/train/data/unclip_losses.pt comes from openai/improved-diffusion's
`GaussianDiffusion.training_losses` (from which Karlo's diffusion code derives), run once
outside the repository on fixed inputs with a model whose output was fixed too: the prior as
Karlo configures it (x0 prediction, MSE, cosine schedule), the decoder (eps, learned range,
MSE + the variational bound rescaled by steps / 1000). It holds those inputs, the x_t it fed
the model, and the per-example losses.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from glidecli.diffusion.schedule import Schedule
from glidecli.files.pngfile import read_png_metadata
from glidecli.nets.prior import ClipText
from glidecli.train.loop import Trainer, TrainingStopped
from glidecli.train.settings import Hyper, ModelSource, RunPlan
from glidecli.train.shapes import write_shapes
from glidecli.train.start import TrainingError
from glidecli.train.unclip_recipes import IMAGE_DROPOUT, DecoderForward, DecoderRecipe, PriorRecipe
from helpers.fixed_net import FixedNet
from helpers.glide_cli import assert_one_error_line, invoker

ORACLE = Path(__file__).parent / "data" / "unclip_losses.pt"
QUICK = RunPlan(steps=4, save_every=0, samples=False, log_every=1)
HYPER = Hyper(batch_size=4, lr=1e-3, warmup=2, ema=0.9)


@pytest.fixture(scope="module")
def oracle():
    return torch.load(ORACLE, weights_only=True)


def _trainer(net, prediction: str = "eps") -> SimpleNamespace:
    return SimpleNamespace(net=net, device=torch.device("cpu"), hyper=Hyper(), cfg=SimpleNamespace(prediction=prediction))


def _text(batch: int, dim: int = 8) -> ClipText:
    return ClipText(torch.zeros(batch, dim), torch.zeros(batch, 5, dim), torch.ones(batch, 5, dtype=torch.bool))


def test_the_prior_loss_equals_improved_diffusions(oracle):
    ref = oracle["prior"]
    recipe = PriorRecipe()
    recipe.schedule = Schedule.create("squaredcos_cap_v2", 1000)
    recipe.batch = lambda trainer, step: (ref["x0"], ref["t"], ref["noise"], _text(4))
    net = FixedNet(ref["output"])
    terms = recipe.loss(_trainer(net), 0)
    torch.testing.assert_close(net.inputs[0], ref["x_t"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.loss, ref["loss"], rtol=1e-5, atol=1e-6)


def test_the_decoder_loss_equals_improved_diffusions(oracle):
    ref = oracle["decoder"]
    recipe = DecoderRecipe()
    recipe.schedule = Schedule.create("squaredcos_cap_v2", 1000)
    no_image = torch.tensor([True, False, False, True])
    recipe.batch = lambda trainer, step: (ref["x0"], ref["t"], ref["noise"], _text(4), torch.ones(4, 8), no_image)
    net = FixedNet(ref["output"])
    terms = recipe.loss(_trainer(net), 0)
    torch.testing.assert_close(net.inputs[0], ref["x_t"], rtol=1e-5, atol=1e-6)
    assert torch.equal(net.inputs[-1], no_image)  # the dropout mask reaches the network
    for name, ours in (("loss", terms.loss), ("mse", terms.logged["mse"]), ("vb", terms.logged["vb"])):
        torch.testing.assert_close(ours, ref[name], rtol=1e-4, atol=1e-5)


def test_a_dropped_embedding_is_the_learned_no_image_embedding():
    from glidecli.nets.checkpoint import random_init_
    from helpers.tiny_unclip import tiny_unclip_network

    decoder = random_init_(tiny_unclip_network("unclip-decoder"), seed=4)
    forward = DecoderForward(decoder)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([3, 700])
    text = ClipText(torch.randn(2, 32, generator=g), torch.randn(2, 77, 32, generator=g), torch.ones(2, 77, dtype=torch.bool))
    image = torch.randn(2, 32, generator=g)
    with torch.no_grad():
        mixed = forward(x, t, *text, image, torch.tensor([True, False]))
        unguided = decoder(x, t, decoder.encode_clip(*text, None))
        guided = decoder(x, t, decoder.encode_clip(*text, image))
    assert torch.allclose(mixed[0], unguided[0], atol=1e-5) and torch.allclose(mixed[1], guided[1], atol=1e-5)


# --- runs -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_manifest(shapes, tmp_path_factory) -> Path:
    source = ModelSource(name="c", kind="clip", preset="micro", arch_changes={"text_ctx": 16})
    return Trainer(shapes, tmp_path_factory.mktemp("clip") / "run", source, HYPER, RunPlan(steps=2, save_every=0, samples=False)).run().manifest


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))


def _run(shapes, out, kind, manifest, plan=QUICK, hyper=HYPER, **kwargs):
    from glidecli.files.manifest import load_manifest

    source = ModelSource(name=kind.split("-")[1], kind=kind, preset="micro", clip="c")
    return Trainer(shapes, out, source, hyper, plan, manifest=load_manifest(manifest), **kwargs)


@pytest.mark.parametrize("kind", ["unclip-prior", "unclip-decoder"])
def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_result(shapes, clip_manifest, tmp_path, kind):
    _run(shapes, tmp_path / "whole", kind, clip_manifest).run()
    with pytest.raises(TrainingStopped):
        _run(shapes, tmp_path / "split", kind, clip_manifest).run(should_stop=lambda step: step == 2)
    from glidecli.files.manifest import load_manifest

    resumed = Trainer(shapes, tmp_path / "split", ModelSource(name=""), HYPER, QUICK, resume=True)
    assert resumed.step == 2 and resumed.run().step == 4
    for part in ("model", "ema", "optimizer"):
        a, b = (load_file(str(tmp_path / run / "checkpoints" / "step-4" / f"{part}.safetensors")) for run in ("whole", "split"))
        assert all(torch.equal(a[k], b[k]) for k in a), part
    made = load_manifest(tmp_path / "split" / "weights.toml")
    assert made.model("c").kind == "openclip" and made.model(kind.split("-")[1]).kind == kind
    if kind == "unclip-prior":
        assert made.model("prior-stats").kind == "clip-stats"
    # its [defaults] names what the run made and used (the CLIP), so commands need no model named
    made_roles = {"unclip-prior": {"unclip-prior": "prior", "clip-stats": "prior-stats"}, "unclip-decoder": {"unclip-decoder": "decoder"}}
    assert made.defaults == {"clip": "c", **made_roles[kind]}


def test_prior_then_decoder_make_a_manifest_glide_unclip_and_vary_use(shapes, clip_manifest, tmp_path, capsys, monkeypatch):
    plan = RunPlan(steps=2, save_every=0, samples=True, log_every=1)
    prior = _run(shapes, tmp_path / "prior", "unclip-prior", clip_manifest, plan).run()
    report = json.loads((tmp_path / "prior" / "samples" / "step-2.json").read_text())
    assert -1 <= report["cosine_to_own_picture"] <= 1
    decoder = _run(shapes, tmp_path / "decoder", "unclip-decoder", prior.manifest, plan).run()
    assert (tmp_path / "decoder" / "samples" / "step-2.png").is_file()
    glide = invoker(capsys, monkeypatch)
    models = ["--weights", decoder.manifest, "--prior-model", "prior", "--decoder-model", "decoder", "--clip-model", "c",
              "--clip-stats", "prior-stats", "--steps", "3", "--prior-steps", "3", "-q", "--device", "cpu"]  # no SR: 16x16
    made = glide("unclip", "a red circle on a blue background", *models, "--out", tmp_path / "u")
    assert made.code == 0, made.err
    from PIL import Image

    assert Image.open(made.paths[0]).size == (16, 16)
    varied = glide("vary", made.paths[0], "--weights", decoder.manifest, "--decoder-model", "decoder", "--clip-model", "c",
                   "--size", "16", "--steps", "3", "-q", "--device", "cpu", "--out", tmp_path / "v")
    assert varied.code == 0, varied.err
    # the decoder run's [defaults] names the CLIP, the prior (the one of the CLIP's width), its stats and the decoder
    unnamed = glide("unclip", "a red circle", "--weights", decoder.manifest, "--steps", "3", "--prior-steps", "3", "-q",
                    "--device", "cpu", "--out", tmp_path / "unnamed")
    assert unnamed.code == 0, unnamed.err
    meta = read_png_metadata(unnamed.paths[0])
    assert (meta["clip_model"], meta["prior_model"], meta["decoder_model"]) == ("c", "prior", "decoder")


def test_every_example_draws_its_own_dropouts(shapes, clip_manifest, tmp_path):
    """Half of the decoder's captions are dropped by default, a tenth of its embeddings."""
    trainer = _run(shapes, tmp_path / "d", "unclip-decoder", clip_manifest, hyper=dataclasses.replace(HYPER, batch_size=12, caption_dropout=0.5))
    recipe = trainer.recipe
    empty = recipe.data.empty.pooled[0]
    captions, images = 0, 0
    for step in range(40):
        _, _, _, text, _, no_image = recipe.batch(trainer, step)
        captions += int((text.pooled == empty).all(dim=1).sum())
        images += int(no_image.sum())
    assert abs(captions / 480 - 0.5) < 0.08 and abs(images / 480 - IMAGE_DROPOUT) < 0.05


# --- refusals ---------------------------------------------------------------------------------------


@pytest.fixture
def glide(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)
    return invoker(capsys, monkeypatch)


def test_refusals_are_one_line_and_write_nothing(glide, shapes, clip_manifest, tmp_path):
    base = ["train", shapes, "--preset", "micro", "--model", "p", "--batch-size", "2", "--steps", "1", "--device", "cpu", "-q"]
    assert_one_error_line(glide(*base, "--kind", "unclip-prior", "--out", tmp_path / "a"), 2, "--kind unclip-prior needs --clip NAME")
    not_clip = glide(*base, "--kind", "unclip-prior", "--clip", "c", "--out", tmp_path / "b")  # the packaged manifest has no c
    assert_one_error_line(not_clip, 1, "no model named 'c'")
    packaged_unet = glide(*base, "--kind", "unclip-prior", "--clip", "base", "--out", tmp_path / "c")
    assert_one_error_line(packaged_unet, 1, "--clip base: that model is a base, not a CLIP (openclip)")
    long = tmp_path / "long"
    list(write_shapes(long, 4, size=20, seed=1))
    (long / next(p.name for p in long.glob("*.txt"))).write_text("a red circle " * 20)
    long_run = glide("train", long, "--kind", "unclip-prior", "--clip", "c", "--weights", clip_manifest, *base[2:], "--out", tmp_path / "d")
    assert_one_error_line(long_run, 1, "captions are longer than CLIP c's 14 tokens")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_a_cache_made_by_another_clip_of_the_name_is_refused(shapes, clip_manifest, tmp_path):
    _run(shapes, tmp_path / "first", "unclip-prior", clip_manifest, RunPlan(steps=1, save_every=0, samples=False)).run()
    weights = clip_manifest.parent / "c.safetensors"
    other = tmp_path / "other"
    other.mkdir()
    retrained = Trainer(shapes, other / "run", ModelSource(name="c", kind="clip", preset="micro", arch_changes={"text_ctx": 16}),
                        dataclasses.replace(HYPER, seed=9), RunPlan(steps=2, save_every=0, samples=False)).run()
    assert retrained.weights.read_bytes() != weights.read_bytes()
    with pytest.raises(TrainingError) as info:
        _run(shapes, tmp_path / "second", "unclip-prior", retrained.manifest).run()
    assert "by another CLIP named c" in str(info.value) and not (tmp_path / "second").exists()


def test_glide_unclip_refuses_a_clip_of_another_width(shapes, clip_manifest, tmp_path, capsys, monkeypatch):
    """The packaged ViT-L/14 (768) with a prior and decoder trained on a 64-wide CLIP."""
    plan = RunPlan(steps=1, save_every=0, samples=False)
    prior = _run(shapes, tmp_path / "prior", "unclip-prior", clip_manifest, plan).run()
    decoder = _run(shapes, tmp_path / "decoder", "unclip-decoder", prior.manifest, plan).run()
    mixed = tmp_path / "mixed.toml"
    from glidecli.files.manifest import packaged_manifest_path

    packaged = packaged_manifest_path().read_text()
    vit = packaged[packaged.index("[models.clip-vit-l-14]"):packaged.index("# GLIDE's text encoder")]
    mixed.write_text(decoder.manifest.read_text().replace("../", str(tmp_path) + "/") + "\n" + vit)
    glide = invoker(capsys, monkeypatch)
    common = ["--weights", mixed, "--decoder-model", "decoder", "--clip-model", "clip-vit-l-14", "--size", "16", "-q", "--out", tmp_path / "x"]
    refused = glide("unclip", "a red circle", "--prior-model", "prior", "--clip-stats", "prior-stats", *common)
    assert_one_error_line(refused, 2, "prior reads CLIP embeddings of width 64, but --clip-model clip-vit-l-14 makes 768")
    picture = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (20, 20), "red").save(picture)
    assert_one_error_line(glide("vary", picture, *common), 2, "decoder reads CLIP embeddings of width 64")
    assert not (tmp_path / "x").exists()
