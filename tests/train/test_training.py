"""Training (`glide train`, glidecli.train.loop): the loss, the data, reproducibility, exact
resume after a stop, the output a `glide generate` can use at once, and clear errors for
bad data. Every run is a few steps of a micro network on a dozen 16x16 pictures."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from glidecli.diffusion.losses import (
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    min_snr_weight,
    normal_kl,
    q_sample,
)
from glidecli.diffusion.schedule import Schedule
from glidecli.files.manifest import ManifestError, load_manifest
from glidecli.nets.checkpoint import build_network, save_network
from glidecli.nets.tokenizer import GlideTokenizer
from glidecli.render.shard import share
from glidecli.train.data import BatchMaker, noisy_start
from glidecli.train.dataset import DatasetError, build_caption_tokenizer, scan_dataset
from glidecli.train.loop import Progress, Trainer, TrainingStopped
from glidecli.train.settings import Hyper, ModelSource, RunPlan, preset_config
from glidecli.train.shapes import SHAPE_COLOURS, shape_scene, write_shapes
from glidecli.train.start import TrainingError
from glidecli.train.state import enable_gradient_checkpointing, init_fresh_
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.tiny import tiny_network

MICRO = ModelSource(name="micro", preset="micro")
QUICK = RunPlan(steps=4, save_every=0, samples=False, log_every=1)
HYPER = Hyper(batch_size=2, lr=1e-3, warmup=2, ema=0.9)


# --- the loss ---------------------------------------------------------------------------------


def test_normal_kl_is_zero_for_equal_gaussians_and_matches_the_formula():
    mean, logvar = torch.randn(5), torch.randn(5)
    assert torch.allclose(normal_kl(mean, logvar, mean, logvar), torch.zeros(5), atol=1e-6)
    kl = normal_kl(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0), torch.tensor(math.log(4.0)))
    assert math.isclose(float(kl), math.log(2.0) + (1 + 1) / 8 - 0.5, rel_tol=1e-5)  # log(s2/s1) + (s1^2 + d^2)/(2 s2^2) - 1/2


def test_discretized_likelihood_sums_to_one_over_the_256_levels():
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1.0
    for mean, log_scale in ((0.1, -2.0), (-0.7, -4.0), (0.99, -1.0)):
        log_p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale))
        assert math.isclose(float(log_p.exp().sum()), 1.0, abs_tol=2e-3)


def test_q_sample_matches_the_schedule_for_every_example():
    schedule = Schedule.create("squaredcos_cap_v2", 1000)
    x0, noise = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    t = torch.tensor([0, 500, 999])
    batched = q_sample(schedule, x0, t, noise)
    for k in range(3):
        assert torch.allclose(batched[k], schedule.q_sample(x0[k : k + 1], int(t[k]), noise[k : k + 1])[0], atol=1e-6)


def test_hybrid_loss_is_mse_plus_rescaled_vb_that_trains_only_the_variance():
    schedule = Schedule.create("linear", 1000)
    x0 = torch.rand(4, 3, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 400, 999])
    x_t = q_sample(schedule, x0, t, noise)
    output = torch.randn(4, 6, 4, 4, requires_grad=True)
    terms = hybrid_loss(schedule, output, x0, x_t, t, noise)
    assert torch.allclose(terms.mse, ((noise - output[:, :3]) ** 2).mean(dim=(1, 2, 3)))
    assert torch.allclose(terms.loss, terms.mse + terms.vb)
    # The VB term at t > 0 against the sampler's own formulas (schedule.py), per example.
    for k in (1, 2, 3):
        i = int(t[k])
        eps, v = output[k : k + 1, :3].detach(), output[k : k + 1, 3:].detach()
        x0_pred = schedule.predict_x0(x_t[k : k + 1], i, eps)
        model_mean = schedule.posterior_mean(x0_pred, x_t[k : k + 1], i)
        true_mean = schedule.posterior_mean(x0[k : k + 1], x_t[k : k + 1], i)
        log_var = schedule.learned_log_variance(v, i)
        kl = normal_kl(true_mean, schedule.posterior_log_variance(i, x0), model_mean, log_var).mean() / math.log(2.0)
        assert math.isclose(float(terms.vb[k].detach()), float(kl), rel_tol=1e-4, abs_tol=1e-6)
    # Gradients: the VB term reaches only the variance channels.
    terms.vb.sum().backward()
    assert output.grad[:, :3].abs().max() == 0 and output.grad[:, 3:].abs().max() > 0


def test_min_snr_weighting_scales_only_the_mse_of_low_noise_steps():
    schedule = Schedule.create("squaredcos_cap_v2")
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    t = torch.tensor([10, 300, 500, 700, 990])
    weight = min_snr_weight(schedule, t, 5.0)
    expected = (snr[t].clamp(max=5.0) / snr[t]).float()
    torch.testing.assert_close(weight, expected)
    assert weight[0] < 0.01 and float(weight[-1]) == 1.0  # noisy steps keep weight 1
    generator = torch.Generator().manual_seed(3)
    x0, noise = torch.rand(5, 3, 4, 4, generator=generator) * 2 - 1, torch.randn(5, 3, 4, 4, generator=generator)
    x_t = q_sample(schedule, x0, t, noise)
    output = torch.randn(5, 6, 4, 4, generator=generator)
    plain = hybrid_loss(schedule, output, x0, x_t, t, noise)
    weighted = hybrid_loss(schedule, output, x0, x_t, t, noise, min_snr_gamma=5.0)
    torch.testing.assert_close(weighted.mse, plain.mse)
    torch.testing.assert_close(weighted.loss, plain.mse * weight + plain.vb)
    with pytest.raises(ValueError, match="gamma"):
        min_snr_weight(schedule, t, 0.0)


def test_v_prediction_loss_is_the_eps_loss_weighted_by_one_plus_inverse_snr():
    """For a v output and the eps it implies (eps = sqrt(1-ab) x_t + sqrt(ab) v), the v MSE is
    the eps MSE times 1 + 1/SNR, the VB term is the same, and Min-SNR-gamma gives the same
    weighted eps loss either way."""
    schedule = Schedule.create("squaredcos_cap_v2")
    generator = torch.Generator().manual_seed(4)
    x0 = torch.rand(5, 3, 4, 4, generator=generator) * 2 - 1
    noise = torch.randn(5, 3, 4, 4, generator=generator)
    t = torch.tensor([0, 50, 500, 900, 990])
    x_t = q_sample(schedule, x0, t, noise)
    v_out = torch.randn(5, 6, 4, 4, generator=generator, dtype=torch.float64).float()
    ab = schedule.alphas_cumprod[t].view(-1, 1, 1, 1).float()
    eps_out = torch.cat([(1 - ab).sqrt() * x_t + ab.sqrt() * v_out[:, :3], v_out[:, 3:]], dim=1)
    as_v = hybrid_loss(schedule, v_out, x0, x_t, t, noise, prediction="v")
    as_eps = hybrid_loss(schedule, eps_out, x0, x_t, t, noise)
    snr = (schedule.alphas_cumprod / (1 - schedule.alphas_cumprod))[t].float()
    torch.testing.assert_close(as_v.mse, as_eps.mse * (1 + 1 / snr), rtol=2e-4, atol=1e-6)
    torch.testing.assert_close(as_v.vb, as_eps.vb, rtol=1e-3, atol=1e-5)
    # The exact v gives zero MSE.
    v_true = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    exact = hybrid_loss(schedule, torch.cat([v_true, v_out[:, 3:]], dim=1), x0, x_t, t, noise, prediction="v")
    assert float(exact.mse.max()) < 1e-10
    weighted_v = hybrid_loss(schedule, v_out, x0, x_t, t, noise, min_snr_gamma=5.0, prediction="v")
    weighted_eps = hybrid_loss(schedule, eps_out, x0, x_t, t, noise, min_snr_gamma=5.0)
    torch.testing.assert_close(weighted_v.loss - weighted_v.vb, weighted_eps.loss - weighted_eps.vb, rtol=2e-4, atol=1e-6)


def test_hybrid_loss_rejects_a_respaced_schedule():
    schedule = Schedule.create("linear", 1000, "100")
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="respaced"):
        hybrid_loss(schedule, torch.zeros(1, 6, 2, 2), x, x, torch.tensor([5]), x)


# --- data ----------------------------------------------------------------------------------------


def test_shapes_are_reproducible_and_captioned_by_their_colours(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    list(write_shapes(a, 6, size=32, seed=7))
    list(write_shapes(b, 6, size=32, seed=7))
    for png in sorted(a.glob("*.png")):
        assert png.read_bytes() == (b / png.name).read_bytes()
        caption = png.with_suffix(".txt").read_text().strip()
        words = caption.split()
        colour, background = words[1], words[-2]
        pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)
        assert np.abs(pixels[0, 0] - SHAPE_COLOURS[background]).max() <= 2
        assert np.abs(pixels[16, 16] - SHAPE_COLOURS[colour]).max() <= 2
        assert caption.startswith(("a ", "an ")) and caption.endswith(" background")


def test_shape_captions_use_an_before_vowels():
    import random

    captions = {shape_scene(random.Random(seed), 8)[1] for seed in range(200)}
    assert any(c.startswith("an orange ") for c in captions)
    assert not any(" a orange" in c or c.startswith("a orange") for c in captions)


def test_bad_files_are_skipped_and_counted(tmp_path):
    list(write_shapes(tmp_path, 4, size=16, seed=0))
    (tmp_path / "00001.txt").unlink()  # no caption
    (tmp_path / "00002.png").write_bytes(b"not a png")  # unreadable
    (tmp_path / "00003.txt").write_text("  \n")  # empty caption
    (tmp_path / "orphan.txt").write_text("a caption without a picture")
    dataset = scan_dataset(tmp_path)
    assert [e.path.name for e in dataset.examples] == ["00000.png"]
    assert dataset.skipped.count == 4
    report = dataset.report()
    for fragment in ("skipped 4 files", "1 without a caption (e.g. 00001.png)", "1 unreadable images (e.g. 00002.png",
                     "1 with an empty caption", "1 captions without an image"):
        assert fragment in report, report


def test_jsonl_data_sets(tmp_path):
    list(write_shapes(tmp_path, 3, size=16, seed=0, jsonl=True))
    lines = (tmp_path / "captions.jsonl").read_text().splitlines()
    lines += ["not json", json.dumps({"path": "missing.png", "caption": "x"}), json.dumps({"caption": "no path"})]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    dataset = scan_dataset(tmp_path / "captions.jsonl")
    assert len(dataset) == 3 and dataset.skipped.count == 3
    assert "line 4" in dataset.report() and "missing images" in dataset.report()


def test_unusable_data_sets_fail_with_one_line(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        scan_dataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        scan_dataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"junk")
    (tmp_path / "bad" / "a.txt").write_text("a caption")
    with pytest.raises(DatasetError, match="no usable examples.*skipped 1"):
        scan_dataset(tmp_path / "bad")


def test_caption_tokenizer_pads_with_its_last_id_and_encodes_anything(tmp_path):
    captions = ["a red circle on a blue background", "an orange square on a white background"] * 5
    path = build_caption_tokenizer(captions, tmp_path / "tok.json", vocab_size=300)
    tokenizer = GlideTokenizer.from_file(path, text_ctx=12)
    assert tokenizer.pad_token == tokenizer.vocab_size - 1 == tokenizer.max_token
    assert len(tokenizer.encode("a red circle on a blue background")) < 12  # words are merged
    assert tokenizer.encode("A RED circle") == tokenizer.encode("a red circle")
    assert tokenizer.encode("zebra ünïcode")  # unseen text still encodes (byte level)
    batch = tokenizer.batch(["", "a red circle"])
    assert not batch.mask[0].any() and (batch.tokens[0] == tokenizer.pad_token).all()


# --- the manifest's per-model tokenizer -------------------------------------------------------


def _manifest(tmp_path: Path, model_extra: str, tokenizers: str) -> Path:
    path = tmp_path / "weights.toml"
    path.write_text(f'version = 1\n[models.m]\nkind = "base"\npath = "m.safetensors"\n{model_extra}\n{tokenizers}\n')
    return path


def test_models_name_their_tokenizer(tmp_path):
    manifest = load_manifest(_manifest(tmp_path, 'tokenizer = "mine"', '[tokenizers.mine]\npath = "t.json"'))
    assert manifest.model("m").tokenizer == "mine"
    assert manifest.tokenizer("mine").source.path == tmp_path / "t.json"
    assert load_manifest(_manifest(tmp_path, "", "")).model("m").tokenizer == "gpt2"  # the default
    with pytest.raises(ManifestError, match="tokenizer 'nope'.*no \\[tokenizers.nope\\]"):
        load_manifest(_manifest(tmp_path, 'tokenizer = "nope"', ""))
    with pytest.raises(ManifestError, match="tokenizer must be"):
        load_manifest(_manifest(tmp_path, "tokenizer = 3", ""))


# --- batches and determinism ---------------------------------------------------------------


def _batch_maker(shapes: Path, tmp_path: Path, kind: str = "base", **hyper) -> BatchMaker:
    dataset = scan_dataset(shapes)
    tokenizer_path = build_caption_tokenizer([e.caption for e in dataset.examples], tmp_path / "tok.json", 300)
    cfg = preset_config(kind, "micro", n_vocab=300)
    tokenizer = GlideTokenizer.from_file(tokenizer_path, text_ctx=cfg.text_ctx)
    return BatchMaker(dataset, tokenizer, cfg, dataclasses.replace(HYPER, **hyper))


def test_batches_depend_on_seed_and_step_alone(shapes, tmp_path):
    make = _batch_maker(shapes, tmp_path, batch_size=5)
    first, again, other = make(3), _batch_maker(shapes, tmp_path, batch_size=5)(3), make(4)
    for name in ("x0", "tokens", "mask", "t", "noise"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.noise, other.noise)
    assert first.x0.shape == (5, 3, 16, 16) and first.x0.min() >= -1 and first.x0.max() <= 1
    # Each epoch visits every example once.
    epoch = [i for step in range(12 // 5 + 1) for i in make(step).indices][:12]
    assert sorted(epoch) == list(range(12))


@pytest.mark.parametrize("kind", ["base-inpaint", "upsample"])
def test_the_shares_of_a_batch_together_are_the_whole_batch(shapes, tmp_path, kind):
    """What each rank of a torchrun builds (render/shard.py's balanced contiguous runs of the
    global batch) is exactly its slice of the batch one process builds."""
    make = _batch_maker(shapes, tmp_path, kind=kind, batch_size=5, caption_dropout=0.5, noisy_share=0.5)
    whole = make(7)
    for ranks in (2, 3, 5):
        parts = [make(7, share(5, rank, ranks)) for rank in range(ranks)]
        for name in ("x0", "tokens", "mask", "t", "noise", "dropped", "low_res", "keep_mask"):
            if getattr(whole, name) is not None:
                assert torch.equal(torch.cat([getattr(part, name) for part in parts]), getattr(whole, name)), (ranks, name)
        assert [i for part in parts for i in part.indices] == whole.indices


def test_dropped_captions_are_all_padding(shapes, tmp_path):
    make = _batch_maker(shapes, tmp_path, batch_size=12, caption_dropout=0.5)
    batches = [make(step) for step in range(10)]
    dropped = torch.cat([b.dropped for b in batches])
    assert 0.3 < dropped.float().mean() < 0.7
    for batch in batches:
        assert not batch.mask[batch.dropped].any()
        assert batch.mask[~batch.dropped].any(dim=1).all()
    assert not _batch_maker(shapes, tmp_path, batch_size=12, caption_dropout=0.0)(0).dropped.any()


def test_noisy_share_draws_that_share_of_timesteps_from_the_noisiest_stretch(shapes, tmp_path):
    start = noisy_start(1000)
    assert start == 850
    uniform = [_batch_maker(shapes, tmp_path, batch_size=12)(step).t for step in range(10)]
    half = [_batch_maker(shapes, tmp_path, batch_size=12, noisy_share=0.5)(step).t for step in range(10)]
    every = torch.cat([_batch_maker(shapes, tmp_path, batch_size=12, noisy_share=1.0)(step).t for step in range(10)])
    assert every.min() >= start and len(set(every.tolist())) > 50
    share = lambda ts: float((torch.cat(ts) >= start).float().mean())  # noqa: E731
    assert share(uniform) < 0.3 and 0.45 < share(half) < 0.8
    # Examples that keep a uniform draw keep exactly the draw a plain run makes.
    for plain, mixed in zip(uniform, half):
        kept = mixed < start
        assert torch.equal(mixed[kept], plain[kept])


def test_upsampler_batches_carry_the_4x_smaller_crop(shapes, tmp_path):
    batch = _batch_maker(shapes, tmp_path, kind="upsample", batch_size=2)(0)
    assert batch.x0.shape == (2, 3, 32, 32) and batch.low_res.shape == (2, 3, 8, 8)
    # The low-resolution input is the picture itself, smaller.
    shrunk = torch.nn.functional.avg_pool2d(batch.x0, 4)
    assert (shrunk - batch.low_res).abs().mean() < 0.05


def test_inpainting_batches_erase_random_rectangles_in_the_stated_shares(shapes, tmp_path):
    batches = [_batch_maker(shapes, tmp_path, kind="base-inpaint", batch_size=12)(step) for step in range(20)]
    masks = torch.cat([b.keep_mask for b in batches])
    assert masks.shape == (240, 1, 16, 16) and set(masks.unique().tolist()) <= {0.0, 1.0}
    erased = 1.0 - masks.flatten(1).mean(dim=1)
    everything = erased == 1.0

    def is_rectangle(region: torch.Tensor) -> bool:  # [S, S] bool: fills its bounding box
        rows, cols = region.any(dim=1).nonzero(), region.any(dim=0).nonzero()
        return bool(region.any()) and int(region.sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)

    hole = torch.tensor([is_rectangle(m[0] == 0) and not e for m, e in zip(masks, everything)])
    kept_box = torch.tensor([is_rectangle(m[0] == 1) for m in masks])
    assert not (hole & kept_box).any() and bool((hole | kept_box | everything).all())
    shares = {name: float(m.float().mean()) for name, m in (("hole", hole), ("surroundings", kept_box), ("everything", everything))}
    assert abs(shares["hole"] - 0.6) < 0.12 and abs(shares["surroundings"] - 0.25) < 0.1 and abs(shares["everything"] - 0.15) < 0.08, shares
    # Rectangles are 30-70% of each side: a hole erases 9-49% of the picture.
    assert erased[hole].min() >= 0.3**2 - 0.02 and erased[hole].max() <= 0.7**2 + 0.02
    # The masks are drawn after everything else: the rest of the batch is a base model's batch.
    plain = _batch_maker(shapes, tmp_path, batch_size=12)(3)
    assert plain.keep_mask is None
    for name in ("x0", "tokens", "t", "noise"):
        assert torch.equal(getattr(plain, name), getattr(batches[3], name))


@pytest.mark.parametrize("kind", ["base", "upsample"])
def test_an_inpainting_model_starts_as_the_model_it_is_made_from(kind):
    """GLIDE's recipe: the new input channels (masked picture and mask) start at zero, so
    before fine-tuning the inpainting network computes exactly what the old one did."""
    from glidecli.train.state import inpainting_weights, network_from_weights

    network = tiny_network(kind)
    cfg = dataclasses.replace(network.config, inpaint=True)
    widened = network_from_weights(f"{kind}-inpaint", cfg, inpainting_weights(network.state_dict(), network.config), torch.device("cpu"))
    size = cfg.image_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=generator)
    low_res = torch.randn(2, 3, size // 4, size // 4, generator=generator) if cfg.super_res else None
    tokens = torch.randint(0, cfg.n_vocab, (2, cfg.text_ctx), generator=generator)
    mask = torch.ones(2, cfg.text_ctx, dtype=torch.bool)
    t = torch.tensor([5, 700])
    with torch.no_grad():
        before = network(x, t, network.encode_text(tokens, mask), low_res=low_res)
        known = torch.randint(0, 2, (2, 1, size, size), generator=generator).float()
        after = widened(x, t, widened.encode_text(tokens, mask), low_res=low_res, inpaint_image=x.flip(0), inpaint_mask=known)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="already"):
        inpainting_weights(widened.state_dict(), cfg)


def test_gradient_checkpointing_computes_the_same_gradients():
    torch.manual_seed(0)
    cfg = preset_config("base", "micro", n_vocab=50)
    plain = init_fresh_(build_network("base", cfg), 0)
    for module in plain.modules():  # make every branch matter
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.05)
    checked = build_network("base", cfg)
    checked.load_state_dict(plain.state_dict())
    enable_gradient_checkpointing(checked)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    tokens, mask = torch.randint(0, 50, (2, 8)), torch.ones(2, 8, dtype=torch.bool)
    grads = []
    for model in (plain, checked):
        model(x, t, model.encode_text(tokens, mask)).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


# --- runs -------------------------------------------------------------------------------------


def _tensors(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(str(folder / f"{name}.safetensors")) for name in ("model", "ema", "optimizer")}


def _assert_identical(a: Path, b: Path) -> None:
    first, second = _tensors(a), _tensors(b)
    for name in first:
        assert first[name].keys() == second[name].keys(), name
        for key in first[name]:
            assert torch.equal(first[name][key], second[name][key]), f"{name}: {key}"
    state_a, state_b = (json.loads((p / "state.json").read_text()) for p in (a, b))
    assert state_a == state_b


def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_result(shapes, tmp_path):
    Trainer(shapes, tmp_path / "whole", MICRO, HYPER, QUICK).run()
    with pytest.raises(TrainingStopped) as stopped:
        Trainer(shapes, tmp_path / "split", MICRO, HYPER, QUICK).run(should_stop=lambda step: step == 2)
    assert stopped.value.step == 2 and stopped.value.checkpoint.name == "step-2"
    resumed = Trainer(shapes, tmp_path / "split", MICRO, HYPER, QUICK, resume=True)
    assert resumed.step == 2
    result = resumed.run()
    assert result.step == 4
    _assert_identical(tmp_path / "whole" / "checkpoints" / "step-4", tmp_path / "split" / "checkpoints" / "step-4")
    assert (tmp_path / "whole" / "micro.safetensors").read_bytes() == (tmp_path / "split" / "micro.safetensors").read_bytes()
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_resumed_run_exports_in_the_precision_it_was_set_up_with(shapes, tmp_path):
    with pytest.raises(TrainingStopped):
        Trainer(shapes, tmp_path / "run", MICRO, HYPER, dataclasses.replace(QUICK, save_dtype="fp16")).run(should_stop=lambda step: step == 1)
    Trainer(shapes, tmp_path / "run", MICRO, HYPER, QUICK, resume=True).run()
    assert {t.dtype for t in load_file(str(tmp_path / "run" / "micro.safetensors")).values()} == {torch.float16}
    Trainer(shapes, tmp_path / "run", MICRO, HYPER, dataclasses.replace(QUICK, save_dtype="fp32"), resume=True).run()
    assert {t.dtype for t in load_file(str(tmp_path / "run" / "micro.safetensors")).values()} == {torch.float32}


def test_seeds_make_runs_reproducible(shapes, tmp_path):
    plan = dataclasses.replace(QUICK, steps=2)
    for folder, seed in (("a", 1), ("b", 1), ("c", 2)):
        Trainer(shapes, tmp_path / folder, MICRO, dataclasses.replace(HYPER, seed=seed), plan).run()
    weights = {f: load_file(str(tmp_path / f / "micro.safetensors")) for f in "abc"}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_resume_refuses_other_settings_and_other_data(shapes, tmp_path):
    with pytest.raises(TrainingStopped):
        Trainer(shapes, tmp_path / "run", MICRO, HYPER, QUICK).run(should_stop=lambda step: step == 1)
    with pytest.raises(TrainingError, match="--lr 0.5 differs"):
        Trainer(shapes, tmp_path / "run", MICRO, dataclasses.replace(HYPER, lr=0.5), QUICK, resume=True)
    # Settings not given explicitly come from the run.
    resumed = Trainer(shapes, tmp_path / "run", MICRO, dataclasses.replace(HYPER, lr=0.5), QUICK, resume=True, hyper_given=set())
    assert resumed.hyper == HYPER
    with pytest.raises(TrainingError, match="already holds a training run"):
        Trainer(shapes, tmp_path / "run", MICRO, HYPER, QUICK)
    with pytest.raises(TrainingError, match="nothing to resume"):
        Trainer(shapes, tmp_path / "fresh", MICRO, HYPER, QUICK, resume=True)
    fewer = tmp_path / "fewer"
    list(write_shapes(fewer, 5, size=20, seed=3))
    with pytest.raises(TrainingError, match="data set differs"):
        Trainer(fewer, tmp_path / "run", MICRO, HYPER, QUICK, resume=True)


def test_a_checkpoint_of_the_earlier_state_version_resumes_with_a_note(shapes, tmp_path):
    with pytest.raises(TrainingStopped) as stopped:
        Trainer(shapes, tmp_path / "run", MICRO, HYPER, QUICK).run(should_stop=lambda step: step == 1)
    state_file = stopped.value.checkpoint / "state.json"
    state = json.loads(state_file.read_text())

    class Notes(Progress):
        def __init__(self):
            self.messages = []

        def message(self, text):
            self.messages.append(text)

    state_file.write_text(json.dumps({**state, "version": 1}))
    notes = Notes()
    resumed = Trainer(shapes, tmp_path / "run", MICRO, HYPER, QUICK, resume=True, progress=notes)
    assert resumed.step == 1 and resumed.hyper == HYPER
    [note] = [m for m in notes.messages if m.startswith("note: ")]
    assert "state version 1" in note and "batches from here on differ" in note
    assert resumed.run().step == 4
    assert json.loads((tmp_path / "run" / "checkpoints" / "step-4" / "state.json").read_text())["version"] == 2

    later = tmp_path / "later"
    with pytest.raises(TrainingStopped) as stopped:
        Trainer(shapes, later, MICRO, HYPER, QUICK).run(should_stop=lambda step: step == 1)
    state_file = stopped.value.checkpoint / "state.json"
    state_file.write_text(json.dumps({**state, "version": 3}))
    with pytest.raises(TrainingError, match="was not written by this version"):
        Trainer(shapes, later, MICRO, HYPER, QUICK, resume=True)
    state_file.write_text(json.dumps({**state, "hyper": {**state["hyper"], "momentum": 0.9}}))
    with pytest.raises(TrainingError, match="incomplete or damaged"):
        Trainer(shapes, later, MICRO, HYPER, QUICK, resume=True)


def test_training_lowers_the_loss(shapes, tmp_path):
    plan = RunPlan(steps=30, save_every=0, samples=False, log_every=1)
    Trainer(shapes, tmp_path / "run", MICRO, Hyper(batch_size=4, lr=2e-3, warmup=5), plan).run()
    losses = [json.loads(line)["mse"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def _manifest_with(network, name: str, folder: Path) -> Path:
    """folder/weights.toml naming `network` (saved next to it) with a GPT-2-shaped tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = 50256
    bpe = Tokenizer(models.BPE(vocab, []))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.save(str(folder / "gpt2.json"))
    save_network(network, folder / f"{name}.safetensors")
    arch = "\n".join(f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in dataclasses.asdict(network.config).items())
    manifest_path = folder / "weights.toml"
    manifest_path.write_text(
        f'version = 1\n[models.{name}]\nkind = "{network.config.kind}"\npath = "{name}.safetensors"\n[models.{name}.arch]\n{arch}\n'
        '[tokenizers.gpt2]\npath = "gpt2.json"\n'
    )
    return manifest_path


def test_fine_tuning_an_upsampler_from_a_manifest(shapes, tmp_path):
    """A manifest entry (here a tiny upsampler with a GPT-2-shaped tokenizer) is fine-tuned,
    and the result names the same tokenizer vocabulary."""
    network = tiny_network("upsample", n_vocab=50257)
    manifest_path = _manifest_with(network, "up", tmp_path)
    source = ModelSource(name="up-ft", kind="upsample", entry="up")
    plan = dataclasses.replace(QUICK, steps=1, samples=True)
    result = Trainer(shapes, tmp_path / "out", source, HYPER, plan, manifest=load_manifest(manifest_path)).run()
    trained = load_manifest(result.manifest)
    entry = trained.model("up-ft")
    assert entry.kind == "upsample" and entry.arch == network.config
    assert GlideTokenizer.from_file(trained.tokenizer(entry.tokenizer).source.path).pad_token == 50256
    assert Image.open(tmp_path / "out" / "samples" / "step-1.png").size == (4 * 32, 32)


def test_a_fresh_inpainting_upsampler_trains_and_samples(shapes, tmp_path):
    """Both conditioning images at once: the low-resolution picture and the masked one."""
    source = ModelSource(name="up-inpaint", kind="upsample-inpaint", preset="micro")
    result = Trainer(shapes, tmp_path / "run", source, HYPER, dataclasses.replace(QUICK, steps=1, samples=True)).run()
    entry = load_manifest(result.manifest).model("up-inpaint")
    assert entry.kind == "upsample-inpaint" and entry.arch.super_res and entry.arch.inpaint
    assert Image.open(tmp_path / "run" / "samples" / "step-1.png").size == (4 * 32, 32)


def test_an_inpainting_model_trained_from_a_base_model_inpaints(glide, shapes, tmp_path):
    """glide train --kind base-inpaint starts an inpainting model from a base model; the
    result works with glide inpaint at once, and the Python API refuses other kinds."""
    manifest = _manifest_with(tiny_network("base", n_vocab=50257), "b", tmp_path)
    source = ModelSource(name="b-inpaint", kind="base-inpaint", entry="b")
    plan = dataclasses.replace(QUICK, steps=2, samples=True)
    result = Trainer(shapes, tmp_path / "out", source, HYPER, plan, manifest=load_manifest(manifest)).run()
    entry = load_manifest(result.manifest).model("b-inpaint")
    assert entry.kind == "base-inpaint" and entry.arch.inpaint and entry.arch.image_size == 16
    assert Image.open(tmp_path / "out" / "samples" / "step-2.png").size == (4 * 16, 16)
    resized = ModelSource(name="b2", entry="b", arch_changes={"image_size": 32})
    with pytest.raises(TrainingError, match="keeps its architecture"):
        Trainer(shapes, tmp_path / "resized", resized, HYPER, plan, manifest=load_manifest(manifest))
    with pytest.raises(TrainingError, match="started as base-inpaint"):
        Trainer(shapes, tmp_path / "up", ModelSource(name="u", kind="upsample-inpaint", entry="b"), HYPER, plan, manifest=load_manifest(manifest))

    picture, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.new("RGB", (16, 16), (30, 60, 220)).save(picture)
    hole = Image.new("L", (16, 16), 0)  # black: keep; white: repaint
    hole.paste(255, (4, 4, 12, 12))
    hole.save(mask)
    made = glide("inpaint", picture, mask, "a red circle", "--weights", result.manifest, "--model", "b-inpaint",
                 "--steps", 3, "--seed", 0, "--quiet", "--out", tmp_path / "pics")
    assert made.code == 0, made.err
    [path] = made.out.splitlines()
    kept = np.asarray(Image.open(path).convert("RGB"))
    assert (kept[0] == (30, 60, 220)).all()  # outside the hole the picture is kept exactly

    bad = glide("train", shapes, "--model", "b", "--kind", "upsample", "--weights", manifest, "--out", tmp_path / "o")
    assert_one_error_line(bad, 2, "'b' is a base model", "base-inpaint")


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def glide(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)
    monkeypatch.delenv("GLIDE_DEBUG", raising=False)
    return invoker(capsys, monkeypatch)


TRAIN = ["--preset", "micro", "--model", "m", "--batch-size", "2", "--lr", "1e-3", "--no-samples", "--device", "cpu"]


def test_train_then_generate_with_the_result(glide, shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/glide", "train", "DATA", "--steps", "2"])  # what is recorded
    result = glide("train", shapes, *TRAIN, "--steps", 2, "--out", tmp_path / "run")
    assert result.code == 0, result.err
    weights, manifest = (Path(line) for line in result.out.splitlines())
    assert weights == tmp_path / "run" / "m.safetensors" and manifest == tmp_path / "run" / "weights.toml"
    from glidecli.train.dataset import default_mode

    for path in (weights, manifest, tmp_path / "run" / "m.tokenizer.json"):
        assert path.stat().st_mode & 0o777 == default_mode()  # not the temporary file's 0600
    assert "12 examples" in result.err and "--model m" in result.err
    assert "# Training command: glide train DATA --steps 2" in manifest.read_text()
    made = glide("generate", "a red circle on a blue background", "--weights", manifest, "--model", "m",
                 "--steps", 2, "--seed", 0, "--quiet", "--out", tmp_path / "pics")
    assert made.code == 0, made.err
    [picture] = made.out.splitlines()
    assert Image.open(picture).size == (16, 16)


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(glide, shapes, tmp_path):
    """The per-model tokenizer decides the ids; ids past the model's vocabulary are an error
    (one line), not a crash in the embedding."""
    assert glide("train", shapes, *TRAIN, "--steps", 1, "--out", tmp_path / "run", "--quiet").code == 0
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = 50256
    bpe = Tokenizer(models.BPE(vocab, []))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.save(str(tmp_path / "run" / "gpt2.json"))
    manifest = tmp_path / "run" / "weights.toml"
    text = manifest.read_text()
    manifest.write_text(text.replace('path = "m.tokenizer.json"', 'path = "gpt2.json"').replace("sha256 = ", "# sha256 = "))
    result = glide("generate", "a red circle", "--weights", manifest, "--model", "m", "--steps", 2, "--quiet", "--out", tmp_path / "p")
    assert_one_error_line(result, 1, "ids up to 50256", "n_vocab")


def test_prediction_v_trains_fresh_networks_and_converts_fine_tuned_ones(glide, shapes, tmp_path):
    """--prediction v is recorded in the exported manifest, which glide generate then reads
    (a misspelt value there is one clear error); --resume keeps the run's."""
    fresh = glide("train", shapes, *TRAIN, "--prediction", "v", "--steps", 1, "--out", tmp_path / "fresh", "--quiet")
    assert fresh.code == 0, fresh.err
    manifest = tmp_path / "fresh" / "weights.toml"
    assert load_manifest(manifest).model("m").arch.prediction == "v"
    converted = glide("train", shapes, "--model", "m", "--weights", manifest, "--name", "m2", "--prediction", "eps",
                      "--steps", 1, "--batch-size", 2, "--no-samples", "--device", "cpu", "--out", tmp_path / "back", "--quiet")
    assert converted.code == 0, converted.err
    assert load_manifest(tmp_path / "back" / "weights.toml").model("m2").arch.prediction == "eps"
    assert load_manifest(manifest).defaults == {"base": "m"}  # the run's [defaults]: its model in its role
    made = glide("generate", "a red circle", "--weights", manifest, "--model", "m", "--steps", 2, "--quiet", "--out", tmp_path / "p")
    assert made.code == 0, made.err
    again = glide("train", shapes, "--resume", "--prediction", "eps", "--steps", 2, "--out", tmp_path / "fresh")
    assert_one_error_line(again, 2, "--resume", "--prediction")
    manifest.write_text(manifest.read_text().replace('prediction = "v"', 'prediction = "x0"'))
    bad = glide("generate", "a red circle", "--weights", manifest, "--model", "m", "--steps", 2, "--quiet", "--out", tmp_path / "p")
    assert_one_error_line(bad, 1, "prediction", "'x0'")


def test_no_pooled_text_trains_without_the_pooled_projection_and_drops_a_fine_tuned_models(glide, shapes, tmp_path):
    """--no-pooled-text: the manifest records xf_pooled = false and the weights hold no
    transformer_proj, for a fresh network and for a fine-tuned one (its other weights kept);
    glide generate reads it; --resume and the other families refuse the switch in one line."""
    fresh = glide("train", shapes, *TRAIN, "--no-pooled-text", "--steps", 1, "--out", tmp_path / "fresh", "--quiet")
    assert fresh.code == 0, fresh.err
    assert load_manifest(tmp_path / "fresh" / "weights.toml").model("m").arch.xf_pooled is False
    assert not any(key.startswith("transformer_proj.") for key in load_file(tmp_path / "fresh" / "m.safetensors"))
    plain = glide("train", shapes, *TRAIN, "--steps", 1, "--out", tmp_path / "plain", "--quiet")
    assert plain.code == 0, plain.err
    manifest = tmp_path / "plain" / "weights.toml"
    assert load_manifest(manifest).model("m").arch.xf_pooled is True
    pooled_keys = set(load_file(tmp_path / "plain" / "m.safetensors"))
    assert {"transformer_proj.weight", "transformer_proj.bias"} <= pooled_keys
    tuned = glide("train", shapes, "--model", "m", "--weights", manifest, "--name", "m2", "--no-pooled-text", "--steps", 1,
                  "--batch-size", 2, "--no-samples", "--device", "cpu", "--out", tmp_path / "seq", "--quiet")
    assert tuned.code == 0, tuned.err
    assert load_manifest(tmp_path / "seq" / "weights.toml").model("m2").arch.xf_pooled is False
    assert set(load_file(tmp_path / "seq" / "m2.safetensors")) == pooled_keys - {"transformer_proj.weight", "transformer_proj.bias"}
    made = glide("generate", "a red circle", "--weights", tmp_path / "seq" / "weights.toml", "--model", "m2", "--steps", 2,
                 "--size", 16, "--quiet", "--out", tmp_path / "p")
    assert made.code == 0, made.err
    again = glide("train", shapes, "--resume", "--no-pooled-text", "--steps", 2, "--out", tmp_path / "fresh")
    assert_one_error_line(again, 2, "--resume", "--no-pooled-text")
    clip = glide("train", shapes, "--preset", "micro", "--model", "c", "--kind", "clip", "--no-pooled-text", "--out", tmp_path / "c")
    assert_one_error_line(clip, 2, "--no-pooled-text goes with GLIDE's U-Nets")


def test_the_text_options_set_how_the_unet_reads_the_prompt(glide, shapes, tmp_path):
    """--text-layers, --causal-text and --hide-text-padding: a fresh network's manifest records
    them and its weights hold no text layers; a fine-tuned model takes the two masks and keeps
    every weight's name; --text-layers with --model, --lora or --resume is one line."""
    fresh = glide("train", shapes, *TRAIN, "--text-layers", 0, "--hide-text-padding", "--steps", 1, "--out", tmp_path / "words", "--quiet")
    assert fresh.code == 0, fresh.err
    arch = load_manifest(tmp_path / "words" / "weights.toml").model("m").arch
    assert (arch.xf_layers, arch.xf_causal, arch.xf_attend_padding) == (0, False, False)
    assert not any(key.startswith("transformer.resblocks.") for key in load_file(tmp_path / "words" / "m.safetensors"))
    plain = glide("train", shapes, *TRAIN, "--steps", 1, "--out", tmp_path / "plain", "--quiet")
    assert plain.code == 0, plain.err
    manifest = tmp_path / "plain" / "weights.toml"
    tuned = glide("train", shapes, "--model", "m", "--weights", manifest, "--name", "m2", "--causal-text", "--hide-text-padding", "--steps", 1,
                  "--batch-size", 2, "--no-samples", "--device", "cpu", "--out", tmp_path / "causal", "--quiet")
    assert tuned.code == 0, tuned.err
    arch = load_manifest(tmp_path / "causal" / "weights.toml").model("m2").arch
    assert (arch.xf_layers, arch.xf_causal, arch.xf_attend_padding) == (1, True, False)
    assert set(load_file(tmp_path / "causal" / "m2.safetensors")) == set(load_file(tmp_path / "plain" / "m.safetensors"))
    for made in ("words", "causal"):
        model = "m" if made == "words" else "m2"
        drawn = glide("generate", "a red circle", "--weights", tmp_path / made / "weights.toml", "--model", model, "--steps", 2,
                      "--size", 16, "--quiet", "--out", tmp_path / f"p-{made}")
        assert drawn.code == 0, drawn.err
    layers = glide("train", shapes, "--model", "m", "--weights", manifest, "--text-layers", 0, "--out", tmp_path / "x")
    assert_one_error_line(layers, 2, "--text-layers sets a fresh network's text transformer")
    adapter = glide("train", shapes, "--model", "m", "--weights", manifest, "--lora", 2, "--causal-text", "--out", tmp_path / "y")
    assert_one_error_line(adapter, 2, "leave out --causal-text")
    again = glide("train", shapes, "--resume", "--hide-text-padding", "--steps", 2, "--out", tmp_path / "words")
    assert_one_error_line(again, 2, "--resume", "--hide-text-padding")
    clip = glide("train", shapes, "--preset", "micro", "--model", "c", "--kind", "clip", "--text-layers", 0, "--out", tmp_path / "c")
    assert_one_error_line(clip, 2, "--text-layers goes with GLIDE's U-Nets")


def test_train_resume_through_the_cli_is_exact(glide, shapes, tmp_path):
    assert glide("train", shapes, *TRAIN, "--steps", 4, "--out", tmp_path / "whole", "--quiet").code == 0
    first = glide("train", shapes, *TRAIN, "--steps", 2, "--out", tmp_path / "split", "--quiet")
    assert first.code == 0, first.err
    again = glide("train", shapes, *TRAIN, "--steps", 4, "--out", tmp_path / "split", "--quiet")
    assert_one_error_line(again, 1, "already holds a training run", "--resume")
    conflict = glide("train", shapes, "--resume", "--seed", 5, "--steps", 4, "--out", tmp_path / "split")
    assert_one_error_line(conflict, 1, "--seed 5 differs")
    resumed = glide("train", shapes, "--resume", "--steps", 4, "--out", tmp_path / "split", "--device", "cpu")
    assert resumed.code == 0, resumed.err
    assert "resuming at step 2" in resumed.err
    _assert_identical(tmp_path / "whole" / "checkpoints" / "step-4", tmp_path / "split" / "checkpoints" / "step-4")
    # Resuming a finished run exports it again; no step ran, so there is no loss to show.
    done = glide("train", shapes, "--resume", "--steps", 4, "--out", tmp_path / "split", "--device", "cpu")
    assert done.code == 0 and "done: step 4. Try it:  glide generate" in done.err and "nan" not in done.err, done.err


def test_train_reports_bad_data_clearly(glide, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_error_line(glide("train", tmp_path / "empty", *TRAIN, "--out", tmp_path / "o"), 1, "no images in folder")
    assert_one_error_line(glide("train", tmp_path / "absent", *TRAIN, "--out", tmp_path / "o"), 1, "data set not found")
    mixed = tmp_path / "mixed"
    list(write_shapes(mixed, 3, size=16, seed=0))
    (mixed / "00001.txt").unlink()
    (mixed / "broken.png").write_bytes(b"\x89PNG junk")
    (mixed / "broken.txt").write_text("a broken picture")
    ok = glide("train", mixed, *TRAIN, "--steps", 1, "--out", tmp_path / "o")
    assert ok.code == 0, ok.err
    assert "2 examples" in ok.err and "skipped 2 files" in ok.err and "1 without a caption" in ok.err
    assert not (tmp_path / "o2").exists()


def test_train_usage_errors(glide, shapes, tmp_path):
    assert_one_error_line(glide("train", shapes, "--out", tmp_path / "o"), 2, "missing --model")
    assert_one_error_line(glide("train", shapes, *TRAIN, "--out", tmp_path / "o", "--caption-dropout", 2), 2, "--caption-dropout")
    assert_one_error_line(glide("train", shapes, "--resume", "--model", "m", "--out", tmp_path / "o"), 2, "--resume")
    assert_one_error_line(glide("train", shapes, "--model", "nope", "--out", tmp_path / "o"), 1, "no model named 'nope'")
    assert_one_error_line(glide("train", shapes, "--resume", "--out", tmp_path / "o"), 1, "nothing to resume")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_dataset_shapes_command(glide, tmp_path):
    result = glide("dataset", "shapes", tmp_path / "d", "-n", 3, "--size", 24, "--seed", 1)
    assert result.code == 0, result.err
    assert result.out.strip() == str(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["00000.png", "00000.txt", "00001.png", "00001.txt", "00002.png", "00002.txt"]
    assert Image.open(tmp_path / "d" / "00000.png").size == (24, 24)
    assert_one_error_line(glide("dataset", "shapes", tmp_path / "d", "-n", 3), 1, "already holds a data set", "--overwrite")
    assert glide("dataset", "shapes", tmp_path / "d", "-n", 2, "--overwrite", "--jsonl").code == 0
    assert len((tmp_path / "d" / "captions.jsonl").read_text().splitlines()) == 2


def test_mixed_precision_steps_and_fp16_needs_a_gpu(shapes, tmp_path):
    plan = dataclasses.replace(QUICK, steps=1)
    result = Trainer(shapes, tmp_path / "bf16", MICRO, dataclasses.replace(HYPER, amp="bf16"), plan).run()
    assert math.isfinite(result.last_loss)
    with pytest.raises(TrainingError, match="fp16 mixed precision needs a GPU"):
        Trainer(shapes, tmp_path / "fp16", MICRO, dataclasses.replace(HYPER, amp="fp16"), plan, device="cpu")
