"""OpenAI's CLIP ViT (ViT-L/14 for Karlo), built by open_clip, and the two things unCLIP asks
of it: text features as Karlo's reference computes them, and image embeddings.

* Text: every position's final-LayerNorm feature (the decoder attends to them, the prior reads
  them) and the end-of-text feature through the text projection (the pooled embedding).
  Neither is L2-normalized.
* Images: the visual tower's projected embedding (not normalized) of a picture resized to
  the tower's square size with bicubic filtering, then normalized with CLIP's statistics.
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
from PIL import Image
from torch import nn

from .prior import ClipText
from .tokenizer import ClipTokenizer
from .unclip_config import OpenClipConfig


class OpenClipParts(Protocol):
    """What glidecli reads and sets of open_clip's CLIP model, which ships no types."""

    config: OpenClipConfig
    token_embedding: nn.Embedding
    positional_embedding: torch.Tensor
    transformer: nn.Module
    attn_mask: torch.Tensor
    ln_final: nn.Module
    text_projection: torch.Tensor
    visual: nn.Module


def open_clip_parts(model: nn.Module) -> OpenClipParts:
    """A network built by `build_clip_vit`, typed by the parts glidecli uses."""
    return cast(OpenClipParts, model)


def build_clip_vit(cfg: OpenClipConfig) -> nn.Module:
    """open_clip's CLIP model for `cfg`, weights uninitialized (on the default device)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=cfg.vision_layers,
        width=cfg.vision_width,
        head_width=cfg.vision_head_width,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
    )
    text = CLIPTextCfg(
        context_length=cfg.text_ctx,
        vocab_size=cfg.vocab_size,
        width=cfg.text_width,
        heads=cfg.text_heads,
        layers=cfg.text_layers,
    )
    model = CLIP(cfg.embed_dim, vision, text, quick_gelu=cfg.quick_gelu)
    model.config = cfg
    return model


def clip_text(model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> ClipText:
    """Karlo's text features for token ids [B, ctx] (start, BPE ids, end, zeros) and their mask."""
    clip = open_clip_parts(model)
    dtype = clip.token_embedding.weight.dtype
    x = clip.token_embedding(tokens.long()).to(dtype) + clip.positional_embedding.to(dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    # The end token has the largest id, so argmax finds it (as CLIP does).
    end = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    pooled = end @ clip.text_projection
    return ClipText(pooled=pooled.float(), tokens=x.float(), mask=mask.bool())


def encode_prompts(model: nn.Module, tokenizer: ClipTokenizer, prompts: list[str]) -> ClipText:
    """Tokenize and encode a batch of prompts."""
    batch = tokenizer.batch(prompts)
    positions = torch.arange(batch.tokens.shape[1])
    mask = positions[None] < batch.lengths[:, None]
    device = open_clip_parts(model).token_embedding.weight.device
    return clip_text(model, batch.tokens.to(device), mask.to(device))


def preprocess_image(image: Image.Image, cfg: OpenClipConfig) -> torch.Tensor:
    """A picture as the image tower takes it: [3, S, S], resized (not cropped) to S x S with
    bicubic filtering as Karlo's reference does, then normalized with CLIP's statistics."""
    size = cfg.image_size
    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(size, size, 3)
    pixels = pixels.permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(cfg.pixel_mean)[:, None, None]
    std = torch.tensor(cfg.pixel_std)[:, None, None]
    return (pixels - mean) / std


def image_embedding(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The CLIP image embedding [B, D] (not normalized) of preprocessed pixels [B, 3, S, S]."""
    visual = open_clip_parts(model).visual
    dtype = next(visual.parameters()).dtype
    return visual(pixels.to(dtype)).float()
