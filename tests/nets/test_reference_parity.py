"""Parity of glidecli's networks with the reference GLIDE (openai/glide-text2im).

The reference package cannot be installed here, so `reference_oracle.py` re-implements its
forward passes functionally, over the official state-dict layout, with the reference's numerics
(split-scale einsum attention with a float32 softmax, float32 GroupNorm, explicitly padded
additive CLIP masks, ...). Each test gives both the same random weights and inputs and demands
float32 agreement (rtol 1e-5, atol 1e-5 times the output's magnitude).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest
import torch

import helpers.reference_oracle as oracle
from glidecli.nets.checkpoint import build_network, random_init_
from glidecli.nets.clip import NoisedClip
from glidecli.nets.config import ClipConfig, UNetConfig, unet_defaults
from helpers.paths import SHARED
from helpers.tiny import TINY_CLIP, tiny_unet_config

RTOL = 1e-5
ATOL = 1e-5  # relative to the largest magnitude of the reference output
LAYOUTS = SHARED / "glide" / "checkpoints"
TIMESTEPS = (0, 417, 999)


def assert_parity(actual: torch.Tensor, expected: torch.Tensor, what: str) -> float:
    """Elementwise float32 agreement; returns max|diff| / max|expected| (printed with -s)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(expected).all(), f"{what}: the oracle's output is not finite"
    scale = expected.abs().max().item()
    assert scale > 0, f"{what}: the oracle's output is all zeros, the comparison would be vacuous"
    err = (actual.double() - expected.double()).abs().max().item() / scale
    print(f"parity {what}: max|diff|/max|ref| = {err:.2e} (max|ref| = {scale:.3g})")
    torch.testing.assert_close(
        actual, expected, rtol=RTOL, atol=ATOL * max(scale, 1.0), msg=lambda m: f"{what}: {m}"
    )
    return err


# ----------------------------------------------------------------------------- builders


def make_network(kind: str, arch, seed: int, std: float, attention_boost: float = 1.0):
    """Random weights via random_init_ (built on `meta` first so that the default inits of
    large networks cost nothing). `attention_boost` scales the U-Net's attention projections so
    that attention and the text's keys/values carry a real share of the output."""
    with torch.device("meta"):
        model = build_network(kind, arch)
    model = model.to_empty(device="cpu")
    assert not list(model.buffers()), "to_empty would leave buffers uninitialized"
    random_init_(model, seed=seed, std=std)
    if attention_boost != 1.0:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("qkv.weight", "encoder_kv.weight", "proj_out.weight")):
                    param.mul_(attention_boost)
    return model.eval()


def tiny_unet(kind: str = "base", seed: int = 1, **changes):
    cfg = dataclasses.replace(tiny_unet_config(kind), **changes)
    return make_network(kind, cfg, seed=seed, std=0.08, attention_boost=2.0), cfg


def prompts(cfg: UNetConfig, lengths, seed: int = 0):
    """Random token ids (padding slots hold random ids too) and masks of the given lengths;
    length 0 is the empty prompt (mask all False), text_ctx the full-length one."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, cfg.n_vocab, (len(lengths), cfg.text_ctx), generator=generator)
    mask = torch.arange(cfg.text_ctx)[None] < torch.tensor(lengths)[:, None]
    return tokens, mask


def unet_inputs(cfg: UNetConfig, seed: int = 0, with_conditioning: bool = True):
    generator = torch.Generator().manual_seed(seed)
    batch, size = len(TIMESTEPS), cfg.image_size
    x = torch.randn(batch, 3, size, size, generator=generator)
    t = torch.tensor(TIMESTEPS)
    extra = {}
    if cfg.super_res:  # GLIDE's upsampler goes 64 -> 256: a 4x bilinear upsampling
        extra["low_res"] = torch.rand(batch, 3, size // 4, size // 4, generator=generator) * 2 - 1
    if cfg.inpaint and with_conditioning:
        extra["inpaint_image"] = torch.randn(batch, 3, size, size, generator=generator)
        extra["inpaint_mask"] = (torch.rand(batch, 1, size, size, generator=generator) > 0.4).float()
    return x, t, extra


def check_unet(model, cfg: UNetConfig, lengths, what: str, with_conditioning: bool = True) -> None:
    x, t, extra = unet_inputs(cfg, with_conditioning=with_conditioning)
    state = model.state_dict()
    with torch.no_grad():
        if cfg.xf_width:
            tokens, mask = prompts(cfg, lengths)
            text = model.encode_text(tokens, mask)
            xf_proj, xf_out = oracle.text_embedding(state, cfg, tokens, mask)
            assert_parity(text.pooled, xf_proj, f"{what} text pooled")
            assert_parity(text.tokens, xf_out.permute(0, 2, 1), f"{what} text tokens")
        else:
            tokens = mask = text = None
        actual = model(x, t, text, **extra)
        weights = oracle.Weights(state)
        expected = oracle.unet_forward(weights, cfg, x, t, tokens, mask, **extra)
    assert not weights.unused(), f"oracle ignored {sorted(weights.unused())[:5]}"
    assert_parity(actual, expected, what)


# ----------------------------------------------------------------------------- U-Net, tiny


@pytest.mark.parametrize("kind", ["base", "upsample", "base-inpaint", "upsample-inpaint"])
def test_tiny_unet_variants_match_reference(kind):
    model, cfg = tiny_unet(kind)
    lengths = (0, 3, cfg.text_ctx)  # empty, partial and full-length prompts
    check_unet(model, cfg, lengths, kind)
    if cfg.inpaint:  # no inpainting inputs: the reference substitutes zeros
        check_unet(model, cfg, lengths, f"{kind} (default inpaint inputs)", with_conditioning=False)


UNET_VARIANTS = {
    "num_heads=2": dict(num_head_channels=-1, num_heads=2),
    "channel_mult=(2,3)": dict(channel_mult=(2, 3)),
    "no scale-shift norm": dict(use_scale_shift_norm=False),
    "no xf padding, no final ln": dict(xf_padding=False, xf_final_ln=False),
    "2 res blocks, attention everywhere": dict(num_res_blocks=2, attention_resolutions=(16, 8)),
    "no text (xf_width=0)": dict(xf_width=0),
}


@pytest.mark.parametrize("name", sorted(UNET_VARIANTS))
def test_tiny_unet_config_variants_match_reference(name):
    model, cfg = tiny_unet("base", seed=2, **UNET_VARIANTS[name])
    check_unet(model, cfg, (0, 5, cfg.text_ctx), name)


def test_upsample_inpaint_variant_with_other_settings_matches_reference():
    changes = dict(num_head_channels=-1, num_heads=2, use_scale_shift_norm=False, channel_mult=(1, 2, 2))
    model, cfg = tiny_unet("upsample-inpaint", seed=4, **changes)
    check_unet(model, cfg, (1, 7, cfg.text_ctx), "upsample-inpaint, heads/no scale-shift")


def test_tiny_unet_without_resblock_updown_matches_reference():
    model, cfg = tiny_unet("base", seed=3, resblock_updown=False)
    check_unet(model, cfg, (0, 4, cfg.text_ctx), "resblock_updown=False")


def test_parity_inputs_exercise_every_path():
    """With the weights the parity tests use, attention, the text's keys/values, the pooled text,
    the timestep and the conditioning images each move the output noticeably, so a mistake in any
    of them could not hide below the tolerance."""
    model, cfg = tiny_unet("upsample-inpaint")
    state = dict(model.state_dict())
    x, t, extra = unet_inputs(cfg)
    tokens, mask = prompts(cfg, (0, 3, cfg.text_ctx))

    def run(st=state, **changes):
        args = dict(x=x, t=t, tokens=tokens, mask=mask, **extra)
        args.update(changes)
        with torch.no_grad():
            return oracle.unet_forward(st, cfg, **args)

    def zeroed(*suffixes):
        return {k: torch.zeros_like(v) if k.endswith(suffixes) else v for k, v in state.items()}

    reference = run()
    effects = {
        "attention proj_out": run(zeroed("proj_out.weight", "proj_out.bias")),
        "text keys/values": run(zeroed("encoder_kv.weight", "encoder_kv.bias")),
        "pooled text": run(zeroed("transformer_proj.weight", "transformer_proj.bias")),
        "padding embedding": run(zeroed("padding_embedding")),
        "tokens": run(tokens=(tokens + 1) % cfg.n_vocab),
        "timestep": run(t=t + 7),
        "low_res": run(low_res=-extra["low_res"]),
        "inpaint image": run(inpaint_image=-extra["inpaint_image"]),
    }
    for name, changed in effects.items():
        relative = ((changed - reference).norm() / reference.norm()).item()
        assert relative > 0.05, f"{name} changes the output by only {relative:.3%}"


def test_oracle_reads_exactly_the_official_checkpoint_keys():
    """The oracle, which derives its blocks from the reference constructor, consumes every tensor
    of the official checkpoints with matching shapes (run on `meta` tensors: no compute)."""
    if not LAYOUTS.is_dir():
        pytest.skip("../shared/glide is not available")
    meta = dict(device="meta")
    for name in ("base", "upsample", "base-inpaint", "upsample-inpaint"):
        layout = json.loads((LAYOUTS / f"{name}.json").read_text())
        cfg = UNetConfig.from_reference(layout["architecture"])
        weights = oracle.Weights({k: torch.empty(v, **meta) for k, v in layout["keys"].items()})
        size = cfg.image_size
        extra = {}
        if cfg.super_res:
            extra["low_res"] = torch.empty(1, 3, size // 4, size // 4, **meta)
        if cfg.inpaint:
            extra["inpaint_image"] = torch.empty(1, 3, size, size, **meta)
            extra["inpaint_mask"] = torch.empty(1, 1, size, size, **meta)
        tokens = torch.zeros(1, cfg.text_ctx, dtype=torch.long, **meta)
        out = oracle.unet_forward(
            weights, cfg, torch.empty(1, 3, size, size, **meta), torch.zeros(1, dtype=torch.long, **meta),
            tokens, torch.zeros(1, cfg.text_ctx, dtype=torch.bool, **meta), **extra,
        )
        assert out.shape == (1, 6, size, size)
        assert not weights.unused(), f"{name}: oracle ignored {sorted(weights.unused())[:5]}"
    for name, kind in (("clip-image-enc", "image"), ("clip-text-enc", "text")):
        layout = json.loads((LAYOUTS / f"{name}.json").read_text())
        cfg = ClipConfig.from_reference(layout["architecture"])
        weights = oracle.Weights({k: torch.empty(v, **meta) for k, v in layout["keys"].items()})
        if kind == "image":
            x = torch.empty(1, 3, cfg.image_size, cfg.image_size, **meta)
            out = oracle.clip_image_forward(weights, cfg, x, torch.zeros(1, dtype=torch.long, **meta))
        else:
            tokens = torch.zeros(1, cfg.text_ctx, dtype=torch.long, **meta)
            out = oracle.clip_text_forward(weights, cfg, tokens, torch.ones(1, dtype=torch.long, **meta))
        assert out.shape == (1, cfg.embed_dim)
        assert not weights.unused(), f"{name}: oracle ignored {sorted(weights.unused())[:5]}"


def test_clip_masks_are_the_reference_block_padded_masks():
    """The oracle's padded CLIP bias: 257 -> 288 dense and 77 -> 96 causal; real positions see
    exactly what the reference lets them see, padded keys get -1e10."""
    for n_context, causal, padded in ((257, False, 288), (77, True, 96), (17, False, 32), (12, True, 32)):
        size, bias = oracle.clip_attention_bias(n_context, causal)
        assert size == padded and bias.shape == (padded, padded)
        assert set(bias.unique().tolist()) == {0.0, -1e10}
        i = torch.arange(size)
        allowed = (i[None] < n_context) & (i[:, None] < n_context)
        if causal:
            allowed &= i[None] <= i[:, None]
        assert torch.equal(bias[:n_context] == 0, allowed[:n_context])
        assert (bias[n_context:] != 0).all()  # padded queries attend to nothing (and are dropped)


# ----------------------------------------------------------------------------- CLIP


def make_clip(cfg: ClipConfig, std: float, seed: int = 7):
    image = make_network("clip-image", cfg, seed=seed, std=std)
    text = make_network("clip-text", cfg, seed=seed + 1, std=std)
    return NoisedClip(image, text)


def check_clip(clip: NoisedClip, cfg: ClipConfig, timesteps, lengths, what: str, normalized_image: bool = True) -> None:
    generator = torch.Generator().manual_seed(11)
    batch = len(timesteps)
    x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=generator) * 2 - 1
    t = torch.tensor(timesteps)
    tokens = torch.randint(0, cfg.n_vocab, (len(lengths), cfg.text_ctx), generator=generator)
    lengths = torch.tensor(lengths)
    image_state = clip.image_encoder.state_dict()
    text_state = clip.text_encoder.state_dict()

    with torch.no_grad():
        z_text = oracle.clip_text_forward(text_state, cfg, tokens, lengths)
        assert_parity(clip.text_encoder(tokens, lengths), z_text, f"{what} text embedding")
        z_text = oracle.normalize(z_text)
        assert_parity(clip.text_embeddings(tokens, lengths), z_text, f"{what} normalized text embedding")

    # The guidance gradient against the prompt paired with each image (the first `batch` prompts).
    z_t = z_text[:batch]
    grad, z_image = oracle.clip_guidance_grad(
        image_state, cfg, x, t, z_t, cfg.logit_scale, return_embedding=True
    )
    with torch.no_grad():
        assert_parity(clip.image_encoder(x, t), z_image, f"{what} image embedding")
        if normalized_image:  # (an extra image forward; the full-size test skips it to save time)
            assert_parity(
                clip.image_embeddings(x, t), oracle.normalize(z_image), f"{what} normalized image embedding"
            )
    assert_parity(clip.similarity_grad(x, t, z_t), grad, f"{what} guidance gradient")


def test_clip_logit_scale_matches_reference():
    clip = make_clip(TINY_CLIP, std=0.02)
    reference = torch.exp(torch.tensor(math.log(100.0), dtype=torch.float32)).item()
    assert clip.logit_scale == pytest.approx(reference, rel=1e-6)


def test_tiny_clip_matches_reference():
    clip = make_clip(TINY_CLIP, std=0.1)
    check_clip(clip, TINY_CLIP, timesteps=TIMESTEPS, lengths=(1, 5, TINY_CLIP.text_ctx), what="tiny CLIP")


def test_full_size_clip_matches_reference():
    cfg = ClipConfig()
    start = time.perf_counter()
    clip = make_clip(cfg, std=0.03)
    # Batch 1 for the image encoder (forward and gradient), two prompts: short and full-length.
    check_clip(
        clip, cfg, timesteps=(637,), lengths=(2, cfg.text_ctx), what="full-size CLIP", normalized_image=False
    )
    print(f"full-size CLIP parity took {time.perf_counter() - start:.1f}s")


# ----------------------------------------------------------------------------- U-Net, full size


def test_full_size_base_unet_matches_reference():
    """The official base model (385M parameters) at 64x64, batch 1."""
    cfg = unet_defaults("base")
    start = time.perf_counter()
    model = make_network("base", cfg, seed=5, std=0.02)
    tokens, mask = prompts(cfg, (17,))
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, cfg.image_size, cfg.image_size, generator=generator)
    t = torch.tensor([321])
    state = model.state_dict()
    with torch.no_grad():
        text = model.encode_text(tokens, mask)
        xf_proj, xf_out = oracle.text_embedding(state, cfg, tokens, mask)
        assert_parity(text.pooled, xf_proj, "full-size base text pooled")
        assert_parity(text.tokens, xf_out.permute(0, 2, 1), "full-size base text tokens")
        actual = model(x, t, text)
        expected = oracle.unet_forward(state, cfg, x, t, tokens, mask)
    assert_parity(actual, expected, "full-size base U-Net")
    print(f"full-size base U-Net parity took {time.perf_counter() - start:.1f}s")
