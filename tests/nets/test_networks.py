"""GLIDE's networks: official layouts, variants' wiring, text masking, save/load and strict errors."""

from __future__ import annotations

import json

import pytest
import torch

from glidecli.nets.checkpoint import (
    CheckpointError,
    build_network,
    load_network,
    save_network,
)
from glidecli.nets.clip import NoisedClip
from glidecli.nets.config import ClipConfig, UNetConfig, unet_defaults
from helpers.paths import SHARED
from helpers.tiny import TINY_CLIP, tiny_network, tiny_unet_config

GLIDE_SHARED = SHARED / "glide"
LAYOUTS = GLIDE_SHARED / "checkpoints"
OFFICIAL = {
    "base": ("base", 385_030_726),
    "upsample": ("upsample", 398_361_286),
    "base-inpaint": ("base-inpaint", 385_037_638),
    "upsample-inpaint": ("upsample-inpaint", 398_368_198),
    "clip-image-enc": ("clip-image", 86_443_776),
    "clip-text-enc": ("clip-text", 71_679_488),
}


@pytest.mark.parametrize("layout_name", sorted(OFFICIAL))
def test_full_size_layout_matches_official_checkpoint(layout_name):
    if not LAYOUTS.is_dir():
        pytest.skip("../shared/glide is not available")
    layout = json.loads((LAYOUTS / f"{layout_name}.json").read_text())
    kind, count = OFFICIAL[layout_name]
    # The official defaults and the layout's recorded settings must describe the same network.
    if kind.startswith("clip"):
        arch = ClipConfig()
        assert ClipConfig.from_reference(layout["architecture"]) == arch
    else:
        arch = unet_defaults(kind)
        assert UNetConfig.from_reference(layout["architecture"]) == arch
    with torch.device("meta"):
        model = build_network(kind, arch)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == layout["keys"]
    assert sum(p.numel() for p in model.parameters()) == count == layout["parameters"]
    assert len(shapes) == layout["tensors"]


def tokens_and_mask(batch=2, ctx=8, lengths=(3, 5), seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 63, (batch, ctx), generator=generator)
    mask = torch.arange(ctx)[None] < torch.tensor(lengths)[:, None]
    return torch.where(mask, tokens, torch.full_like(tokens, 63)), mask


@pytest.mark.parametrize("kind", ["base", "upsample", "base-inpaint", "upsample-inpaint"])
def test_unet_variants_shapes_and_input_channels(kind):
    model = tiny_network(kind)
    cfg = model.config
    assert model.input_blocks[0][0].in_channels == {
        "base": 3, "upsample": 6, "base-inpaint": 7, "upsample-inpaint": 10
    }[kind]
    size = cfg.image_size
    x = torch.randn(2, 3, size, size)
    text = model.encode_text(*tokens_and_mask())
    extra = {}
    if cfg.super_res:
        extra["low_res"] = torch.randn(2, 3, size // 2, size // 2)
    with torch.no_grad():
        out = model(x, torch.tensor([3, 900]), text, **extra)
    assert out.shape == (2, 6, size, size)
    assert torch.isfinite(out).all()


def test_padding_tokens_do_not_matter_but_real_tokens_do():
    model = tiny_network("base")
    tokens, mask = tokens_and_mask()
    other_padding = torch.where(mask, tokens, torch.zeros_like(tokens))
    changed_word = tokens.clone()
    changed_word[0, 0] = (tokens[0, 0] + 1) % 63
    with torch.no_grad():
        reference = model.encode_text(tokens, mask)
        same = model.encode_text(other_padding, mask)
        different = model.encode_text(changed_word, mask)
    torch.testing.assert_close(same.pooled, reference.pooled, rtol=0, atol=0)
    assert not torch.allclose(different.pooled[0], reference.pooled[0])
    torch.testing.assert_close(different.pooled[1], reference.pooled[1], rtol=0, atol=0)


def test_inpaint_model_sees_only_the_kept_region_of_the_source():
    model = tiny_network("base-inpaint")
    x = torch.randn(1, 3, 16, 16)
    text = model.encode_text(*tokens_and_mask(batch=1, lengths=(4,)))
    t = torch.tensor([500])
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8] = 1  # keep the left half
    source = torch.randn(1, 3, 16, 16)
    edited_right = source.clone()
    edited_right[..., 8:] = torch.randn(1, 3, 16, 8)
    edited_left = source.clone()
    edited_left[..., :8] += 0.5
    with torch.no_grad():
        base = model(x, t, text, inpaint_image=source, inpaint_mask=mask)
        right = model(x, t, text, inpaint_image=edited_right, inpaint_mask=mask)
        left = model(x, t, text, inpaint_image=edited_left, inpaint_mask=mask)
        plain = model(x, t, text)
    torch.testing.assert_close(right, base, rtol=0, atol=0)
    assert not torch.allclose(left, base)
    assert not torch.allclose(plain, base)


def test_upsampler_uses_the_low_resolution_image():
    model = tiny_network("upsample")
    x = torch.randn(1, 3, 32, 32)
    text = model.encode_text(*tokens_and_mask(batch=1, lengths=(4,)))
    t = torch.tensor([10])
    low = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a = model(x, t, text, low_res=low)
        b = model(x, t, text, low_res=-low)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="low-resolution"):
        model(x, t, text)


def test_batch_elements_are_independent():
    model = tiny_network("base")
    tokens, mask = tokens_and_mask()
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([100, 700])
    with torch.no_grad():
        text = model.encode_text(tokens, mask)
        both = model(x, t, text)
        first = model(x[:1], t[:1], model.encode_text(tokens[:1], mask[:1]))
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = tiny_network("upsample-inpaint", seed=3)
    path = save_network(model, tmp_path / "tiny.safetensors")
    loaded = load_network("upsample-inpaint", model.config, path)
    assert not any(p.requires_grad for p in loaded.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_channels_last_gives_the_same_outputs():
    model = tiny_network("upsample-inpaint", seed=2)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([3, 600])
    images = dict(low_res=torch.randn(2, 3, 16, 16), inpaint_image=torch.randn(2, 3, 32, 32), inpaint_mask=torch.ones(2, 1, 32, 32))
    with torch.no_grad():
        text = model.encode_text(*tokens_and_mask())
        default = model(x, t, text, **images)
        assert not model.channels_last
        model.use_channels_last()
        assert model.channels_last
        nhwc = model(x, t, text, **images)
    assert nhwc.is_contiguous()
    torch.testing.assert_close(nhwc, default, rtol=1e-4, atol=1e-5)


def test_low_precision_load_keeps_norms_in_float32(tmp_path):
    model = tiny_network("base", seed=1)
    path = save_network(model, tmp_path / "tiny.safetensors")
    loaded = load_network("base", model.config, path, dtype=torch.bfloat16)
    assert loaded.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32
    assert loaded.input_blocks[1][0].in_layers[2].weight.dtype == torch.bfloat16
    assert loaded.final_ln.weight.dtype == torch.float32
    tokens, mask = tokens_and_mask()
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([5, 50])
    with torch.no_grad():
        low = loaded(x, t, loaded.encode_text(tokens, mask))
        full = model(x, t, model.encode_text(tokens, mask))
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, full, rtol=0.1, atol=0.1)


def test_strict_load_names_missing_unexpected_and_misshaped_keys(tmp_path):
    from safetensors.torch import save_file

    model = tiny_network("base")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["out.2.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["time_embed.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        load_network("base", model.config, path)
    message = str(info.value)
    assert "\n" not in message
    assert "out.2.bias" in message and "extra.weight" in message
    assert "time_embed.0.weight" in message and "[3, 3]" in message


def test_wrong_kind_and_unreadable_files(tmp_path):
    model = tiny_network("base")
    path = save_network(model, tmp_path / "base.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_network("base-inpaint", tiny_unet_config("base-inpaint"), path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_network("base", model.config, garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_network("base", model.config, tmp_path / "missing.safetensors")


def test_clip_text_encoder_is_causal_and_reads_the_end_token():
    clip = NoisedClip(tiny_network("clip-image"), tiny_network("clip-text"))
    tokens = torch.randint(1, 60, (2, TINY_CLIP.text_ctx), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([4, 7])
    after_end = tokens.clone()
    after_end[:, 8:] = 0
    with torch.no_grad():
        a = clip.text_embeddings(tokens, lengths)
        b = clip.text_embeddings(after_end, lengths)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))


def test_clip_image_embedding_depends_on_timestep_and_gives_a_gradient():
    clip = NoisedClip(tiny_network("clip-image"), tiny_network("clip-text"))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        early = clip.image_embeddings(x, torch.tensor([0, 0]))
        late = clip.image_embeddings(x, torch.tensor([900, 900]))
    assert early.shape == (2, TINY_CLIP.embed_dim)
    assert not torch.allclose(early, late)
    text = clip.text_embeddings(torch.randint(1, 60, (2, 12)), torch.tensor([3, 3]))
    grad = clip.similarity_grad(x, torch.tensor([10, 10]), text)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected images"):
        clip.image_embeddings(torch.zeros(1, 3, 8, 8), torch.tensor([0]))


def test_loading_reads_each_tensor_once_straight_into_its_final_dtype_and_layout(tmp_path, monkeypatch):
    import safetensors

    model = tiny_network("upsample", seed=2)
    path = save_network(model, tmp_path / "up.safetensors")
    reads = []
    real_open = safetensors.safe_open

    class CountingOpen:
        def __init__(self, *args, **kwargs):
            self.file = real_open(*args, **kwargs)

        def __enter__(self):
            file = self.file.__enter__()
            self.get_slice, self.keys = file.get_slice, file.keys
            self.get_tensor = lambda name: reads.append(name) or file.get_tensor(name)
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

    monkeypatch.setattr(safetensors, "safe_open", CountingOpen)
    loaded = load_network("upsample", model.config, path, dtype=torch.float16)
    assert sorted(reads) == sorted(model.state_dict())  # every tensor read exactly once
    assert loaded.channels_last and loaded.input_blocks[0][0].weight.dtype == torch.float16
    assert loaded.out[0].weight.dtype == torch.float32
    for name, tensor in loaded.state_dict().items():
        target = tensor.dtype
        assert torch.equal(tensor, model.state_dict()[name].to(target)), name


def test_loading_runs_no_initializer(tmp_path, monkeypatch):
    """Initial values of a network about to be loaded are wasted work, and PyTorch's meta
    normal_ alone first imports sympy (seconds of start-up)."""
    model = tiny_network("base", seed=3)
    path = save_network(model, tmp_path / "base.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("an initializer ran")

    monkeypatch.setattr(torch.nn.init, "normal_", refuse)
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", refuse)
    loaded = load_network("base", model.config, path)
    assert torch.equal(loaded.token_embedding.weight, model.token_embedding.weight)
    assert torch.nn.init.normal_ is refuse  # put back as it was


def test_without_the_pooled_path_the_text_reaches_the_unet_only_through_attention(tmp_path):
    """xf_pooled = False (UNetConfig): no transformer_proj; the U-Net computes what the pooled
    model computes with that projection zeroed (weights and bias), and it saves and loads."""
    pooled = tiny_network("base", seed=5)
    sequence_only = build_network("base", tiny_unet_config("base", xf_pooled=False))
    weights = {key: value for key, value in pooled.state_dict().items() if not key.startswith("transformer_proj.")}
    sequence_only.load_state_dict(weights, strict=True)
    assert not hasattr(sequence_only, "transformer_proj") or sequence_only.transformer_proj is None
    with torch.no_grad():
        pooled.transformer_proj.weight.zero_()
        pooled.transformer_proj.bias.zero_()
    tokens, mask = tokens_and_mask()
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 900])
    with torch.no_grad():
        text = sequence_only.eval().encode_text(tokens, mask)
        assert torch.count_nonzero(text.pooled) == 0
        torch.testing.assert_close(text.tokens, pooled.encode_text(tokens, mask).tokens, rtol=0, atol=0)
        out = sequence_only(x, t, text)
        torch.testing.assert_close(out, pooled(x, t, pooled.encode_text(tokens, mask)), rtol=0, atol=0)
        changed = tokens.clone()
        changed[0, 0] = (tokens[0, 0] + 1) % 63
        assert not torch.allclose(sequence_only(x, t, sequence_only.encode_text(changed, mask))[0], out[0])  # the words still matter
    path = save_network(sequence_only, tmp_path / "seq.safetensors")
    loaded = load_network("base", sequence_only.config, path)
    assert set(loaded.state_dict()) == set(weights)
    for key, value in sequence_only.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_a_causal_text_transformer_reads_each_position_from_its_prefix():
    """xf_causal = True: with one layer, the output at position i is what the plain (two-way)
    layer makes of the first i + 1 positions alone; with two, no word changes what comes before it."""
    tokens, mask = tokens_and_mask(lengths=(8, 5))
    one_layer = tiny_network("base", seed=3, xf_causal=True, xf_layers=1)
    both_ways = tiny_network("base", seed=3, xf_layers=1)
    with torch.no_grad():
        text = one_layer.encode_text(tokens, mask).tokens
        x = both_ways.token_embedding(tokens) + both_ways.positional_embedding
        x = torch.where(mask[..., None], x, both_ways.padding_embedding)
        for i in range(tokens.shape[1]):
            prefix = both_ways.final_ln(both_ways.transformer(x[:, : i + 1]))
            torch.testing.assert_close(text[:, i], prefix[:, i], rtol=1e-5, atol=1e-5)
    causal, both_ways = tiny_network("base", seed=3, xf_causal=True), tiny_network("base", seed=3)
    with torch.no_grad():
        text = causal.encode_text(tokens, mask).tokens
        changed = tokens.clone()
        changed[0, 4] = (tokens[0, 4] + 1) % 63
        after = causal.encode_text(changed, mask).tokens
        assert torch.equal(after[0, :4], text[0, :4]) and not torch.allclose(after[0, 4:], text[0, 4:])
        assert not torch.allclose(both_ways.encode_text(changed, mask).tokens[0, :4], both_ways.encode_text(tokens, mask).tokens[0, :4])


def test_without_text_layers_each_position_holds_its_own_word():
    """xf_layers = 0: the sequence is the final LayerNorm of each position's token and position
    embeddings (the padding's own embedding where the prompt has ended), nothing mixed."""
    words = tiny_network("base", seed=4, xf_layers=0)
    assert not any(key.startswith("transformer.resblocks.") for key in words.state_dict())
    tokens, mask = tokens_and_mask()
    with torch.no_grad():
        text = words.encode_text(tokens, mask).tokens
        by_hand = torch.where(mask[..., None], words.token_embedding(tokens) + words.positional_embedding, words.padding_embedding)
        torch.testing.assert_close(text, words.final_ln(by_hand), rtol=0, atol=0)


def test_hidden_padding_is_not_read_by_the_unet():
    """xf_attend_padding = False: encode_text hands the U-Net the prompt's mask, and what the
    padding positions hold changes nothing; GLIDE's (True) attends to them."""
    tokens, mask = tokens_and_mask()
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([10, 900])
    noise = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(3))
    outputs = {}
    for attend in (True, False):
        model = tiny_network("base", seed=6, xf_attend_padding=attend)
        with torch.no_grad():
            text = model.encode_text(tokens, mask)
            assert (text.mask is None) == attend and (attend or torch.equal(text.mask, mask))
            padding_changed = text._replace(tokens=torch.where(mask[..., None], text.tokens, noise))
            outputs[attend] = model(x, t, text), model(x, t, padding_changed)
    assert torch.equal(*outputs[False])
    assert not torch.allclose(*outputs[True])
