"""Guidance, inpainting, upsampling and seed behaviour of a whole sampling stage (tiny random models)."""

from __future__ import annotations

import pytest
import torch

from glidecli.diffusion.guidance import clip_guided_denoiser, guided_model_fn
from glidecli.diffusion.noise import ImageNoise
from glidecli.diffusion.samplers import Prediction
from glidecli.diffusion.schedule import Schedule
from glidecli.nets.clip import NoisedClip
from glidecli.nets.unet import TextEmbedding
from glidecli.render.pipeline import (
    ClipGuidance,
    Conditioning,
    Inpainting,
    SamplerChoice,
    StageInputs,
    quantize_to_8bit,
    sample_stage,
)
from helpers.tiny import tiny_network


def conditioning(model, batch: int, guided: bool = True, lengths=(3, 5, 2, 6)) -> Conditioning:
    generator = torch.Generator().manual_seed(1)
    ctx = model.config.text_ctx
    tokens = torch.randint(0, 63, (batch, ctx), generator=generator)
    mask = torch.arange(ctx)[None] < torch.tensor(lengths[:batch])[:, None]
    empty = torch.zeros(batch, ctx, dtype=torch.bool)
    with torch.no_grad():
        text = model.encode_text(tokens, mask)
        uncond = model.encode_text(torch.full_like(tokens, 63), empty) if guided else None
    return Conditioning(text, uncond, [False] * batch)


def test_classifier_free_guidance_is_one_batched_call_with_the_conditional_variance():
    model = tiny_network("base")
    cond = conditioning(model, 2)
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([400, 400])
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        guided = guided_model_fn(model, cond.text, uncond_text=cond.uncond, scale=4.0)(x, t)
        assert calls == [4]
        on_text = model(x, t, cond.text)
        on_empty = model(x, t, cond.uncond)
    torch.testing.assert_close(guided[:, :3], on_empty[:, :3] + 4.0 * (on_text[:, :3] - on_empty[:, :3]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(guided[:, 3:], on_text[:, 3:], rtol=1e-4, atol=1e-5)


def test_scale_one_is_exactly_the_conditional_model():
    model = tiny_network("base")
    cond = conditioning(model, 2)
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([10, 999])
    with torch.no_grad():
        at_one = guided_model_fn(model, cond.text, uncond_text=cond.uncond, scale=1.0)(x, t)
        alone = model(x, t, cond.text)
    torch.testing.assert_close(at_one, alone, rtol=0, atol=0)


@pytest.mark.parametrize("sampler", [SamplerChoice("ddpm", "10"), SamplerChoice("ddim", "8"), SamplerChoice("dpmpp_2m", "6")])
def test_image_i_of_seed_s_equals_seed_s_plus_i_alone(sampler):
    model = tiny_network("base")
    full = conditioning(model, 3)
    with torch.no_grad():
        batch = sample_stage(model, full, ImageNoise.from_base_seed(7, 3), sampler, scale=3.0)
        second = Conditioning(TextEmbedding(*(t[1:2] for t in full.text[:2])), TextEmbedding(*(t[1:2] for t in full.uncond[:2])), [False])
        alone = sample_stage(model, second, ImageNoise([8]), sampler, scale=3.0)
    # The noise is bit-identical; only the network's batched kernels may round differently.
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=1e-3)  # a quarter of one 8-bit level
    assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize("sampler", [SamplerChoice("ddpm", "10"), SamplerChoice("ddim", "10"), SamplerChoice("plms", "8"), SamplerChoice("dpmpp_2m", "8", threshold=0.99)])
def test_inpainting_keeps_the_known_region_exactly(sampler):
    model = tiny_network("base-inpaint")
    cond = conditioning(model, 2)
    source = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    keep = torch.zeros(2, 1, 16, 16)
    keep[:, :, :, :9] = 1
    with torch.no_grad():
        out = sample_stage(model, cond, ImageNoise([1, 2]), sampler, scale=5.0, inputs=StageInputs(inpainting=Inpainting(source, keep)))
    assert torch.equal(out[..., :9], source[..., :9])
    assert not torch.allclose(out[..., 9:], source[..., 9:], atol=1e-3)
    assert out.abs().max() <= 1.0


def test_upsampler_stage_uses_low_res_and_temperature():
    model = tiny_network("upsample")
    cond = conditioning(model, 1, guided=False)
    low = quantize_to_8bit(torch.rand(1, 3, 16, 16) * 2 - 1)
    sampler = SamplerChoice("ddim", "fast27")
    with torch.no_grad():
        a = sample_stage(model, cond, ImageNoise([0]), sampler, inputs=StageInputs(low_res=low), temperature=0.997)
        b = sample_stage(model, cond, ImageNoise([0]), sampler, inputs=StageInputs(low_res=low), temperature=1.0)
        c = sample_stage(model, cond, ImageNoise([0]), sampler, inputs=StageInputs(low_res=-low), temperature=0.997)
    assert a.shape == (1, 3, 32, 32)
    assert not torch.equal(a, b) and not torch.allclose(a, c)


def test_quantize_to_8bit_hits_png_levels():
    x = torch.linspace(-1, 1, 1000)
    q = quantize_to_8bit(x)
    levels = (q + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert (q - x).abs().max() <= 1 / 255 + 1e-6


def test_clip_guided_denoiser_shifts_eps_by_sigma_times_grad():
    schedule = Schedule.create("squaredcos_cap_v2", 1000, "10")
    x = torch.randn(2, 3, 4, 4)
    eps = torch.randn(2, 3, 4, 4)
    grad = torch.randn(2, 3, 4, 4)

    def denoise(x_t, i):
        return Prediction(schedule.predict_x0(x_t, i, eps), eps, None)

    pred = clip_guided_denoiser(denoise, schedule, lambda x_t, i: grad)(x, 5)
    sigma = (1 - schedule.alpha_bar(5)) ** 0.5
    torch.testing.assert_close(pred.eps, eps - sigma * grad)
    torch.testing.assert_close(pred.x0, schedule.predict_x0(x, 5, eps - sigma * grad))


@pytest.mark.parametrize("sampler", [SamplerChoice("ddpm", "6"), SamplerChoice("ddim", "6")])
def test_clip_guidance_moves_samples(sampler):
    model = tiny_network("base")
    clip = NoisedClip(tiny_network("clip-image", seed=4), tiny_network("clip-text", seed=5))
    cond = conditioning(model, 2, guided=False)
    text = clip.text_embeddings(torch.randint(1, 60, (2, 12)), torch.tensor([4, 6]))
    with torch.no_grad():
        plain = sample_stage(model, cond, ImageNoise([0, 1]), sampler)
        guided = sample_stage(model, cond, ImageNoise([0, 1]), sampler, inputs=StageInputs(clip_guidance=ClipGuidance(clip, text, 50.0)))
    assert torch.isfinite(guided).all()
    assert not torch.allclose(plain, guided, atol=1e-4)


def test_bad_sampler_choices_are_rejected():
    with pytest.raises(ValueError, match="unknown sampler"):
        SamplerChoice("euler")
    with pytest.raises(ValueError, match="number of steps"):
        SamplerChoice("dpmpp_2m", "fast27").schedule("linear")
    plms_on_fast27 = SamplerChoice("plms", "fast27").schedule("linear")
    assert plms_on_fast27.timesteps.tolist()[-1] == 997 and len(plms_on_fast27) == 27
    with pytest.raises(ValueError, match="eta"):
        SamplerChoice("ddpm", "10", eta=0.5)
