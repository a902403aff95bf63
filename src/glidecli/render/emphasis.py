"""Emphasis in the networks: the text encoder's output sequence, the per-token features a
U-Net or prior attends to, has each token's feature weighed by the weight of the prompt
segment it came from (render/prompt_syntax.py), in one of two ways (Emphasis):

- A1111's: each feature multiplied by its weight, then the whole sequence rescaled so that its
  mean is the unweighted sequence's again. A1111 restores the mean of the whole batch at once;
  here each prompt's own sequence is restored, so a picture does not depend on the prompts
  batched with it (the seed contract).
- ComfyUI's: each feature moved from the empty prompt's feature at its position, empty +
  weight x (feature - empty): weight 0 is the empty prompt there, and nothing is rescaled.

The pooled embedding is computed before, from the unweighted sequence, and is left as it is.
A row whose weights are all 1 is returned untouched: a prompt without emphasis gives the
plain prompt's pictures, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..nets.tokenizer import ClipTokenBatch, ClipTokenizer, GlideTokenizer, TokenBatch
from .prompt_syntax import Emphasis, WeightedPrompt


def emphasize(sequence: Tensor, weights: Tensor) -> Tensor:
    """`sequence` [B, L, D] with position l of row b scaled by weights[b, l] and each
    changed row's mean (over L and D) restored; rows of weights all 1 are the same tensors'
    values, untouched. Computed in float32, returned in the sequence's dtype."""
    weights = weights.to(sequence.device)
    changed = (weights != 1.0).any(dim=1)
    if not bool(changed.any()):
        return sequence
    values = sequence.float()
    original = values.mean(dim=(1, 2), keepdim=True)
    scaled = values * weights.float()[..., None]
    new = scaled.mean(dim=(1, 2), keepdim=True)
    # A sequence weighted to a zero mean (weights of 0) has no mean to restore.
    ratio = torch.where(new != 0, original / torch.where(new != 0, new, torch.ones_like(new)), torch.ones_like(new))
    restored = (scaled * ratio).to(sequence.dtype)
    return torch.where(changed[:, None, None], restored, sequence)


def emphasize_from_empty(sequence: Tensor, weights: Tensor, empty: Tensor) -> Tensor:
    """ComfyUI's emphasis: `sequence` [B, L, D] with position l of row b moved from `empty`'s
    position l ([1, L, D], the empty prompt's sequence) by weights[b, l]: empty + w (z - empty).
    Positions of weight 1 keep their values exactly. Computed in float32, returned in the
    sequence's dtype."""
    weights = weights.to(sequence.device)
    blank = empty.to(sequence.device).float()
    moved = (blank + weights.float()[..., None] * (sequence.float() - blank)).to(sequence.dtype)
    return torch.where((weights != 1.0)[..., None], moved, sequence)


def weigh(sequence: Tensor, weights: Tensor, methods: Sequence[Emphasis], empty: Callable[[], Tensor]) -> Tensor:
    """Each row of `sequence` weighed by its row of `weights` in its own row's way; `empty`
    gives the empty prompt's sequence [1, L, D], asked for only when a row is ComfyUI's."""
    comfy = torch.tensor([method == Emphasis.COMFY for method in methods], device=sequence.device)
    weighed = emphasize(sequence, weights) if not bool(comfy.all()) else sequence
    if bool(comfy.any()):
        weighed = torch.where(comfy[:, None, None], emphasize_from_empty(sequence, weights, empty()), weighed)
    return weighed


def glide_token_weights(tokenizer: GlideTokenizer, prompt: WeightedPrompt) -> list[float]:
    """The weight of each of the tokenizer's ids for `prompt.text` (not truncated). The whole
    text is tokenized, as the plain prompt is: GPT-2's BPE starts a word's token with the
    space before it, so tokenizing segments apart would give the model tokens it never
    read. A token takes the weight of the segment that holds its first character other
    than a space."""
    text = prompt.text
    ends: list[tuple[int, float]] = []
    position = 0
    for segment in prompt.segments:
        position += len(segment.text.lower())
        ends.append((position, segment.weight))
    weights = []
    for start, end in tokenizer.offsets(text):
        piece = text.lower()[start:end]
        first = start + (len(piece) - len(piece.lstrip())) if piece.strip() else start
        weights.append(next((weight for limit, weight in ends if first < limit), ends[-1][1] if ends else 1.0))
    return weights


def glide_batch(tokenizer: GlideTokenizer, prompts: Sequence[WeightedPrompt]) -> tuple[TokenBatch, Tensor | None]:
    """The token batch of the prompts' texts, and the weights [B, ctx] of its positions (1 on
    padding), None when every weight is 1."""
    batch = tokenizer.batch([prompt.text for prompt in prompts])
    if all(prompt.plain for prompt in prompts):
        return batch, None
    weights = torch.ones(batch.tokens.shape, dtype=torch.float32)
    for row, prompt in enumerate(prompts):
        if not prompt.plain:
            row_weights = glide_token_weights(tokenizer, prompt)[: tokenizer.text_ctx]
            weights[row, : len(row_weights)] = torch.tensor(row_weights, dtype=torch.float32)
    return batch, weights


def clip_batch(tokenizer: ClipTokenizer, prompts: Sequence[WeightedPrompt]) -> tuple[ClipTokenBatch, Tensor | None]:
    """CLIP's token batch of the prompts, each segment tokenized on its own (CLIP's BPE reads
    words apart, as A1111 tokenizes), and the weights [B, ctx] of its positions (1 on the
    start and end tokens and on padding), None when every weight is 1. A prompt without
    emphasis is tokenized whole, as it always was."""
    if all(prompt.plain for prompt in prompts):
        return tokenizer.batch([prompt.text for prompt in prompts]), None
    rows: list[list[int]] = []
    row_weights: list[list[float]] = []
    for prompt in prompts:
        if prompt.plain:
            ids = tokenizer.encode(prompt.text)
            rows.append(ids)
            row_weights.append([1.0] * len(ids))
            continue
        pieces = [(tokenizer.encode(segment.text), segment.weight) for segment in prompt.segments]
        rows.append([token for ids, _ in pieces for token in ids])
        row_weights.append([weight for ids, weight in pieces for _ in ids])
    batch = tokenizer.batch_ids(rows)
    weights = torch.ones(batch.tokens.shape, dtype=torch.float32)
    room = tokenizer.text_ctx - 2
    for row, values in enumerate(row_weights):
        kept = values[:room]
        weights[row, 1 : 1 + len(kept)] = torch.tensor(kept, dtype=torch.float32)
    return batch, weights
