"""Emphasis in the networks (render/emphasis.py): each token's feature scaled by its
segment's weight and the sequence's mean restored (checked against numpy in float64),
weights that follow the tokenizers' tokens, and weights all 1 giving the plain prompt's
embeddings and pictures bit for bit, for GLIDE and for unCLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glidecli.files.manifest import load_manifest
from glidecli.nets.tokenizer import GlideTokenizer
from glidecli.render.emphasis import clip_batch, emphasize, emphasize_from_empty, glide_batch, glide_token_weights, weigh
from glidecli.render.engine import Job, RenderOptions, Session, Stage, render_generate
from glidecli.render.pipeline import SamplerChoice, encode_prompts
from glidecli.render.prompt_syntax import Emphasis, read_prompt
from helpers.paths import MODELS

MANIFEST = MODELS / "weights.toml"
needs_models = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"the small models are absent: {MANIFEST}")


def reference(sequence: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A1111's arithmetic for one prompt, in float64: scale, then restore the mean."""
    scaled = sequence * weights[:, None]
    return scaled * (sequence.mean() / scaled.mean())


def test_each_token_is_scaled_and_the_mean_restored():
    generator = torch.Generator().manual_seed(0)
    sequence = torch.randn(3, 6, 8, generator=generator) + 0.5
    weights = torch.ones(3, 6)
    weights[1, 2] = 1.5
    weights[2, 0], weights[2, 4] = 0.5, 1.21
    out = emphasize(sequence, weights)
    for row in (1, 2):
        expected = reference(sequence[row].double().numpy(), weights[row].double().numpy())
        np.testing.assert_allclose(out[row].double().numpy(), expected, rtol=1e-5, atol=1e-6)
        assert out[row].mean().item() == pytest.approx(sequence[row].mean().item(), rel=1e-5, abs=1e-6)
        # Relative to each other, the positions are scaled by their weights.
        ratio = (out[row] / sequence[row]).mean(dim=1)
        np.testing.assert_allclose((ratio / ratio[5]).numpy(), weights[row].numpy(), rtol=1e-4)
    assert torch.equal(out[0], sequence[0])  # weights all 1: the same values


def test_all_ones_is_the_same_tensor_and_dtypes_are_kept():
    sequence = torch.randn(2, 4, 3, dtype=torch.float16)
    assert emphasize(sequence, torch.ones(2, 4)) is sequence
    weights = torch.ones(2, 4)
    weights[0, 1] = 2.0
    out = emphasize(sequence, weights)
    assert out.dtype == torch.float16 and torch.equal(out[1], sequence[1])


def test_a_zero_mean_leaves_no_nan():
    out = emphasize(torch.randn(1, 4, 3), torch.zeros(1, 4))
    assert torch.isfinite(out).all() and (out == 0).all()


def test_comfy_moves_each_weighted_position_from_the_empty_prompts_and_leaves_the_rest():
    """ComfyUI's emphasis, in float64 by hand: empty + w (z - empty) where w != 1; the other
    positions and rows keep their values exactly (nothing is rescaled)."""
    generator = torch.Generator().manual_seed(1)
    sequence, empty = torch.randn(2, 5, 4, generator=generator), torch.randn(1, 5, 4, generator=generator)
    weights = torch.ones(2, 5)
    weights[0, 1], weights[0, 3] = 0.0, 2.5
    out = emphasize_from_empty(sequence, weights, empty)
    expected = empty.double() + weights.double()[..., None] * (sequence.double() - empty.double())
    np.testing.assert_allclose(out[0].double().numpy(), expected[0].numpy(), rtol=1e-6, atol=1e-6)
    assert torch.equal(out[0, 1], empty[0, 1])  # weight 0: the empty prompt's feature there
    for position in (0, 2, 4):
        assert torch.equal(out[0, position], sequence[0, position])
    assert torch.equal(out[1], sequence[1])


def test_each_row_is_weighed_its_own_way_and_the_empty_prompt_is_asked_for_only_when_needed():
    generator = torch.Generator().manual_seed(2)
    sequence, empty = torch.randn(3, 4, 2, generator=generator) + 0.3, torch.randn(1, 4, 2, generator=generator)
    weights = torch.ones(3, 4)
    weights[:, 1] = 1.7
    asked: list[int] = []

    def blank() -> torch.Tensor:
        asked.append(1)
        return empty

    mixed = weigh(sequence, weights, [Emphasis.A1111, Emphasis.COMFY, Emphasis.A1111], blank)
    assert torch.equal(mixed[[0, 2]], emphasize(sequence, weights)[[0, 2]])
    assert torch.equal(mixed[1], emphasize_from_empty(sequence, weights, empty)[1])
    assert asked == [1]
    assert torch.equal(weigh(sequence, weights, [Emphasis.A1111] * 3, blank), emphasize(sequence, weights)) and asked == [1]


@needs_models
def test_glide_weights_follow_the_tokenizers_tokens():
    tokenizer = GlideTokenizer.from_file(MODELS / "shapes.tokenizer.json", text_ctx=16)
    prompt = read_prompt("a (red:1.5) circle on a [[blue]] background")
    assert prompt.text == "a red circle on a blue background"
    ids = tokenizer.encode(prompt.text)
    weights = glide_token_weights(tokenizer, prompt)
    assert len(weights) == len(ids)
    words = [tokenizer._bpe.decode([token]).strip() for token in ids]
    expected = {"red": 1.5, "blue": 1 / 1.21}
    for word, weight in zip(words, weights):
        assert weight == pytest.approx(expected.get(word, 1.0)), (word, weight)
    batch, grid = glide_batch(tokenizer, [prompt, read_prompt("a red circle")])
    assert torch.equal(batch.tokens, tokenizer.batch(["a red circle on a blue background", "a red circle"]).tokens)
    assert grid is not None and grid.shape == batch.tokens.shape and (grid[1] == 1).all() and (grid[0, len(ids):] == 1).all()


@needs_models
def test_glide_emphasis_weighs_the_sequence_not_the_pooled_embedding():
    session = Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)
    model = session.unet("shapes", "base")
    tokenizer = session.tokenizer(model.config.text_ctx, "shapes")
    plain = encode_prompts(model, tokenizer, ["a red circle"], guided=True, syntax=[True])
    ones = encode_prompts(model, tokenizer, ["a (red:1) circle"], guided=True, syntax=[True])
    strong = encode_prompts(model, tokenizer, ["a (red:1.5) circle"], guided=True, syntax=[True])
    literal = encode_prompts(model, tokenizer, ["a (red:1) circle"], guided=True, syntax=[False])
    assert torch.equal(ones.text.tokens, plain.text.tokens) and torch.equal(ones.text.pooled, plain.text.pooled)
    assert not torch.equal(literal.text.tokens, plain.text.tokens)  # the brackets are tokens there
    assert torch.equal(strong.text.pooled, plain.text.pooled)
    assert not torch.equal(strong.text.tokens, plain.text.tokens)
    assert strong.text.tokens.mean().item() == pytest.approx(plain.text.tokens.mean().item(), rel=1e-5, abs=1e-6)


@needs_models
def test_glide_comfy_emphasis_moves_the_weighted_tokens_from_the_empty_prompts():
    """--emphasis comfy through encode_prompts: the weighted positions are the empty prompt's
    sequence moved by the weight, every other position is the plain prompt's; all weights 1
    give the plain prompt's embedding bit for bit."""
    session = Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)
    model = session.unet("shapes", "base")
    tokenizer = session.tokenizer(model.config.text_ctx, "shapes")
    comfy = [Emphasis.COMFY]
    plain = encode_prompts(model, tokenizer, ["a red circle"], guided=False, syntax=[True], emphasis=comfy).text
    ones = encode_prompts(model, tokenizer, ["a (red:1) circle"], guided=False, syntax=[True], emphasis=comfy).text
    strong = encode_prompts(model, tokenizer, ["a (red:2) circle"], guided=False, syntax=[True], emphasis=comfy).text
    assert torch.equal(ones.tokens, plain.tokens) and torch.equal(strong.pooled, plain.pooled)
    blank = tokenizer.batch([""])
    with torch.no_grad():
        empty = model.encode_text(blank.tokens, blank.mask).tokens
    red = 1  # "a", "red", "circle": one token each in the small tokenizer
    torch.testing.assert_close(strong.tokens[0, red], empty[0, red] + 2 * (plain.tokens[0, red] - empty[0, red]), rtol=1e-6, atol=1e-6)
    others = [i for i in range(strong.tokens.shape[1]) if i != red]
    assert torch.equal(strong.tokens[0, others], plain.tokens[0, others])


@needs_models
def test_glide_pictures_with_weights_one_are_the_plain_prompts_bit_for_bit():
    session = Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)
    base = Stage("shapes", SamplerChoice("dpmpp_2m", "4"), scale=3.0)
    prompts = ["a red circle on a blue background", "a (red:1) circle (on:1) a blue background", "a (red:1.6) circle on a blue background"]
    negatives = ["green", "(green:1)", "green"]

    def pictures(texts: list[str]) -> list[np.ndarray]:
        jobs = [Job(text, seed=5, index=i, negative=negative) for i, (text, negative) in enumerate(zip(texts, negatives))]
        return [np.asarray(d.image) for d in render_generate(session, jobs, base, None, options=RenderOptions(batch_size=len(jobs)))]

    # Compared row for row: on the CPU a row's last bits may depend on its place in a batch.
    weighted, plain = pictures(prompts), pictures([prompts[0]] * 3)
    assert np.array_equal(weighted[0], plain[0]) and np.array_equal(weighted[1], plain[1])
    assert not np.array_equal(weighted[2], plain[2])
    assert np.array_equal(pictures([prompts[1]])[0], pictures([prompts[0]])[0])


def test_clip_weights_follow_its_tokens():
    pytest.importorskip("open_clip")
    from glidecli.nets.tokenizer import ClipTokenizer

    tokenizer = ClipTokenizer()
    prompt = read_prompt("a (red:1.5) circle, [blue] sky")
    batch, weights = clip_batch(tokenizer, [prompt, read_prompt("a red circle")])
    ids = tokenizer.encode("a red circle, blue sky")
    assert batch.tokens[0, 1 : 1 + len(ids)].tolist() == ids  # CLIP's BPE reads words apart: the same ids
    assert weights is not None
    expected = [1.0, 1.0, 1.5, 1.0, 1.0, 1 / 1.1, 1.0, 1.0]  # start, a, red, circle, ",", blue, sky, end
    assert weights[0, : len(expected)].tolist() == pytest.approx(expected)
    assert (weights[1] == 1).all()
    plain, none = clip_batch(tokenizer, [read_prompt("a (red:1) circle")])
    assert none is None and torch.equal(plain.tokens, tokenizer.batch(["a red circle"]).tokens)


@needs_models
def test_unclip_pictures_with_weights_one_are_the_plain_prompts_bit_for_bit():
    pytest.importorskip("open_clip")
    from glidecli.render.unclip import ClipModels, render_unclip

    session = Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)
    prior = Stage("shapes-prior", SamplerChoice("ddim", "5"), scale=4.0)
    decoder = Stage("shapes-decoder", SamplerChoice("dpmpp_2m", "4"), scale=3.0)
    clip = ClipModels("shapes-clip", "shapes-prior-stats")

    def picture(prompt: str, emphasis: Emphasis = Emphasis.A1111) -> np.ndarray:
        jobs = [Job(prompt, seed=2, negative="(green:1)", emphasis=emphasis)]
        return np.asarray(next(iter(render_unclip(session, jobs, prior, decoder, None, clip=clip))).image)

    plain = picture("a red circle on a blue background")
    assert np.array_equal(picture("a (red:1) circle on a [(blue:1.1)] background"), plain)
    assert np.array_equal(picture("a (red:1) circle on a [(blue:1.1)] background", Emphasis.COMFY), plain)
    a1111, comfy = picture("a (red:1.8) circle on a blue background"), picture("a (red:1.8) circle on a blue background", Emphasis.COMFY)
    assert not np.array_equal(a1111, plain) and not np.array_equal(comfy, plain) and not np.array_equal(comfy, a1111)


@needs_models
def test_composition_splits_first_and_each_component_is_weighted_on_its_own():
    from glidecli.render.composition import parse_prompt

    assert [c.text for c in parse_prompt("a (red :1.2) circle AND a blue background :0.5")] == ["a (red :1.2) circle", "a blue background"]
    assert parse_prompt("a (red :1.2)")[0].weight == 1.0
    session = Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)
    model = session.unet("shapes", "base")
    tokenizer = session.tokenizer(model.config.text_ctx, "shapes")
    plain = encode_prompts(model, tokenizer, ["a red circle AND a blue background"], guided=True, compose=True, syntax=[True])
    weighted = encode_prompts(model, tokenizer, ["a (red:1.4) circle AND a (blue:1) background"], guided=True, compose=True, syntax=[True])
    assert weighted.composition is not None and weighted.text.tokens.shape[0] == 2
    assert not torch.equal(weighted.text.tokens[0], plain.text.tokens[0])
    assert torch.equal(weighted.text.tokens[1], plain.text.tokens[1]) and torch.equal(weighted.text.pooled, plain.text.pooled)
