"""unCLIP's diffusion prior (Karlo v1.0 alpha): a causal transformer that turns CLIP text
features into a CLIP image embedding.

The sequence is [text token features (ctx), pooled text embedding, timestep embedding, noisy
image embedding, learned query]; the query's output is the clean image embedding in the
normalized space (x0 prediction). `denormalize` maps it back with the CLIP image-embedding
mean and std of the release's stats file. Parameter names follow the release's checkpoint
without its `model.` prefix.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .layers import LayerNorm32, timestep_embedding
from .transformer import TextTransformer
from .unclip_config import PriorConfig


class ClipText(NamedTuple):
    """CLIP's view of a prompt batch, as Karlo's networks take it: `pooled` [B, D] (the
    projected end-of-text feature), `tokens` [B, ctx, D] (final-LayerNorm features of every
    position) and `mask` [B, ctx] (True for the start token, the prompt and the end token)."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def repeat(self, times: int) -> ClipText:
        return ClipText(*(t.repeat_interleave(times, dim=0) for t in self))

    def cat(self, other: ClipText) -> ClipText:
        return ClipText(*(torch.cat([a, b]) for a, b in zip(self, other)))


class PriorTransformer(nn.Module):
    # Buffers (register_buffer below), declared for the checker.
    clip_mean: torch.Tensor
    clip_std: torch.Tensor

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.config = cfg
        width = cfg.xf_width
        self.time_embed = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.text_enc_proj = nn.Linear(cfg.clip_dim, width)
        self.text_emb_proj = nn.Linear(cfg.clip_dim, width)
        self.clip_img_proj = nn.Linear(cfg.clip_dim, width)
        self.out_proj = nn.Linear(width, cfg.clip_dim)
        self.transformer = TextTransformer(width, cfg.xf_layers, cfg.xf_heads)
        self.final_ln = LayerNorm32(width) if cfg.xf_final_ln else None
        self.positional_embedding = nn.Parameter(torch.empty(1, cfg.context, width))
        self.prd_emb = nn.Parameter(torch.empty(1, 1, width))
        # Filled from the stats file when loaded; not part of the checkpoint.
        self.register_buffer("clip_mean", torch.zeros(cfg.clip_dim), persistent=False)
        self.register_buffer("clip_std", torch.ones(cfg.clip_dim), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.out_proj.weight.dtype

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> PriorTransformer:
        """Use the CLIP image-embedding statistics (each [clip_dim]) for `denormalize`."""
        dim = self.config.clip_dim
        mean, std = mean.reshape(-1), std.reshape(-1)
        if mean.numel() != dim or std.numel() != dim:
            raise ValueError(f"CLIP stats have {mean.numel()} and {std.numel()} values; the prior needs {dim}")
        self.clip_mean = mean.to(self.clip_mean.device, torch.float32)
        self.clip_std = std.to(self.clip_std.device, torch.float32)
        return self

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """From the prior's normalized space to CLIP's image-embedding space."""
        return x.float() * self.clip_std + self.clip_mean

    def attention_mask(self, text_mask: torch.Tensor) -> torch.Tensor:
        """Causal attention that also hides padded text positions: bool [B, 1, L, L]."""
        batch, length = text_mask.shape[0], self.config.context
        keys = torch.cat([text_mask.bool(), text_mask.new_ones(batch, self.config.extra_tokens).bool()], dim=1)
        causal = torch.ones(length, length, dtype=torch.bool, device=text_mask.device).tril()
        return causal[None, None] & keys[:, None, None, :]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, text: ClipText) -> torch.Tensor:
        """The clean normalized image embedding [B, D] predicted from the noisy x [B, D]."""
        batch, dtype = x.shape[0], self.dtype
        t_emb = self.time_embed(timestep_embedding(timesteps, self.config.xf_width).to(dtype))
        sequence = torch.cat(
            [
                self.text_enc_proj(text.tokens.to(dtype)),
                self.text_emb_proj(text.pooled.to(dtype))[:, None],
                t_emb[:, None],
                self.clip_img_proj(x.to(dtype))[:, None],
                self.prd_emb.expand(batch, -1, -1),
            ],
            dim=1,
        )
        h = self.transformer(sequence + self.positional_embedding, self.attention_mask(text.mask))
        if self.final_ln is not None:
            h = self.final_ln(h)
        return self.out_proj(h[:, -1]).to(x.dtype)
