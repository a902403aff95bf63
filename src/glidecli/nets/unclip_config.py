"""Typed architecture settings for unCLIP (Karlo v1.0 alpha): the prior, the decoder and the
super-resolution U-Nets, and the OpenAI CLIP ViT-L/14 that conditions them.

The decoder and the super-resolution networks are glidecli's ADM U-Net (`UNetConfig`); the
prior and CLIP have settings of their own. Defaults are the release's full sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from .config import ClipConfig, UNetConfig


@dataclass(frozen=True)
class PriorConfig:
    """Karlo's diffusion prior: a causal transformer over [CLIP text token features, pooled
    text embedding, timestep embedding, noisy image embedding, learned query] whose last
    position predicts the clean (normalized) CLIP image embedding."""

    text_ctx: int = 77
    xf_width: int = 2048
    xf_layers: int = 20
    xf_heads: int = 32
    xf_final_ln: bool = True
    clip_dim: int = 768
    diffusion_steps: int = 1000
    noise_schedule: str = "squaredcos_cap_v2"
    # The x0 estimate is clamped to this range at every step (the reference's denoised_fn).
    clamp_x0: float = 10.0

    def __post_init__(self) -> None:
        if self.xf_width % self.xf_heads:
            raise ValueError(f"xf_width {self.xf_width} is not divisible by xf_heads {self.xf_heads}")

    @property
    def extra_tokens(self) -> int:
        return 4  # pooled text, timestep, noisy embedding, query

    @property
    def context(self) -> int:
        return self.text_ctx + self.extra_tokens


@dataclass(frozen=True)
class OpenClipConfig:
    """A CLIP ViT built by open_clip (OpenAI's ViT-L/14 by default): the text tower gives
    Karlo's text features, the image tower its image embeddings."""

    embed_dim: int = 768
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1024
    vision_layers: int = 24
    vision_head_width: int = 64
    text_ctx: int = 77
    vocab_size: int = 49408
    text_width: int = 768
    text_heads: int = 12
    text_layers: int = 12
    quick_gelu: bool = True  # OpenAI's models were trained with x * sigmoid(1.702 x)
    # CLIP's preprocessing statistics (pixels on the 0..1 scale).
    pixel_mean: tuple[float, float, float] = field(default=(0.48145466, 0.4578275, 0.40821073))
    pixel_std: tuple[float, float, float] = field(default=(0.26862954, 0.26130258, 0.27577711))


def karlo_decoder_config(**changes: Any) -> UNetConfig:
    """Karlo's 64x64 decoder: GLIDE's base U-Net at 320 channels, conditioned on a CLIP
    ViT-L/14 image embedding and CLIP's text features."""
    values: dict[str, Any] = dict(
        image_size=64,
        model_channels=320,
        out_channels=6,
        num_res_blocks=3,
        channel_mult=(1, 2, 3, 4),
        attention_resolutions=(32, 16, 8),
        num_head_channels=64,
        dropout=0.1,
        use_scale_shift_norm=True,
        resblock_updown=True,
        text_ctx=77,
        xf_width=1536,
        xf_layers=0,
        xf_final_ln=False,
        xf_padding=False,
        clip_dim=768,
        clip_tokens=4,
    )
    values.update(changes)
    return UNetConfig(**values)


def karlo_sr_config(**changes: Any) -> UNetConfig:
    """One of Karlo's two 64->256 super-resolution U-Nets: unconditional ADM super-res
    without attention or scale-shift norm, fixed (small) variance."""
    values: dict[str, Any] = dict(
        image_size=256,
        model_channels=320,
        out_channels=3,
        num_res_blocks=3,
        channel_mult=(1, 2, 3, 4),
        attention_resolutions=(),
        dropout=0.0,
        use_scale_shift_norm=False,
        resblock_updown=True,
        xf_width=0,
        xf_layers=0,
        xf_final_ln=False,
        xf_padding=False,
        super_res=True,
        middle_attention=False,
    )
    values.update(changes)
    return UNetConfig(**values)


# Every network's settings: what a manifest entry's `arch` holds (None for clip-stats, which
# has no network).
ArchConfig = UNetConfig | ClipConfig | PriorConfig | OpenClipConfig
Settings = TypeVar("Settings", UNetConfig, ClipConfig, PriorConfig, OpenClipConfig)


def settings_for(kind: str, arch: ArchConfig | None, expected: type[Settings]) -> Settings:
    """`arch` as the settings a network of `kind` takes; a TypeError when it holds others."""
    if not isinstance(arch, expected):
        raise TypeError(f"kind '{kind}' needs a {expected.__name__}")
    return arch
