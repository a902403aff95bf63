import json

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from glidecli.nets.tokenizer import (
    CLIP_END_TOKEN,
    CLIP_START_TOKEN,
    GLIDE_PAD_TOKEN,
    ClipTokenizer,
    GlideTokenizer,
    TokenizerFileError,
)
from helpers.paths import SHARED

# Shared test data sits beside the repository, not in it; a plain clone has none.
SHARED_TOKENIZERS = SHARED / "glide" / "tokenizers"
GPT2_BPE = SHARED_TOKENIZERS / "gpt2-bpe.json"
REFERENCE_IDS = SHARED_TOKENIZERS / "reference-token-ids.json"

needs_gpt2_bpe = pytest.mark.skipif(not GPT2_BPE.is_file(), reason=f"shared test data absent: {GPT2_BPE}")


def reference_params():
    """One pytest param per reference prompt, or a single skipped one without the data."""
    if not REFERENCE_IDS.is_file() or not GPT2_BPE.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"shared test data absent: {SHARED_TOKENIZERS}"))]
    vectors = json.loads(REFERENCE_IDS.read_text(encoding="utf-8"))["vectors"]
    return [pytest.param(v, id=f"{i}-{v['prompt'][:24]!r}") for i, v in enumerate(vectors)]


@pytest.fixture(scope="session")
def glide_tokenizer():
    return GlideTokenizer.from_file(GPT2_BPE)


@pytest.fixture(scope="session")
def clip_tokenizer():
    return ClipTokenizer()  # built once: importing open_clip takes seconds


@pytest.fixture
def byte_level_tokenizer_file(tmp_path):
    """A merge-free GPT-2-style BPE (one token per byte), for tests without shared data."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab["<|endoftext|>"] = GLIDE_PAD_TOKEN
    bpe = Tokenizer(models.BPE(vocab, []))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    path = tmp_path / "byte-level.json"
    bpe.save(str(path))
    return path


# --- GLIDE tokenizer -------------------------------------------------------


@pytest.mark.parametrize("vector", reference_params())
def test_glide_tokens_match_reference(glide_tokenizer, vector):
    batch = glide_tokenizer.batch([vector["prompt"]])
    assert batch.tokens[0].tolist() == vector["glide_tokens"]
    mask_len = vector["glide_mask_len"]
    assert batch.mask[0].tolist() == [True] * mask_len + [False] * (128 - mask_len)


@needs_gpt2_bpe
def test_glide_vocab_and_lowercasing(glide_tokenizer):
    assert glide_tokenizer.vocab_size == 50257
    assert glide_tokenizer.encode("A Corgi IN a Field") == glide_tokenizer.encode("a corgi in a field")
    assert glide_tokenizer.encode("") == []


@needs_gpt2_bpe
def test_glide_ignores_extras_configured_in_the_json(glide_tokenizer, tmp_path):
    # Hub files may carry special tokens, templates, truncation and padding;
    # none of them may change GLIDE's ids.
    configured = Tokenizer.from_file(str(GPT2_BPE))
    configured.add_special_tokens(["<|endoftext|>"])
    configured.normalizer = normalizers.Replace("a", "b")
    configured.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    configured.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A <|endoftext|>", special_tokens=[("<|endoftext|>", GLIDE_PAD_TOKEN)]
    )
    configured.enable_truncation(max_length=2)
    configured.enable_padding(length=40, pad_id=0, pad_token="!")
    path = tmp_path / "configured.json"
    configured.save(str(path))

    prompt = "a corgi <|endoftext|> on a mat"
    ids = GlideTokenizer.from_file(path).encode(prompt)
    assert ids == glide_tokenizer.encode(prompt)
    assert GLIDE_PAD_TOKEN not in ids  # "<|endoftext|>" in a prompt is plain text to GLIDE


def test_glide_batch_pads_and_masks(byte_level_tokenizer_file):
    tokenizer = GlideTokenizer.from_file(byte_level_tokenizer_file, text_ctx=8)
    batch = tokenizer.batch(["abc", "", "abcdefgh"])

    assert batch.tokens.shape == batch.mask.shape == (3, 8)
    assert batch.tokens.dtype == torch.long and batch.mask.dtype == torch.bool
    assert batch.mask.sum(dim=1).tolist() == [3, 0, 8]
    assert batch.tokens[0, :3].tolist() == tokenizer.encode("abc")
    assert (batch.tokens[~batch.mask] == GLIDE_PAD_TOKEN).all()
    assert batch.truncated == [False, False, False]  # exactly text_ctx tokens still fits


def test_glide_batch_truncates_long_prompts(byte_level_tokenizer_file):
    tokenizer = GlideTokenizer.from_file(byte_level_tokenizer_file, text_ctx=8)
    batch = tokenizer.batch(["a long prompt", "short"])

    assert batch.truncated == [True, False]
    assert batch.tokens[0].tolist() == tokenizer.encode("a long prompt")[:8]
    assert batch.mask[0].all()


def test_glide_empty_batch(byte_level_tokenizer_file):
    batch = GlideTokenizer.from_file(byte_level_tokenizer_file).batch([])
    assert batch.tokens.shape == (0, 128) and batch.truncated == []


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(TokenizerFileError, match="not found"):
        GlideTokenizer.from_file(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("this is not json", id="not-json"),
        pytest.param('{"weights": [1, 2, 3]}', id="json-without-model"),
        pytest.param('{"model": {"type": "WordPiece", "vocab": {}}}', id="not-bpe"),
        pytest.param('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}', id="not-gpt2-vocab"),
        pytest.param('{"model": {"type": "BPE", "vocab": {"<|endoftext|>": 50256}}}', id="malformed"),
    ],
)
def test_invalid_tokenizer_file(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerFileError):
        GlideTokenizer.from_file(path)


def test_tokenizer_file_error_is_a_value_error():
    assert issubclass(TokenizerFileError, ValueError)


# --- CLIP tokenizer --------------------------------------------------------


@pytest.mark.parametrize("vector", reference_params())
def test_clip_tokens_match_reference(clip_tokenizer, vector):
    batch = clip_tokenizer.batch([vector["prompt"]])
    assert batch.tokens[0].tolist() == vector["clip_tokens"]
    assert batch.lengths.tolist() == [vector["clip_len"]]


def test_clip_batch_shapes_and_known_ids(clip_tokenizer):
    batch = clip_tokenizer.batch(["a corgi in a field", ""])

    assert batch.tokens.shape == (2, 77) and batch.tokens.dtype == torch.long
    assert batch.lengths.dtype == torch.long
    assert batch.lengths.tolist() == [7, 2]
    assert batch.tokens[0, :7].tolist() == [CLIP_START_TOKEN, 320, 31320, 530, 320, 1570, CLIP_END_TOKEN]
    assert batch.tokens[1, :2].tolist() == [CLIP_START_TOKEN, CLIP_END_TOKEN]
    assert (batch.tokens[0, 7:] == 0).all() and (batch.tokens[1, 2:] == 0).all()
    assert batch.truncated == [False, False]


def test_clip_truncation_keeps_start_and_end(clip_tokenizer):
    prompt = " ".join(["corgi"] * 100)
    ids = clip_tokenizer.encode(prompt)
    batch = clip_tokenizer.batch([prompt])

    assert batch.truncated == [True]
    assert batch.lengths.tolist() == [77]
    assert batch.tokens[0].tolist() == [CLIP_START_TOKEN, *ids[:75], CLIP_END_TOKEN]


def test_clip_exactly_full_context_is_not_truncated(clip_tokenizer):
    prompt = " ".join(["corgi"] * 75)  # "corgi" is one CLIP token
    assert len(clip_tokenizer.encode(prompt)) == 75
    batch = clip_tokenizer.batch([prompt])
    assert batch.truncated == [False] and batch.lengths.tolist() == [77]
