"""GLIDE's noised CLIP: a ViT image encoder that also sees the diffusion timestep, and a causal
text transformer, both projecting to a shared, normalized embedding space.

Parameter names follow the official `clip_image_enc` / `clip_text_enc` checkpoints
(`blocks.input`, `blocks.block_N.f_attn`, `blocks.output`, with `w`/`b` and `g`/`b` names).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ClipConfig


class Affine(nn.Module):
    """A linear layer stored as `w` [out, in] and optional `b`."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in))
        self.b = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)


class ClipLayerNorm(nn.Module):
    """LayerNorm stored as `g`/`b`, computed in float32 (and returning float32, as the reference)."""

    keep_fp32 = True

    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(width))
        self.b = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.g.shape, self.g.float(), self.b.float(), self.eps)


class AttentionResblock(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.ln = ClipLayerNorm(width)
        self.f_q = Affine(width, width)
        self.f_k = Affine(width, width, bias=False)
        self.f_v = Affine(width, width)
        self.f_c = Affine(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        h = self.ln(x).to(self.f_q.w.dtype)

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split_heads(self.f_q(h)), split_heads(self.f_k(h)), split_heads(self.f_v(h)), is_causal=self.causal
        )
        return x + self.f_c(out.transpose(1, 2).reshape(batch, length, width))


class MlpResblock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ln = ClipLayerNorm(width)
        self.f_1 = Affine(width, 4 * width)
        self.f_2 = Affine(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x).to(self.f_1.w.dtype)
        return x + self.f_2(F.gelu(self.f_1(h)))


class TransformerBlock(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.f_attn = AttentionResblock(width, heads, causal)
        self.f_mlp = MlpResblock(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f_mlp(self.f_attn(x))


class ImageInput(nn.Module):
    """Patchify, prepend a timestep token (the noised CLIP's class token), add positions, norm."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        width = cfg.image_width
        self.config = cfg
        self.w_t = nn.Parameter(torch.empty(cfg.n_timesteps, width))
        self.patch_proj = nn.Parameter(torch.empty(width, 3, cfg.patch_size, cfg.patch_size))
        self.w_pos = nn.Parameter(torch.empty(1 + cfg.num_patches, width))
        self.ln = ClipLayerNorm(width)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        # The diffusion's [-1, 1] pixels back to CLIP's 0..255 scale, then CLIP's normalization.
        mean = torch.tensor(cfg.pixel_mean, device=x.device, dtype=torch.float32)[:, None, None]
        std = torch.tensor(cfg.pixel_std, device=x.device, dtype=torch.float32)[:, None, None]
        pixels = ((x.float() + 1) * 127.5 - mean) / std
        patches = F.conv2d(pixels.to(self.patch_proj.dtype), self.patch_proj, stride=cfg.patch_size)
        patches = patches.flatten(2).transpose(1, 2)  # [B, num_patches, width]
        time_token = self.w_t[timesteps.long()][:, None]
        return self.ln(torch.cat([time_token, patches], dim=1) + self.w_pos)


class TextInput(nn.Module):
    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.w_voc = nn.Parameter(torch.empty(cfg.n_vocab, cfg.text_width))
        self.w_pos = nn.Parameter(torch.empty(cfg.text_ctx, cfg.text_width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens.long(), self.w_voc) + self.w_pos


class Projection(nn.Module):
    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        self.ln = ClipLayerNorm(width)
        self.f = Affine(width, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(self.ln(x).to(self.f.w.dtype))


def _blocks(input_layer: nn.Module, width: int, heads: int, layers: int, causal: bool, embed_dim: int) -> nn.ModuleDict:
    modules: dict[str, nn.Module] = {"input": input_layer}
    for i in range(layers):
        modules[f"block_{i}"] = TransformerBlock(width, heads, causal)
    modules["output"] = Projection(width, embed_dim)
    return nn.ModuleDict(modules)


class ClipImageEncoder(nn.Module):
    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.config = cfg
        self.blocks = _blocks(
            ImageInput(cfg), cfg.image_width, cfg.image_heads, cfg.image_layers, False, cfg.embed_dim
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Unnormalized embeddings [B, embed_dim] of noisy images x_t in [-1, 1] at timesteps [B]."""
        size = self.config.image_size
        if x.shape[1:] != (3, size, size):
            raise ValueError(f"expected images of shape [B, 3, {size}, {size}], got {list(x.shape)}")
        blocks = list(self.blocks.values())
        h = blocks[0](x, timesteps)
        for block in blocks[1:-1]:
            h = block(h)
        return blocks[-1](h[:, 0])  # the timestep token's output


class ClipTextEncoder(nn.Module):
    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.config = cfg
        self.blocks = _blocks(TextInput(cfg), cfg.text_width, cfg.text_heads, cfg.text_layers, True, cfg.embed_dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unnormalized embeddings [B, embed_dim] of token ids [B, ctx] with lengths [B] (incl. start/end)."""
        blocks = list(self.blocks.values())
        h = blocks[0](tokens)
        for block in blocks[1:-1]:
            h = block(h)
        # Causal attention: the end token (at length - 1) has seen the whole prompt.
        last = h[torch.arange(h.shape[0], device=h.device), lengths.long() - 1]
        return blocks[-1](last)


def normalize(z: torch.Tensor) -> torch.Tensor:
    return z / (torch.linalg.vector_norm(z, dim=-1, keepdim=True) + 1e-12)


class NoisedClip(nn.Module):
    """Both encoders and the logit scale; embeddings are L2-normalized."""

    def __init__(self, image_encoder: ClipImageEncoder, text_encoder: ClipTextEncoder, logit_scale: float | None = None):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        scale = image_encoder.config.logit_scale if logit_scale is None else logit_scale
        self.log_logit_scale = math.log(scale)

    @property
    def logit_scale(self) -> float:
        return math.exp(self.log_logit_scale)

    def image_embeddings(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return normalize(self.image_encoder(x, timesteps))

    def text_embeddings(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return normalize(self.text_encoder(tokens, lengths))

    def similarity_grad(self, x: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Gradient w.r.t. x_t of exp(logit_scale) * <image embedding, text embedding>, summed over the batch."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            similarity = (self.image_embeddings(x, timesteps) * text_embeddings).sum()
            loss = similarity * self.logit_scale
            (grad,) = torch.autograd.grad(loss, x)
        return grad.detach()
