"""`glide train --kind unclip-sr --decoder NAME` (train/unclip_sr.py): the loss against
improved-diffusion's, the degraded low-resolution input, exact resume, torchrun, the Karlo SR
layout it exports (an `unclip-sr` entry that `glide unclip` runs after the prior and the
decoder), and one-line refusals.

tests/train/data/unclip_sr_losses.pt comes from openai/improved-diffusion's
`GaussianDiffusion.training_losses`, run once outside the repository with the diffusion
settings Karlo's SR model passes it (eps, learn_sigma False, sigma_small True, MSE, cosine
schedule, 1000 steps) on fixed inputs and a model whose output was fixed too (it also got the
low-resolution picture as its `low_res` keyword). It holds those inputs, the x_t it fed the
model, and the per-example losses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from glidecli.diffusion.losses import fixed_variance_loss, hybrid_loss
from glidecli.diffusion.schedule import Schedule
from glidecli.files.manifest import load_manifest
from glidecli.train.loop import Trainer, TrainingStopped
from glidecli.train.settings import Hyper, ModelSource, RunPlan
from glidecli.train.unclip_sr import SR_PARTS, SuperResRecipe, degraded_low_res, gaussian_blur
from helpers.fixed_net import FixedNet
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.torchrun import can_run_ranks, glide_command, glide_env, torchrun_command

ORACLE = Path(__file__).parent / "data" / "unclip_sr_losses.pt"
QUICK = RunPlan(steps=4, save_every=0, samples=False, log_every=1)
HYPER = Hyper(batch_size=3, lr=1e-3, warmup=2, ema=0.9)
needs_ranks = pytest.mark.skipif(can_run_ranks() is not None, reason=str(can_run_ranks()))


def test_the_sr_loss_equals_improved_diffusions():
    ref = torch.load(ORACLE, weights_only=True)["sr"]
    recipe = SuperResRecipe()
    recipe.schedule = Schedule.create("squaredcos_cap_v2", 1000)
    recipe.batch = lambda trainer, step: (ref["x0"], ref["t"], ref["noise"], ref["low_res"])
    net = FixedNet(ref["output"])
    trainer = SimpleNamespace(net=net, device=torch.device("cpu"), hyper=Hyper(), cfg=SimpleNamespace(prediction="eps"))
    terms = recipe.loss(trainer, 0)
    torch.testing.assert_close(net.inputs[0], ref["x_t"], rtol=1e-5, atol=1e-6)
    assert torch.equal(net.inputs[1], ref["t"]) and torch.equal(net.inputs[2], ref["low_res"])
    torch.testing.assert_close(terms.loss, ref["loss"], rtol=1e-5, atol=1e-6)


def test_the_v_target_is_the_hybrid_losss():
    """For v, the MSE is the one GLIDE's kinds learn (losses.hybrid_loss), without the bound."""
    g = torch.Generator().manual_seed(1)
    schedule = Schedule.create("squaredcos_cap_v2", 1000)
    x0, noise, out = (torch.randn(3, 3, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([5, 400, 990])
    x_t = torch.zeros_like(x0)  # only the bound reads it
    fixed = fixed_variance_loss(schedule, out, x0, t, noise, prediction="v")
    hybrid = hybrid_loss(schedule, torch.cat([out, torch.zeros_like(out)], dim=1), x0, x_t, t, noise, prediction="v")
    torch.testing.assert_close(fixed.mse, hybrid.mse)
    assert torch.equal(fixed.loss, fixed.mse) and not fixed.vb.any()
    with pytest.raises(ValueError, match="fixed variance"):
        fixed_variance_loss(schedule, torch.cat([out, out], dim=1), x0, t, noise)


def test_the_low_resolution_input_is_the_shrunk_picture_slightly_degraded():
    g = torch.Generator().manual_seed(2)
    picture = torch.rand(3, 32, 32, generator=g) * 2 - 1
    clean = degraded_low_res(picture, 8, 0.0, torch.zeros(3, 8, 8))
    small = F.interpolate(picture[None], size=(8, 8), mode="bicubic", align_corners=False, antialias=True)
    # As render/unclip.super_resolve resizes the decoder's pictures.
    expected = F.interpolate(small.clamp(-1, 1), size=(32, 32), mode="bicubic", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(clean, expected)
    flat = torch.full((3, 8, 8), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, 0.8), flat)  # the kernel sums to one
    blurred = gaussian_blur(small[0], 0.8)
    assert blurred.std() < small[0].std() and (blurred - small[0]).abs().max() > 0.05
    noisy = degraded_low_res(picture, 8, 0.0, torch.full((3, 8, 8), 0.02))
    assert 0.0 < (noisy - clean).abs().mean() < 0.05


# --- runs -----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def unclip_manifest(shapes, tmp_path_factory) -> Path:
    """A CLIP, a prior and a 16px decoder (micro), a step each: a whole small unCLIP but its SR."""
    folder = tmp_path_factory.mktemp("unclip")
    clip = Trainer(shapes, folder / "clip", ModelSource(name="c", kind="clip", preset="micro", arch_changes={"text_ctx": 16}),
                   Hyper(batch_size=4), RunPlan(steps=2, save_every=0, samples=False)).run().manifest
    plan = RunPlan(steps=1, save_every=0, samples=False)
    prior = Trainer(shapes, folder / "prior", ModelSource(name="prior", kind="unclip-prior", preset="micro", clip="c"),
                    Hyper(batch_size=4), plan, manifest=load_manifest(clip)).run().manifest
    return Trainer(shapes, folder / "decoder", ModelSource(name="decoder", kind="unclip-decoder", preset="micro", clip="c"),
                   Hyper(batch_size=4), plan, manifest=load_manifest(prior)).run().manifest


def _run(shapes, out, manifest, plan=QUICK, **kwargs):
    source = ModelSource(name="sr", kind="unclip-sr", preset="micro", decoder="decoder")
    return Trainer(shapes, out, source, HYPER, plan, manifest=load_manifest(manifest), **kwargs)


def test_the_sr_enlarges_the_decoders_pictures_4x_from_its_own_draws(shapes, unclip_manifest, tmp_path):
    trainer = _run(shapes, tmp_path / "r", unclip_manifest)
    assert trainer.cfg.image_size == 64 and trainer.cfg.out_channels == 3 and not trainer.cfg.attention_resolutions
    x0, t, noise, low_res = trainer.recipe.batch(trainer, 5)
    assert x0.shape == noise.shape == low_res.shape == (3, 3, 64, 64) and t.shape == (3,)
    again = trainer.recipe.batch(trainer, 5)
    assert all(torch.equal(a, b) for a, b in zip((x0, t, noise, low_res), again))  # (seed, step) alone
    # The input is the picture 16px, blurred: close to it, never equal.
    assert 0 < (low_res - x0).abs().mean() < 0.3


def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_result(shapes, unclip_manifest, tmp_path):
    _run(shapes, tmp_path / "whole", unclip_manifest).run()
    with pytest.raises(TrainingStopped):
        _run(shapes, tmp_path / "split", unclip_manifest).run(should_stop=lambda step: step == 2)
    resumed = Trainer(shapes, tmp_path / "split", ModelSource(name=""), HYPER, QUICK, resume=True)
    assert resumed.step == 2 and resumed.run().step == 4
    for part in ("model", "ema", "optimizer"):
        a, b = (load_file(str(tmp_path / run / "checkpoints" / "step-4" / f"{part}.safetensors")) for run in ("whole", "split"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert (tmp_path / "whole" / "sr.safetensors").read_bytes() == (tmp_path / "split" / "sr.safetensors").read_bytes()


def test_the_export_is_karlos_sr_layout_and_glide_unclip_runs_all_three(shapes, unclip_manifest, tmp_path, capsys, monkeypatch):
    from glidecli.nets.checkpoint import load_network
    from glidecli.nets.unclip import ImprovedSuperRes

    result = _run(shapes, tmp_path / "sr", unclip_manifest, RunPlan(steps=2, save_every=0, samples=True, log_every=1)).run()
    assert (tmp_path / "sr" / "samples" / "step-2.png").is_file()
    made = load_manifest(result.manifest)
    assert {name: made.model(name).kind for name in ("c", "prior", "prior-stats", "decoder", "sr")} == {
        "c": "openclip", "prior": "unclip-prior", "prior-stats": "clip-stats", "decoder": "unclip-decoder", "sr": "unclip-sr"}
    ema = load_file(str(tmp_path / "sr" / "checkpoints" / "step-2" / "ema.safetensors"))
    exported = load_file(str(result.weights))
    assert set(exported) == {f"{part}.{key}" for part in SR_PARTS for key in ema}  # the release's two U-Nets
    assert all(torch.equal(exported[f"{part}.{key}"], value) for part in SR_PARTS for key, value in ema.items())
    sr = load_network("unclip-sr", made.model("sr").arch, result.weights)
    assert isinstance(sr, ImprovedSuperRes)

    glide = invoker(capsys, monkeypatch)
    models = ["--weights", result.manifest, "--prior-model", "prior", "--decoder-model", "decoder", "--clip-model", "c",
              "--clip-stats", "prior-stats", "--sr-model", "sr", "--steps", "3", "--prior-steps", "3", "-q", "--device", "cpu"]
    drawn = glide("unclip", "a red circle on a blue background", *models, "--out", tmp_path / "u")
    assert drawn.code == 0, drawn.err
    from PIL import Image

    assert Image.open(drawn.paths[0]).size == (64, 64)
    small = glide("unclip", "a red circle on a blue background", *models, "--size", "16", "--out", tmp_path / "s")
    assert small.code == 0 and Image.open(small.paths[0]).size == (16, 16)


@needs_ranks
def test_torchrun_sr_training_matches_one_process(shapes, unclip_manifest, tmp_path):
    command = ["train", shapes, "--kind", "unclip-sr", "--decoder", "decoder", "--weights", unclip_manifest, "--preset", "micro",
               "--model", "m", "--steps", "3", "--batch-size", "3", "--lr", "1e-3", "--no-samples", "--log-every", "1", "--device", "cpu", "-q"]
    env = glide_env(GLIDE_CACHE=str(tmp_path / "cache"))
    one = subprocess.run(glide_command([*command, "--out", tmp_path / "one"]), env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(torchrun_command([*command, "--out", tmp_path / "two"]), env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    import json

    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in ("one", "two")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)  # batches of 3: ranks of 2 and 1
    first, second = (load_file(str(tmp_path / run / "checkpoints" / "step-3" / "optimizer.safetensors")) for run in ("one", "two"))
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, atol=1e-6, rtol=1e-4)


# --- refusals ---------------------------------------------------------------------------------------


@pytest.fixture
def glide(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)
    return invoker(capsys, monkeypatch)


def test_refusals_are_one_line_and_write_nothing(glide, shapes, unclip_manifest, tmp_path):
    base = ["train", shapes, "--kind", "unclip-sr", "--preset", "micro", "--model", "s", "--batch-size", "2", "--steps", "1", "--device", "cpu", "-q"]
    given = ["--weights", unclip_manifest]
    assert_one_error_line(glide(*base, *given, "--out", tmp_path / "a"), 2, "--kind unclip-sr needs --decoder NAME")
    assert_one_error_line(glide(*base, *given, "--decoder", "nope", "--out", tmp_path / "b"), 1, "no model named 'nope'")
    not_decoder = glide(*base, *given, "--decoder", "c", "--out", tmp_path / "c")
    assert_one_error_line(not_decoder, 1, "--decoder c: that model is a openclip, not an unCLIP decoder (unclip-decoder)")
    with_clip = glide(*base, *given, "--decoder", "decoder", "--clip", "c", "--out", tmp_path / "d")
    assert_one_error_line(with_clip, 2, "--clip goes with --kind unclip-prior or unclip-decoder")
    glide_kind = glide("train", shapes, "--preset", "micro", "--model", "m", "--decoder", "decoder", "--out", tmp_path / "e")
    assert_one_error_line(glide_kind, 2, "--decoder goes with --kind unclip-sr")
    fine_tune = glide("train", shapes, "--kind", "unclip-sr", "--model", "decoder", "--decoder", "decoder", *given, "--out", tmp_path / "f")
    assert_one_error_line(fine_tune, 2, "'decoder' is a unclip-decoder model")
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_a_narrow_sr_normalizes_in_fewer_groups_and_keeps_a_pictures_colour():
    """With 32 channels in 32 groups, each channel is normalized alone: the network's last
    GroupNorm gives the same output for a shape in one colour and in another whose channels
    differ from its background in the same directions; in 8 groups of 4 it does not."""
    from glidecli.nets.unclip_config import karlo_sr_config
    from glidecli.nets.unet import Text2ImUNet

    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, 16, 16, generator=g) > 0.5).float()
    red, blue = mask * torch.tensor([0.8, 0.2, 0.2])[:, None, None], mask * torch.tensor([0.2, 0.8, 0.2])[:, None, None]
    for groups, differs in ((32, False), (8, True)):
        net = Text2ImUNet(karlo_sr_config(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), norm_groups=groups))
        assert {m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)} == {groups}
        final = net.out[0]
        features = torch.cat([red, blue], dim=0).repeat(1, 11, 1, 1)[:, :32]  # colour in the channels' levels
        out = final(features * 3 + 1)
        assert (not torch.allclose(out[0], out[1], atol=1e-4)) == differs, groups
    with pytest.raises(ValueError, match="norm_groups"):
        karlo_sr_config(norm_groups=0)
