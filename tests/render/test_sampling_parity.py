"""End-to-end sampling parity with the reference GLIDE (openai/glide-text2im).

With the same weights, prompts and noise, `glidecli.render.pipeline.sample_stage` must give what the
reference's sampling loops give, for plain generation with classifier-free guidance, upsampling,
inpainting (base and upsampler) and CLIP guidance, with DDIM (eta 0) and with DDPM when both
sides get the same per-step noise. `reference_sampling.py` re-implements the reference's loops
and the notebooks' wiring; the networks inside are `reference_oracle.py`'s functional forwards,
so the reference path never touches glidecli's code. Batch 2 throughout, float32, CPU.

Every case makes two comparisons (errors are max|diff| / max(max|reference|, 1); run with -s to
see them):

* LOOP parity, LOOP_TOL = 1e-5: the reference loop driven by glidecli's OWN networks (their text
  encoded per half, as sample_stage does). This isolates the sampling math (schedules, respacing,
  timestep mapping, guidance mixing, learned variance, clip, denoised_fn, cond_fn, noise order).
  Measured: bit-identical in every case.
* END-TO-END parity, E2E_TOL = 3e-4: the reference loop driven by the independent network oracle.
  Each forward agrees with glidecli's to ~1e-6 relative (test_reference_parity.py), and the loop
  amplifies these last-bit differences: guidance multiplies eps differences by ~2s - 1, x0 =
  x / sqrt(abar) - ... divides them by sqrt(abar) (0.15 at t = 900 of the cosine schedule, 0.0065
  at t = 997 of the linear one, where fast27 starts), and each step feeds the next call. Measured:
  <= 2e-5 for the base-size cases, up to 7e-5 (1.3e-4 over other seeds) for the 27 DDIM steps of
  the upsamplers. That is float32's own conditioning, not a discrepancy: multiplying the
  reference's starting noise by (1 + 2**-23) moves the reference's own result by as much (the
  `1-ulp floor` printed per case; 4e-5 to 1.2e-4 for the upsampler over the same seeds).

What is compared: sample_stage clamps its result to [-1, 1] and, for inpainting, pastes the
source into the kept region at the very end; the reference returns its last step as is. The raw
last step (the callback's StepInfo.x) is compared with the reference's result directly, and
sample_stage's return value with the reference's clamped to [-1, 1] (a no-op except for DDPM
with CLIP's mean shift, whose last step may leave the range); the paste is exact in both
(checked: the kept region equals the source bit for bit).
"""

from __future__ import annotations

import pytest
import torch

import helpers.reference_sampling as ref
from glidecli.diffusion.noise import ImageNoise
from glidecli.nets.checkpoint import random_init_
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
from helpers.tiny import TINY_CLIP, tiny_network

LOOP_TOL = 1e-5  # relative to the output scale: same networks, the sampling math alone
E2E_TOL = 3e-4  # relative to the output scale: independent networks, float32 amplified by the loop
SEEDS = (1234, 98765)  # one per image of a batch of 2
FILLER_SEED = 4242  # noise for the reference's discarded second half of a doubled batch
UPSAMPLE_TEMP = 0.997
OUTPUT_GAIN = 0.3


# ----------------------------------------------------------------------------- builders


def unet(kind: str, seed: int):
    """A tiny network with large random weights (std 0.08) so that text, guidance and the
    conditioning images all matter, its output convolution scaled by OUTPUT_GAIN so that eps has
    about the unit scale and the variance channel stays near [-1, 1], as in a trained GLIDE model.
    (Unscaled, the variance channel reaches +-4, DDPM extrapolates the variance far beyond beta,
    x_t grows to ~5 and float32 differences grow to ~4e-4 in 10 steps; see the report.)"""
    model = random_init_(tiny_network(kind), seed=seed, std=0.08).eval().requires_grad_(False)
    model.out[2].weight.mul_(OUTPUT_GAIN)
    model.out[2].bias.mul_(OUTPUT_GAIN)
    return model


def noised_clip(seed: int = 21) -> NoisedClip:
    image = random_init_(tiny_network("clip-image"), seed=seed, std=0.1).eval().requires_grad_(False)
    text = random_init_(tiny_network("clip-text"), seed=seed + 1, std=0.1).eval().requires_grad_(False)
    return NoisedClip(image, text)


def prompt_tokens(cfg, lengths, seed: int = 0):
    """Token ids and masks for prompts of the given lengths; padding slots hold the pad id (the
    last id of the vocabulary) and mask False. The empty prompt is length 0."""
    generator = torch.Generator().manual_seed(seed)
    pad = cfg.n_vocab - 1
    tokens = torch.randint(0, pad, (len(lengths), cfg.text_ctx), generator=generator)
    mask = torch.arange(cfg.text_ctx)[None] < torch.tensor(lengths)[:, None]
    return torch.where(mask, tokens, torch.full_like(tokens, pad)), mask


def encode(model, tokens, mask, uncond_tokens=None, uncond_mask=None) -> Conditioning:
    with torch.no_grad():
        text = model.encode_text(tokens, mask)
        uncond = None if uncond_tokens is None else model.encode_text(uncond_tokens, uncond_mask)
    return Conditioning(text, uncond, [False] * tokens.shape[0])


def glidecli_network(model, chunk: int):
    """glidecli's network behind the reference's model interface, its text encoded `chunk` rows at
    a time (chunk = B: the [cond; uncond] halves separately, as sample_stage encodes them)."""

    def forward(x, t, tokens=None, mask=None, **images):
        with torch.no_grad():
            parts = [model.encode_text(tk, mk) for tk, mk in zip(tokens.split(chunk), mask.split(chunk))]
            text = TextEmbedding(torch.cat([p.pooled for p in parts]), torch.cat([p.tokens for p in parts]))
            return model(x, t, text, **{k: v for k, v in images.items() if v is not None})

    return forward


def report(actual: torch.Tensor, expected: torch.Tensor, what: str, tol: float) -> float:
    """max|diff| / output scale (max|expected|, at least 1), printed and checked against tol."""
    assert actual.shape == expected.shape, f"{what}: {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(expected).all(), f"{what}: the reference result is not finite"
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual.double() - expected.double()).abs().max().item() / scale
    print(f"{what}: max|diff|/scale = {err:.2e} (scale {scale:.3g}, tolerance {tol:.0e})")
    assert err <= tol, f"{what}: max|diff|/scale = {err:.3e} > {tol:.0e}"
    return err


def differs(a: torch.Tensor, b: torch.Tensor, what: str, at_least: float = 0.5) -> None:
    change = (a - b).abs().max().item()
    print(f"sanity: {what} changes the result by up to {change:.3g}")
    assert change > at_least, f"sanity: {what} changes the result by only {change:.3g}"


class Stage:
    """One stage run three ways: glidecli's sample_stage, the reference loop over glidecli's
    networks (loop parity) and the reference loop over the network oracle (end to end)."""

    def __init__(self, model, sampler: SamplerChoice, *, tokens, mask, guidance: float | None = None,
                 low_res=None, source=None, keep_mask=None, temperature: float = 1.0,
                 clip: NoisedClip | None = None, clip_tokens=None, clip_lengths=None, clip_scale: float = 0.0):
        self.model, self.cfg, self.sampler = model, model.config, sampler
        self.tokens, self.mask, self.guidance = tokens, mask, guidance
        self.low_res, self.source, self.keep_mask = low_res, source, keep_mask
        self.temperature = temperature
        self.clip, self.clip_tokens, self.clip_lengths, self.clip_scale = clip, clip_tokens, clip_lengths, clip_scale
        self.batch = tokens.shape[0]
        if guidance is not None:
            self.uncond_tokens, self.uncond_mask = prompt_tokens(self.cfg, [0] * self.batch)
        else:
            self.uncond_tokens = self.uncond_mask = None

    # -- glidecli
    def glidecli(self, scale: float | None = None, clip_scale: float | None = None, steps=None):
        conditioning = encode(self.model, self.tokens, self.mask, self.uncond_tokens, self.uncond_mask)
        inpainting = None if self.source is None else Inpainting(self.source, self.keep_mask)
        clip_guidance = None
        clip_scale = self.clip_scale if clip_scale is None else clip_scale
        if self.clip is not None and clip_scale:
            with torch.no_grad():
                z_text = self.clip.text_embeddings(self.clip_tokens, self.clip_lengths)
            clip_guidance = ClipGuidance(self.clip, z_text, clip_scale)
        callback = None if steps is None else (lambda info: steps.append(info.x.clone()))
        return sample_stage(
            self.model, conditioning, ImageNoise(SEEDS), self.sampler,
            scale=(self.guidance or 1.0) if scale is None else scale,
            inputs=StageInputs(low_res=self.low_res, inpainting=inpainting, clip_guidance=clip_guidance),
            temperature=self.temperature, callback=callback,
        )

    # -- reference
    def reference(self, independent: bool, *, perturb_start: bool = False) -> torch.Tensor:
        """The reference's result: over the network oracle (independent) or glidecli's networks.
        perturb_start multiplies the starting noise by (1 + 2**-23), a one-ulp nudge."""
        cfg = self.cfg
        if independent:
            network = ref.unet_model(self.model.state_dict(), cfg)
        else:
            network = glidecli_network(self.model, chunk=self.batch)
        cond_fn = None
        if self.clip is not None and self.clip_scale:
            if independent:
                z_text = ref.clip_text_embeddings(
                    self.clip.text_encoder.state_dict(), TINY_CLIP, self.clip_tokens, self.clip_lengths
                )
                cond_fn = ref.clip_cond_fn(self.clip.image_encoder.state_dict(), TINY_CLIP, z_text, self.clip_scale)
            else:
                with torch.no_grad():
                    z_text = self.clip.text_embeddings(self.clip_tokens, self.clip_lengths)
                cond_fn = lambda x, t, **kw: self.clip.similarity_grad(x, t, z_text) * self.clip_scale  # noqa: E731
        noise = ref.PerImageNoise(SEEDS)
        shape = (3, cfg.image_size, cfg.image_size)
        x_T = noise.draw(shape) * self.temperature
        if perturb_start:
            x_T = x_T * (1 + 2**-23)
        if self.guidance is not None:
            filler = torch.Generator().manual_seed(FILLER_SEED + 1)
            x_T = torch.cat([x_T, torch.randn((self.batch, *shape), generator=filler)])
            noise_fn = ref.doubled_noise_fn(noise, FILLER_SEED)
        else:
            noise_fn = ref.plain_noise_fn(noise)
        diffusion = ref.Diffusion(cfg.noise_schedule, self.sampler.steps, cfg.diffusion_steps)
        return ref.run_stage(
            diffusion, network, self.sampler.name, x_T, noise_fn,
            tokens=self.tokens, mask=self.mask, uncond_tokens=self.uncond_tokens, uncond_mask=self.uncond_mask,
            guidance_scale=self.guidance, low_res=self.low_res, source=self.source, keep_mask=self.keep_mask,
            cond_fn=cond_fn, eta=self.sampler.eta,
        )

    def check(self, what: str, *, clamp_reference: bool = False) -> torch.Tensor:
        steps: list[torch.Tensor] = []
        actual = self.glidecli(steps=steps)
        raw = steps[-1]  # the last step before sample_stage's final clamp / paste
        loop = self.reference(independent=False)
        e2e = self.reference(independent=True)
        report(raw, loop, f"{what} [loop, raw last step]", LOOP_TOL)
        report(raw, e2e, f"{what} [end to end, raw last step]", E2E_TOL)
        finish = (lambda x: x.clamp(-1, 1)) if clamp_reference else (lambda x: x)
        report(actual, finish(loop), f"{what} [loop, sample_stage]", LOOP_TOL)
        report(actual, finish(e2e), f"{what} [end to end, sample_stage]", E2E_TOL)
        nudged = self.reference(independent=True, perturb_start=True)
        floor = (nudged - e2e).abs().max().item() / max(e2e.abs().max().item(), 1.0)
        print(f"{what}: 1-ulp floor (the reference against itself from x_T * (1 + 2**-23)) = {floor:.2e}")
        return actual


# ----------------------------------------------------------------------------- premises


def test_oracle_respacing_and_noise_premises():
    """The oracle's respacing reproduces the reference lists glidecli must visit, and its
    per-image noise is the stream ImageNoise documents (initial draw, then one per step)."""
    from glidecli.diffusion.schedule import Schedule

    for spec in ("10", "ddim10", "fast27", "100", "10,10,3,2,2"):
        for name in ("linear", "squaredcos_cap_v2"):
            schedule = Schedule.create(name, 1000, spec)
            diffusion = ref.Diffusion(name, spec)
            assert schedule.timesteps.tolist() == diffusion.timestep_map, (name, spec)
            torch.testing.assert_close(schedule.betas, torch.from_numpy(diffusion.betas), rtol=1e-12, atol=0)
    ours, theirs = ImageNoise(SEEDS), ref.PerImageNoise(SEEDS)
    assert torch.equal(ours.initial((3, 4, 4)), theirs.draw((3, 4, 4)))
    for _ in range(3):
        assert torch.equal(ours(torch.empty(2, 3, 4, 4)), theirs.draw((3, 4, 4)))


# ----------------------------------------------------------------------------- 1. text to image


# "ddim10" visits t = 0, 100, ..., 900 (see test_loop_parity_from_timestep_999 for t = 999).
BASE_SAMPLERS = {
    "ddim eta 0": SamplerChoice("ddim", "ddim10"),
    "ddpm": SamplerChoice("ddpm", "ddim10"),
    "ddim eta 0.5": SamplerChoice("ddim", "ddim10", eta=0.5),
}


@pytest.mark.parametrize("name", list(BASE_SAMPLERS))
def test_text_to_image_with_classifier_free_guidance(name):
    model = unet("base", seed=3)
    tokens, mask = prompt_tokens(model.config, [3, model.config.text_ctx], seed=1)
    stage = Stage(model, BASE_SAMPLERS[name], tokens=tokens, mask=mask, guidance=3.0)
    result = stage.check(f"base, guidance 3, {name}")
    differs(result, stage.glidecli(scale=1.0), "the guidance scale")


@pytest.mark.parametrize("sampler", [SamplerChoice("ddpm", "10"), SamplerChoice("ddim", "10")],
                         ids=["ddpm", "ddim eta 0"])
def test_loop_parity_from_timestep_999(sampler):
    """Respacing "10", like the notebooks' "100", starts at t = 999, where the cosine schedule's
    alpha_bar is 2.4e-9: x0 = x / sqrt(alpha_bar) - sqrt(1 / alpha_bar - 1) * eps multiplies any
    last-bit difference of eps by 2e4 wherever x0 escapes the clip. Two independent float32
    networks then legitimately differ by up to ~1e-3 at single pixels after the first step, so
    only the loop parity (the same networks on both sides) is demanded here."""
    model = unet("base", seed=3)
    tokens, mask = prompt_tokens(model.config, [3, model.config.text_ctx], seed=1)
    stage = Stage(model, sampler, tokens=tokens, mask=mask, guidance=3.0)
    assert ref.Diffusion("squaredcos_cap_v2", "10").timestep_map[-1] == 999
    steps: list[torch.Tensor] = []
    result = stage.glidecli(steps=steps)
    loop = stage.reference(independent=False)
    report(steps[-1], loop, f"base from t=999, guidance 3, {sampler.name} [loop, raw last step]", LOOP_TOL)
    report(result, loop, f"base from t=999, guidance 3, {sampler.name} [loop, sample_stage]", LOOP_TOL)


# ----------------------------------------------------------------------------- 2. upsampling


def test_upsampling_a_quantized_image_with_ddim():
    model = unet("upsample", seed=5)
    generator = torch.Generator().manual_seed(8)
    low = torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1
    low_res = quantize_to_8bit(low)
    assert torch.equal(low_res, ref.quantize_low_res(low))
    tokens, mask = prompt_tokens(model.config, [5, 2], seed=2)
    stage = Stage(model, SamplerChoice("ddim", "fast27"), tokens=tokens, mask=mask, low_res=low_res,
                  temperature=UPSAMPLE_TEMP)
    result = stage.check("upsample, fast27, ddim eta 0, temperature 0.997")
    stage.low_res = -low_res
    differs(result, stage.glidecli(), "the low-resolution image")


# ----------------------------------------------------------------------------- 3. inpainting


def inpainting_inputs(size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(2, 3, size, size, generator=generator) * 2 - 1
    keep = torch.ones(2, 1, size, size)
    keep[:, :, size * 5 // 8:] = 0  # keep the top rows, as inpaint.ipynb does
    keep[1, :, :, : size // 4] = 0  # a different mask for the second image
    return source, keep


@pytest.mark.parametrize("sampler", [SamplerChoice("ddim", "ddim10"), SamplerChoice("ddpm", "10")],
                         ids=["ddim eta 0", "ddpm"])
def test_inpainting_base_stage_with_guidance(sampler):
    model = unet("base-inpaint", seed=6)
    tokens, mask = prompt_tokens(model.config, [4, 6], seed=3)
    source, keep = inpainting_inputs(16, seed=9)
    stage = Stage(model, sampler, tokens=tokens, mask=mask, guidance=5.0, source=source, keep_mask=keep)
    result = stage.check(f"base-inpaint, guidance 5, {sampler.name}")
    assert torch.equal(result * keep, source * keep)
    differs(result * (1 - keep), stage.glidecli(scale=1.0) * (1 - keep), "the guidance scale")


@pytest.mark.parametrize("sampler", [SamplerChoice("ddim", "fast27"), SamplerChoice("ddpm", "fast27")],
                         ids=["ddim eta 0", "ddpm"])
def test_inpainting_upsample_stage(sampler):
    model = unet("upsample-inpaint", seed=7)
    tokens, mask = prompt_tokens(model.config, [7, 1], seed=4)
    source, keep_small = inpainting_inputs(16, seed=10)
    generator = torch.Generator().manual_seed(11)
    source_up = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    keep = torch.nn.functional.interpolate(keep_small, (32, 32), mode="nearest")
    low_res = quantize_to_8bit(source * keep_small + (1 - keep_small) * source.flip(-1))
    stage = Stage(model, sampler, tokens=tokens, mask=mask, low_res=low_res, source=source_up, keep_mask=keep,
                  temperature=UPSAMPLE_TEMP)
    result = stage.check(f"upsample-inpaint, fast27, {sampler.name}")
    assert torch.equal(result * keep, source_up * keep)


# ----------------------------------------------------------------------------- 4. CLIP guidance


@pytest.mark.parametrize("sampler", [SamplerChoice("ddpm", "10"), SamplerChoice("ddim", "ddim10")],
                         ids=["ddpm (mean shift)", "ddim eta 0 (score shift)"])
def test_clip_guidance(sampler):
    model = unet("base", seed=12)
    assert model.config.image_size == TINY_CLIP.image_size
    clip = noised_clip()
    tokens, mask = prompt_tokens(model.config, [4, 8], seed=5)
    generator = torch.Generator().manual_seed(13)
    clip_lengths = torch.tensor([4, TINY_CLIP.text_ctx])
    clip_tokens = torch.randint(1, TINY_CLIP.n_vocab, (2, TINY_CLIP.text_ctx), generator=generator)
    clip_tokens = torch.where(torch.arange(TINY_CLIP.text_ctx)[None] < clip_lengths[:, None], clip_tokens, 0)
    stage = Stage(model, sampler, tokens=tokens, mask=mask, clip=clip, clip_tokens=clip_tokens,
                  clip_lengths=clip_lengths, clip_scale=3.0)
    result = stage.check(f"CLIP guidance 3, {sampler.name}", clamp_reference=True)
    differs(result, stage.glidecli(clip_scale=0.0), "CLIP guidance")
