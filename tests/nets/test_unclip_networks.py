"""unCLIP's networks (Karlo v1.0 alpha): the release's layouts at full size, and float32 parity
with kakaobrain/karlo and openai/CLIP on tiny random weights.

tests/nets/data/unclip_vectors.pt holds the reference's outputs for the tiny networks of
helpers/tiny_unclip.py (weights from `random_init_` with fixed seeds, so both sides rebuild
them): Karlo's PriorTransformer, PLMImUNet and SuperResUNetModel, and OpenAI CLIP with Karlo's
`encode_text`, run once outside the repository on the same weights and inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from glidecli.nets.checkpoint import build_network
from glidecli.nets.clip_vit import clip_text, encode_prompts, image_embedding, preprocess_image
from glidecli.nets.prior import ClipText
from glidecli.nets.tokenizer import ClipTokenizer
from glidecli.nets.unclip_config import OpenClipConfig, PriorConfig, karlo_decoder_config, karlo_sr_config
from helpers.paths import SHARED
from helpers.tiny_unclip import CLIP_DIM, TINY_CLIP_VIT, tiny_unclip_network

LAYOUTS = SHARED / "karlo" / "checkpoints"
VECTORS = Path(__file__).parent / "data" / "unclip_vectors.pt"


@pytest.fixture(scope="module")
def vectors():
    return torch.load(VECTORS, weights_only=True)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 1e-5) -> None:
    assert actual.shape == expected.shape, f"{what}: {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().item()
    assert scale > 0.1, f"{what}: the reference output is too small for a meaningful comparison"
    err = (actual.double() - expected.double()).abs().max().item() / scale
    print(f"parity {what}: max|diff|/max|ref| = {err:.2e}")
    assert err < rtol, f"{what}: max|diff|/max|ref| = {err:.2e}"


@pytest.mark.parametrize(
    "kind, config, layout, prefix",
    [
        ("unclip-prior", PriorConfig(), "prior", "model."),
        ("unclip-decoder", karlo_decoder_config(), "decoder", "model."),
        ("unclip-sr", karlo_sr_config(), "sr-64-256", ""),
    ],
)
def test_full_size_network_matches_release_layout(kind, config, layout, prefix):
    path = LAYOUTS / f"{layout}.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    release = json.loads(path.read_text())
    with torch.device("meta"):
        network = build_network(kind, config)
    ours = {prefix + name: list(t.shape) for name, t in network.state_dict().items()}
    assert ours == release["keys"]
    assert sum(t.numel() for t in network.state_dict().values()) == release["parameters"]


def test_full_size_clip_vit_is_open_clips_vit_l_14():
    import open_clip

    with torch.device("meta"):
        ours = build_network("openclip", OpenClipConfig())
        theirs = open_clip.create_model("ViT-L-14", pretrained=None, device="meta")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert ours.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"


def test_clip_text_and_image_match_reference(vectors):
    ref = vectors["clip"]
    model = tiny_unclip_network("openclip", seed=5)
    with torch.no_grad():
        text = clip_text(model, ref["tokens"], ref["mask"])
        assert_close(text.pooled, ref["pooled"], "clip pooled text")
        assert_close(text.tokens, ref["seq"], "clip text tokens")
        pixels = preprocess_image(Image.fromarray(ref["picture"].numpy()), TINY_CLIP_VIT)
        assert_close(pixels, ref["pixels"], "clip preprocessing")
        assert_close(image_embedding(model, pixels[None]), ref["image_embedding"], "clip image embedding")


def test_prompts_tokenize_as_karlo_does(vectors):
    """Start, BPE ids, end, zero padding; the mask covers start..end."""
    model = tiny_unclip_network("openclip", seed=5)
    prompts = ["a red cube on a table", "", "an avocado armchair in the style of magritte, oil painting"]
    with torch.no_grad():
        text = encode_prompts(model, ClipTokenizer(), prompts)
    assert torch.equal(text.mask, vectors["clip"]["mask"])
    assert_close(text.pooled, vectors["clip"]["pooled"], "clip pooled text from prompts")


def test_prior_matches_reference(vectors):
    ref = vectors["prior"]
    prior = tiny_unclip_network("unclip-prior", seed=1)
    with torch.no_grad():
        out = prior(ref["x"], ref["t"], ClipText(ref["pooled"], ref["tokens"], ref["mask"]))
    assert_close(out, ref["out"], "prior")


def test_prior_ignores_padded_text_positions(vectors):
    """Padding features are masked out: changing them changes nothing; changing a real token does."""
    ref = vectors["prior"]
    prior = tiny_unclip_network("unclip-prior", seed=1)
    text = ClipText(ref["pooled"], ref["tokens"], ref["mask"])
    noisy_padding = text.tokens + torch.randn_like(text.tokens) * (~text.mask[..., None])
    with torch.no_grad():
        base = prior(ref["x"], ref["t"], text)
        padded = prior(ref["x"], ref["t"], text._replace(tokens=noisy_padding))
        moved = text.tokens.clone()
        moved[:, 1] += 1.0
        changed = prior(ref["x"], ref["t"], text._replace(tokens=moved))
    assert torch.allclose(base, padded, atol=1e-6)
    assert (changed - base).abs().max() > 1e-3


def test_prior_denormalizes_with_clip_stats():
    prior = tiny_unclip_network("unclip-prior", seed=1)
    x = torch.randn(2, CLIP_DIM)
    assert torch.allclose(prior.denormalize(x), x * prior.clip_std + prior.clip_mean)
    with pytest.raises(ValueError, match="needs 32"):
        prior.set_stats(torch.zeros(5), torch.ones(5))


def test_decoder_matches_reference(vectors):
    ref, text = vectors["decoder"], vectors["prior"]
    decoder = tiny_unclip_network("unclip-decoder", seed=2)
    with torch.no_grad():
        cond = decoder.encode_clip(text["pooled"], text["tokens"], text["mask"], ref["image_embedding"])
        assert_close(decoder(ref["x"], ref["t"], cond), ref["out"], "decoder")
        uncond = decoder.encode_clip(text["pooled"], text["tokens"], text["mask"], None)
        assert_close(decoder(ref["x"], ref["t"], uncond), ref["out_uncond"], "decoder, learned empty image")
    assert cond.tokens.shape == (3, 4 + 77, 48) and cond.mask[:, :4].all()


def test_super_resolution_matches_reference(vectors):
    ref = vectors["sr"]
    sr = tiny_unclip_network("unclip-sr", seed=3)
    with torch.no_grad():
        assert_close(sr.network_for(3)(ref["x"], ref["t"], low_res=ref["low_res"]), ref["out_first"], "sr first steps")
        assert_close(sr.network_for(0)(ref["x"], ref["t"], low_res=ref["low_res"]), ref["out_last"], "sr last step")
