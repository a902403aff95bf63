"""Text tokenizers for GLIDE's diffusion models and for its noised CLIP.

Both reproduce the token ids of openai/glide-text2im exactly:

* ``GlideTokenizer``: GPT-2 byte-level BPE on the lowercased prompt, padded
  with ``<|endoftext|>`` (50256) to ``text_ctx`` tokens, with a mask. Any other
  byte-level BPE vocabulary with an ``<|endoftext|>`` token works the same way
  (small models trained with ``glide train`` ship their own).
* ``ClipTokenizer``: CLIP's BPE wrapped in start/end tokens, padded with 0,
  with the sequence length the CLIP text encoder pools at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import tokenizers
import torch

GLIDE_TEXT_CTX = 128
GLIDE_PAD_TOKEN = 50256  # GPT-2's <|endoftext|>
END_OF_TEXT = "<|endoftext|>"  # pads GLIDE's prompts, whatever its id in the vocabulary

CLIP_TEXT_CTX = 77
CLIP_START_TOKEN = 49406
CLIP_END_TOKEN = 49407
CLIP_PAD_TOKEN = 0


class TokenizerFileError(ValueError):
    """The tokenizer file is missing or is not a byte-level BPE tokenizer JSON."""


class TokenBatch(NamedTuple):
    tokens: torch.Tensor  # int64 [B, text_ctx]
    mask: torch.Tensor  # bool [B, text_ctx], True on real tokens
    truncated: list[bool]  # prompts longer than text_ctx


class ClipTokenBatch(NamedTuple):
    tokens: torch.Tensor  # int64 [B, text_ctx]
    lengths: torch.Tensor  # int64 [B], tokens including start and end
    truncated: list[bool]  # prompts whose ids did not fit between start and end


class GlideTokenizer:
    """GLIDE's prompt tokenizer (GPT-2 BPE, lowercased, padded with 50256; another
    vocabulary pads with its own <|endoftext|> id)."""

    def __init__(self, bpe: tokenizers.Tokenizer, text_ctx: int = GLIDE_TEXT_CTX, pad_token: int = GLIDE_PAD_TOKEN):
        if text_ctx < 1:
            raise ValueError(f"text_ctx must be positive, got {text_ctx}")
        self._bpe = bpe
        self.text_ctx = text_ctx
        self.pad_token = pad_token

    @classmethod
    def from_file(cls, path: str | Path, text_ctx: int = GLIDE_TEXT_CTX) -> GlideTokenizer:
        """Load a byte-level BPE from a `tokenizers` JSON file (e.g. gpt2's tokenizer.json);
        its <|endoftext|> token is the padding."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerFileError(f"tokenizer file not found: {path}")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TokenizerFileError(f"{path} is not a tokenizer JSON file: {err}") from err
        if not isinstance(spec, dict):
            raise TokenizerFileError(f"{path} is not a tokenizer JSON file")

        model = spec.get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE":
            raise TokenizerFileError(f"{path} does not hold a BPE tokenizer model")
        vocab = model.get("vocab")
        pad_token = vocab.get(END_OF_TEXT) if isinstance(vocab, dict) else None
        if not isinstance(pad_token, int) or isinstance(pad_token, bool) or pad_token < 0:
            raise TokenizerFileError(f"{path} has no {END_OF_TEXT} token to pad prompts with (GPT-2's is {GLIDE_PAD_TOKEN})")

        try:
            bpe = tokenizers.Tokenizer.from_str(json.dumps(_plain_gpt2_bpe(spec)))
        except Exception as err:  # the Rust parser raises a bare Exception
            raise TokenizerFileError(f"{path} is not a valid tokenizer JSON file: {err}") from err
        return cls(bpe, text_ctx=text_ctx, pad_token=pad_token)

    @property
    def vocab_size(self) -> int:
        return self._bpe.get_vocab_size()

    @property
    def max_token(self) -> int:
        """The largest id this tokenizer produces (a network needs n_vocab above it)."""
        return max(self.pad_token, *self._bpe.get_vocab().values())

    def encode(self, prompt: str) -> list[int]:
        """Ids of the lowercased prompt, neither truncated nor padded."""
        return self._bpe.encode(prompt.lower(), add_special_tokens=False).ids

    def offsets(self, prompt: str) -> list[tuple[int, int]]:
        """The (start, end) characters of the lowercased prompt that each id of `encode`
        stands for (emphasis weighs tokens by the text they came from)."""
        return [(int(start), int(end)) for start, end in self._bpe.encode(prompt.lower(), add_special_tokens=False).offsets]

    def batch(self, prompts: list[str]) -> TokenBatch:
        tokens = torch.full((len(prompts), self.text_ctx), self.pad_token, dtype=torch.long)
        mask = torch.zeros((len(prompts), self.text_ctx), dtype=torch.bool)
        truncated = []
        for row, prompt in enumerate(prompts):
            ids = self.encode(prompt)
            truncated.append(len(ids) > self.text_ctx)
            ids = ids[: self.text_ctx]
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = True
        return TokenBatch(tokens, mask, truncated)


def _plain_gpt2_bpe(spec: dict[str, Any]) -> dict[str, Any]:
    """Copy of a tokenizer spec stripped down to what GLIDE's reference encoder does.

    Hub tokenizer files may add special tokens, templates, truncation or padding;
    GLIDE applies none of them, and e.g. a prompt containing "<|endoftext|>" must
    be split as plain text, so all of that is removed here.
    """
    spec = dict(spec)
    spec["added_tokens"] = []
    spec["normalizer"] = None
    spec["post_processor"] = None
    spec["truncation"] = None
    spec["padding"] = None
    # GLIDE splits with GPT-2's regex and no prefix space; that is ByteLevel's.
    spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    model = dict(spec["model"])
    model["dropout"] = None  # dropout would make the ids random
    if "ignore_merges" in model:  # key is unknown to older `tokenizers`
        model["ignore_merges"] = False
    spec["model"] = model
    return spec


class ClipTokenizer:
    """The noised CLIP's tokenizer: start + CLIP BPE ids + end, padded with 0."""

    def __init__(self, text_ctx: int = CLIP_TEXT_CTX):
        if text_ctx < 2:
            raise ValueError(f"text_ctx must leave room for start and end tokens, got {text_ctx}")
        # Imported here: importing open_clip takes seconds and only CLIP guidance needs it.
        from open_clip.tokenizer import SimpleTokenizer

        # open_clip's default cleaning (ftfy, html unescape, whitespace, lowercase)
        # is the one GLIDE's CLIP tokenizer applies; its vocab ships in the package.
        self._bpe = SimpleTokenizer(context_length=text_ctx)
        if (self._bpe.sot_token_id, self._bpe.eot_token_id) != (CLIP_START_TOKEN, CLIP_END_TOKEN):
            raise RuntimeError("open_clip's CLIP vocabulary has unexpected start/end token ids")
        self.text_ctx = text_ctx

    @property
    def vocab_size(self) -> int:
        return self._bpe.vocab_size

    def encode(self, prompt: str) -> list[int]:
        """BPE ids of the cleaned prompt, without start/end tokens or truncation."""
        return self._bpe.encode(prompt)

    def batch(self, prompts: list[str]) -> ClipTokenBatch:
        return self.batch_ids([self.encode(prompt) for prompt in prompts])

    def batch_ids(self, rows: list[list[int]]) -> ClipTokenBatch:
        """The batch of prompts already encoded (`encode`'s ids, one list per prompt)."""
        room = self.text_ctx - 2  # start and end always stay
        tokens = torch.full((len(rows), self.text_ctx), CLIP_PAD_TOKEN, dtype=torch.long)
        lengths = torch.zeros(len(rows), dtype=torch.long)
        truncated = []
        for row, ids in enumerate(rows):
            truncated.append(len(ids) > room)
            ids = [CLIP_START_TOKEN, *ids[:room], CLIP_END_TOKEN]
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            lengths[row] = len(ids)
        return ClipTokenBatch(tokens, lengths, truncated)
