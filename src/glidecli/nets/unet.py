"""GLIDE's text-conditional ADM U-Net (base, upsampler and their inpainting variants).

Parameter names and shapes follow the official checkpoints exactly, so they load one-to-one.
The text is encoded once per prompt batch (`encode_text`) and the result is passed to every
`forward` call of the sampling loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig
from .layers import GroupNorm32, LayerNorm32, timestep_embedding
from .transformer import TextTransformer


class TextEmbedding(NamedTuple):
    """What the U-Net needs from a prompt batch: `pooled` [B, 4C] is added to the timestep
    embedding; `tokens` [B, ctx, width] is attended to by every attention block; `mask`
    [B, ctx] (bool, True = attend), when given, hides padding tokens (unCLIP's decoder)."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor | None = None

    def repeat(self, times: int) -> TextEmbedding:
        """Repeat each prompt `times` times along the batch (one embedding, several images)."""
        mask = None if self.mask is None else self.mask.repeat_interleave(times, dim=0)
        return TextEmbedding(
            self.pooled.repeat_interleave(times, dim=0), self.tokens.repeat_interleave(times, dim=0), mask
        )


class ResBlock(nn.Module):
    """Residual block with timestep conditioning (scale-shift norm) and optional 2x resampling."""

    def __init__(self, channels: int, emb_dim: int, out_channels: int, cfg: UNetConfig, resample: str = ""):
        super().__init__()
        self.resample = resample  # "", "up" or "down"
        self.use_scale_shift_norm = cfg.use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, cfg.norm_groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        emb_out = 2 * out_channels if cfg.use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, emb_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, cfg.norm_groups),
            nn.SiLU(),
            nn.Dropout(cfg.dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # Sampling (no autograd) reuses the fresh activation buffers in place: a few percent
        # faster on the CPU, where the upsampler's elementwise work is 13-17% of its time.
        inplace = not torch.is_grad_enabled()
        in_norm, _, in_conv = self.in_layers
        # Resampling sits between the activation and the convolution, on both paths.
        h = in_conv(self._resample(F.silu(in_norm(x), inplace=inplace)))
        x = self._resample(x)

        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        out_norm, _, out_dropout, out_conv = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = torch.addcmul(shift, out_norm(h), 1 + scale)  # norm(h) * (1 + scale) + shift
        else:
            h = out_norm(h + emb_out)
        h = out_conv(out_dropout(F.silu(h, inplace=inplace)))
        skip = self.skip_connection(x)
        return h.add_(skip) if inplace else skip + h


def pointwise(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """A 1x1 Conv1d of the checkpoint's layout applied to [B, L, C] features. A plain one is
    a linear map of the last axis (no transposes); a layer standing in for it (a LoRA
    adapter's, glidecli's or PEFT's) is called as the Conv1d it replaces, on [B, C, L]."""
    if type(layer) is nn.Conv1d:
        return F.linear(h, layer.weight[..., 0], layer.bias)
    out: torch.Tensor = layer(h.transpose(1, 2))
    return out.transpose(1, 2)


class AttentionBlock(nn.Module):
    """Self-attention over the feature map whose keys and values also include the text tokens."""

    def __init__(self, channels: int, cfg: UNetConfig):
        super().__init__()
        if cfg.num_head_channels > 0:
            if channels % cfg.num_head_channels:
                raise ValueError(f"{channels} channels are not divisible by {cfg.num_head_channels}")
            self.heads = channels // cfg.num_head_channels
        else:
            self.heads = cfg.num_heads
        self.norm = GroupNorm32(channels, cfg.norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.encoder_kv = nn.Conv1d(cfg.xf_width, 2 * channels, 1) if cfg.xf_width else None
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def _heads(self, packed: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """[B, L, heads*parts*d] -> `parts` tensors [B, heads, L, d]; the checkpoint packs each
        head's q, k, v (or k, v) channels together."""
        batch, length, channels = packed.shape
        split = packed.view(batch, length, self.heads, parts, channels // (self.heads * parts))
        return tuple(split.permute(3, 0, 2, 1, 4))

    def forward(
        self, x: torch.Tensor, text_tokens: torch.Tensor | None, text_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self._heads(pointwise(self.qkv, h), 3)
        attn_mask = None
        if self.encoder_kv is not None and text_tokens is not None:
            text_kv = pointwise(self.encoder_kv, text_tokens.to(h.dtype))
            text_k, text_v = self._heads(text_kv, 2)
            # Text tokens come first in the key sequence, as in the reference.
            k = torch.cat([text_k, k], dim=2)
            v = torch.cat([text_v, v], dim=2)
            if text_mask is not None:
                pixels = text_mask.new_ones(batch, height * width)
                attn_mask = torch.cat([text_mask.bool(), pixels], dim=1)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, heads, HW, d]
        out = out.transpose(1, 2).reshape(batch, height * width, channels)
        out = pointwise(self.proj_out, out)
        return x + out.transpose(1, 2).reshape(batch, channels, height, width)


class ConvDownsample(nn.Module):
    """Strided 3x3 convolution (ADM's resampler when resblock_updown is off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ConvUpsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Stage(nn.ModuleList):
    """One entry of the U-Net's block lists: a conv, a ResBlock, or ResBlock + attention (+ resample)."""

    def forward(
        self,
        h: torch.Tensor,
        emb: torch.Tensor,
        text_tokens: torch.Tensor | None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttentionBlock):
                h = layer(h, text_tokens, text_mask)
            else:
                h = layer(h)
        return h


class Text2ImUNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        ch = cfg.model_channels
        emb_dim = cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        self._add_text_conditioning(cfg, emb_dim)

        # Attention resolutions are feature-map sizes; the U-Net tracks its downsampling factor.
        attention_factors = {cfg.image_size // r for r in cfg.attention_resolutions}

        def stage(in_ch: int, out_ch: int, factor: int, resample: str = "") -> Stage:
            layers: list[nn.Module] = [ResBlock(in_ch, emb_dim, out_ch, cfg)]
            if factor in attention_factors:
                layers.append(AttentionBlock(out_ch, cfg))
            return Stage(layers)

        first = cfg.channel_mult[0] * ch
        skip_channels = [first]
        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(cfg.in_channels, first, 3, padding=1)])])
        factor, current = 1, first
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.input_blocks.append(stage(current, mult * ch, factor))
                current = mult * ch
                skip_channels.append(current)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Stage([self._resampler(current, "down", cfg)]))
                skip_channels.append(current)
                factor *= 2

        middle_attention = [AttentionBlock(current, cfg)] if cfg.middle_attention else []
        self.middle_block = Stage(
            [ResBlock(current, emb_dim, current, cfg), *middle_attention, ResBlock(current, emb_dim, current, cfg)]
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                block = stage(current + skip_channels.pop(), mult * ch, factor)
                current = mult * ch
                if level and i == cfg.num_res_blocks:
                    block.append(self._resampler(current, "up", cfg))
                    factor //= 2
                self.output_blocks.append(block)

        self.out = nn.Sequential(GroupNorm32(current, cfg.norm_groups), nn.SiLU(), nn.Conv2d(first, cfg.out_channels, 3, padding=1))

    def _add_text_conditioning(self, cfg: UNetConfig, emb_dim: int) -> None:
        """The layers that read the prompt: GLIDE's own text transformer, or for unCLIP's
        decoder CLIP's image embedding and text features in its place."""
        if cfg.clip_dim:
            # unCLIP's decoder: CLIP's image embedding and text features replace the text transformer.
            self.clip_emb = nn.Linear(cfg.clip_dim, emb_dim)
            self.text_seq_proj = nn.Sequential(nn.Linear(cfg.clip_dim, cfg.xf_width), LayerNorm32(cfg.xf_width))
            self.text_feat_proj = nn.Linear(cfg.clip_dim, emb_dim)
            self.clip_tok_proj = nn.Linear(cfg.clip_dim, cfg.xf_width * cfg.clip_tokens)
            # The learned "no image" embedding of the unconditional half of guidance.
            self.cf_param = nn.Parameter(torch.empty(cfg.clip_dim))
        elif cfg.xf_width:
            self.token_embedding = nn.Embedding(cfg.n_vocab, cfg.xf_width)
            self.positional_embedding = nn.Parameter(torch.empty(cfg.text_ctx, cfg.xf_width))
            self.padding_embedding = (
                nn.Parameter(torch.empty(cfg.text_ctx, cfg.xf_width)) if cfg.xf_padding else None
            )
            self.transformer = TextTransformer(cfg.xf_width, cfg.xf_layers, cfg.xf_heads)
            self.final_ln = LayerNorm32(cfg.xf_width) if cfg.xf_final_ln else None
            self.transformer_proj = nn.Linear(cfg.xf_width, emb_dim) if cfg.xf_pooled else None

    @staticmethod
    def _resampler(channels: int, direction: str, cfg: UNetConfig) -> nn.Module:
        if cfg.resblock_updown:  # GLIDE's choice
            return ResBlock(channels, cfg.time_embed_dim, channels, cfg, resample=direction)
        return ConvDownsample(channels) if direction == "down" else ConvUpsample(channels)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.time_embed.parameters()).dtype  # time_embed[0].weight's, typed

    @property
    def channels_last(self) -> bool:
        weight = next(self.input_blocks.parameters())  # input_blocks[0][0].weight, typed
        return weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    def use_channels_last(self) -> Text2ImUNet:
        """Store convolution weights channels-last (NHWC); forward then runs NHWC throughout,
        which oneDNN and cuDNN convolve faster, and which makes the attention blocks'
        [B, HW, C] views free."""
        return self.to(memory_format=torch.channels_last)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> TextEmbedding:
        """Run the text transformer once for a batch of token ids [B, ctx] and mask [B, ctx]."""
        cfg = self.config
        if not cfg.xf_width or cfg.clip_dim:
            raise ValueError("this model has no text encoder")
        x = self.token_embedding(tokens.long()) + self.positional_embedding
        if self.padding_embedding is not None:
            # Padded positions get a learned embedding instead of the pad token's.
            x = torch.where(mask[..., None], x, self.padding_embedding)
        causal = None
        if cfg.xf_causal:
            causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril()[None, None]
        x = self.transformer(x.to(self.dtype), causal)
        if self.final_ln is not None:
            x = self.final_ln(x)
        # The last position (a padding slot for any prompt shorter than the context) is pooled;
        # a model without the pooled path adds nothing to its timestep embedding.
        if self.transformer_proj is None:
            pooled = x.new_zeros(x.shape[0], cfg.time_embed_dim)
        else:
            pooled = self.transformer_proj(x[:, -1])
        return TextEmbedding(pooled=pooled, tokens=x, mask=None if cfg.xf_attend_padding else mask.bool())

    def encode_clip(
        self,
        text_pooled: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_embedding: torch.Tensor | None,
    ) -> TextEmbedding:
        """unCLIP's decoder conditioning from CLIP: the pooled text embedding [B, D], the text
        token features [B, ctx, D] with their mask [B, ctx], and the image embedding [B, D]
        (None: the learned unconditional embedding). The image embedding becomes `clip_tokens`
        attention tokens placed before the text tokens."""
        cfg = self.config
        if not cfg.clip_dim:
            raise ValueError("this model is not conditioned on CLIP embeddings")
        batch = text_pooled.shape[0]
        dtype = self.dtype
        if image_embedding is None:
            image_embedding = self.cf_param[None].expand(batch, -1)
        image_embedding = image_embedding.to(dtype)
        pooled = self.clip_emb(image_embedding) + self.text_feat_proj(text_pooled.to(dtype))
        # The checkpoint's projection is laid out [width, clip_tokens]: channel-major.
        image_tokens = self.clip_tok_proj(image_embedding).view(batch, cfg.xf_width, cfg.clip_tokens)
        tokens = torch.cat([image_tokens.transpose(1, 2), self.text_seq_proj(text_tokens.to(dtype))], dim=1)
        mask = torch.cat([text_mask.new_ones(batch, cfg.clip_tokens).bool(), text_mask.bool()], dim=1)
        return TextEmbedding(pooled=pooled, tokens=tokens, mask=mask)

    def conditioning_input(
        self,
        x: torch.Tensor,
        low_res: torch.Tensor | None = None,
        inpaint_image: torch.Tensor | None = None,
        inpaint_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Concatenate the variant's conditioning images to x_t, in the checkpoint's channel order:
        x_t, masked source image, mask (inpainting), bilinearly upsampled low-res image (upsampling)."""
        cfg = self.config
        parts = [x]
        if cfg.inpaint:
            if inpaint_image is None:
                inpaint_image = torch.zeros_like(x)
            if inpaint_mask is None:
                inpaint_mask = torch.zeros_like(x[:, :1])
            parts += [inpaint_image * inpaint_mask, inpaint_mask]
        if cfg.super_res:
            if low_res is None:
                raise ValueError("an upsampling model needs a low-resolution image (low_res)")
            parts.append(F.interpolate(low_res, x.shape[-2:], mode="bilinear", align_corners=False))
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        text: TextEmbedding | None = None,
        *,
        low_res: torch.Tensor | None = None,
        inpaint_image: torch.Tensor | None = None,
        inpaint_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict [eps, variance interpolation] for x_t [B, 3, H, W] at integer timesteps [B]."""
        if self.config.xf_width and text is None:
            raise ValueError("a text-conditional model needs a text embedding (see encode_text)")
        h = self.conditioning_input(x, low_res, inpaint_image, inpaint_mask).to(self.dtype)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(self.dtype))
        text_tokens = text_mask = None
        if text is not None:
            emb = emb + text.pooled.to(emb.dtype)
            text_tokens, text_mask = text.tokens, text.mask

        skips = []
        for block in self.input_blocks:
            h = block(h, emb, text_tokens, text_mask)
            skips.append(h)
        h = self.middle_block(h, emb, text_tokens, text_mask)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, text_tokens, text_mask)
        return self.out(h).to(x.dtype).contiguous()
