"""Typed architecture settings for GLIDE's networks.

Defaults are the official GLIDE (filtered) values; any other size is accepted so that
fine-tuned or resized checkpoints load without code changes. Settings come from the
`[models.NAME.arch]` tables of weights.toml (see `manifest.py`), or from the reference's
own option names through `UNetConfig.from_reference` / `ClipConfig.from_reference`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .kinds import UNET_KINDS, ModelKind

PredictionName = Literal["eps", "v"]  # what a U-Net's first output channels predict
PREDICTIONS: tuple[PredictionName, ...] = get_args(PredictionName)

_DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


def _check_known(cls: type, values: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} settings: {', '.join(unknown)}")


def _as_int_tuple(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        return tuple(int(v) for v in value.split(",") if v.strip())
    return tuple(int(v) for v in value)


# The noise schedules diffusion/schedule.py builds.
NOISE_SCHEDULES = ("linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class UNetConfig:
    """A text-conditional ADM U-Net with its text transformer (the base model by default)."""

    image_size: int = 64
    image_channels: int = 3
    model_channels: int = 192
    out_channels: int = 6  # eps (or v) and the learned-variance interpolation
    num_res_blocks: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # feature-map sizes, in pixels
    num_head_channels: int = 64  # -1: use num_heads instead
    num_heads: int = 1
    dropout: float = 0.1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    # Text transformer.
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    # GLIDE's: the transformer's last position, projected, is added to the timestep embedding
    # (the pooled embedding). False: no such projection; the prompt reaches the U-Net only
    # through the token sequence its attention blocks read, as in Stable Diffusion.
    xf_pooled: bool = True
    # GLIDE's text transformer attends both ways, so after its layers every position (the
    # padding included) carries the whole prompt. True: each position attends only to itself
    # and those before it, as in CLIP's text encoder, so a word's own position holds it alone.
    xf_causal: bool = False
    # GLIDE's U-Net attends to all text_ctx positions, padding included. False: the padding
    # positions are hidden from its attention (as unCLIP's decoder hides CLIP's), so it reads
    # the prompt from the words' positions alone.
    xf_attend_padding: bool = True
    n_vocab: int = 50257
    # Conditioning variants.
    super_res: bool = False
    inpaint: bool = False
    # Diffusion the network was trained with.
    diffusion_steps: int = 1000
    noise_schedule: str = "squaredcos_cap_v2"
    # What the first image_channels outputs are: "eps", the noise (GLIDE's models), or "v" =
    # sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022), which stays well
    # conditioned where the picture is almost pure noise (see losses.py).
    prediction: str = "eps"
    # unCLIP's decoder (Karlo): conditioned on a CLIP image embedding of this width (0: not),
    # projected into the time embedding and into `clip_tokens` extra attention tokens; its text
    # is CLIP's (pooled and per-token features, also of this width) instead of a transformer
    # of its own, so xf_layers is 0 and xf_width is only the attention tokens' width.
    clip_dim: int = 0
    clip_tokens: int = 4
    # ADM's middle attention block; Karlo's super-resolution U-Nets have no attention at all.
    middle_attention: bool = True
    # Groups of every GroupNorm (ADM's GroupNorm32: 32). A narrow network needs fewer: with 32
    # channels in 32 groups each channel is normalized alone over the picture, which removes
    # its mean, so an upsampler without an embedding to add it back cannot say a picture's colour.
    norm_groups: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", _as_int_tuple(self.channel_mult))
        object.__setattr__(self, "attention_resolutions", _as_int_tuple(self.attention_resolutions))
        for name in ("image_size", "image_channels", "model_channels", "out_channels", "num_res_blocks", "diffusion_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive numbers, got {list(self.channel_mult)}")
        if self.norm_groups < 1:
            raise ValueError(f"norm_groups must be at least 1, got {self.norm_groups}")
        for name in ("text_ctx", "xf_width", "xf_layers", "xf_heads", "n_vocab", "clip_dim", "clip_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"unknown noise_schedule {self.noise_schedule!r}; expected one of {', '.join(NOISE_SCHEDULES)}")
        if self.num_head_channels <= 0 and self.num_heads <= 0:
            raise ValueError("either num_head_channels or num_heads must be positive")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        if self.xf_width and self.xf_layers and self.xf_width % self.xf_heads:
            raise ValueError(f"xf_width {self.xf_width} is not divisible by xf_heads {self.xf_heads}")
        if self.clip_dim and (self.xf_layers or not self.xf_width or self.clip_tokens < 1):
            raise ValueError("a CLIP-conditioned decoder needs xf_layers = 0, xf_width > 0 and clip_tokens >= 1")

    @property
    def kind(self) -> ModelKind:
        if self.clip_dim:
            return ModelKind.UNCLIP_DECODER
        if self.super_res:
            return ModelKind.UPSAMPLE_INPAINT if self.inpaint else ModelKind.UPSAMPLE
        return ModelKind.BASE_INPAINT if self.inpaint else ModelKind.BASE

    @property
    def in_channels(self) -> int:
        """Channels of the first convolution: x_t plus the conditioning images."""
        extra = 0
        if self.inpaint:
            extra += self.image_channels + 1  # masked image and mask
        if self.super_res:
            extra += self.image_channels  # upsampled low-resolution image
        return self.image_channels + extra

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> UNetConfig:
        _check_known(cls, values, "UNet")
        return cls(**values)

    @classmethod
    def from_reference(cls, options: Mapping[str, Any]) -> UNetConfig:
        """Build from glide-text2im's option names (as in the layout files)."""
        image_size = int(options["image_size"])
        channel_mult = options.get("channel_mult", "")
        if not channel_mult:
            if image_size not in _DEFAULT_CHANNEL_MULT:
                raise ValueError(f"no default channel_mult for image size {image_size}")
            channel_mult = _DEFAULT_CHANNEL_MULT[image_size]
        return cls(
            image_size=image_size,
            model_channels=int(options["num_channels"]),
            num_res_blocks=int(options["num_res_blocks"]),
            channel_mult=_as_int_tuple(channel_mult),
            attention_resolutions=_as_int_tuple(options["attention_resolutions"]),
            num_head_channels=int(options["num_head_channels"]),
            num_heads=int(options["num_heads"]),
            dropout=float(options["dropout"]),
            use_scale_shift_norm=bool(options["use_scale_shift_norm"]),
            resblock_updown=bool(options["resblock_updown"]),
            text_ctx=int(options["text_ctx"]),
            xf_width=int(options["xf_width"]),
            xf_layers=int(options["xf_layers"]),
            xf_heads=int(options["xf_heads"]),
            xf_final_ln=bool(options["xf_final_ln"]),
            xf_padding=bool(options["xf_padding"]),
            super_res=bool(options["super_res"]),
            inpaint=bool(options["inpaint"]),
            diffusion_steps=int(options["diffusion_steps"]),
            noise_schedule=str(options["noise_schedule"]),
        )


def unet_defaults(kind: str) -> UNetConfig:
    """The official settings of each GLIDE (filtered) U-Net."""
    if kind not in UNET_KINDS:
        raise ValueError(f"unknown model kind '{kind}'; expected one of {', '.join(UNET_KINDS)}")
    upsample = kind in (ModelKind.UPSAMPLE, ModelKind.UPSAMPLE_INPAINT)
    return UNetConfig(
        image_size=256 if upsample else 64,
        num_res_blocks=2 if upsample else 3,
        channel_mult=_DEFAULT_CHANNEL_MULT[256 if upsample else 64],
        noise_schedule="linear" if upsample else "squaredcos_cap_v2",
        super_res=upsample,
        inpaint=kind in (ModelKind.BASE_INPAINT, ModelKind.UPSAMPLE_INPAINT),
    )


@dataclass(frozen=True)
class ClipConfig:
    """The noised CLIP of GLIDE: a ViT image encoder that also sees the timestep, and a
    causal text transformer, both projecting to a shared embedding space."""

    image_size: int = 64
    patch_size: int = 4
    n_timesteps: int = 1000
    image_heads: int = 12
    image_head_channels: int = 64
    image_layers: int = 12
    n_vocab: int = 65536
    text_ctx: int = 77
    text_heads: int = 8
    text_head_channels: int = 64
    text_layers: int = 12
    embed_dim: int = 512
    logit_scale: float = 100.0  # exp of the stored log scale; not part of the checkpoints
    noise_schedule: str = "squaredcos_cap_v2"
    # CLIP's pixel statistics on the 0..255 scale.
    pixel_mean: tuple[float, float, float] = field(
        default=(122.77093945, 116.74601272, 104.09373519)
    )
    pixel_std: tuple[float, float, float] = field(default=(68.50053285, 66.63215831, 70.32316309))

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def image_width(self) -> int:
        return self.image_heads * self.image_head_channels

    @property
    def text_width(self) -> int:
        return self.text_heads * self.text_head_channels

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClipConfig:
        _check_known(cls, values, "CLIP")
        values = dict(values)
        for key in ("pixel_mean", "pixel_std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    @classmethod
    def from_reference(cls, options: Mapping[str, Any]) -> ClipConfig:
        """Build from glide-text2im's clip/config.yaml names (as in the layout files)."""
        return cls(
            image_size=int(options["image_size"]),
            patch_size=int(options["patch_size"]),
            n_timesteps=int(options["n_timesteps"]),
            image_heads=int(options["n_head_image"]),
            image_head_channels=int(options["n_head_state_image"]),
            image_layers=int(options["n_xf_blocks_image"]),
            n_vocab=int(options["n_vocab"]),
            text_ctx=int(options["max_text_len"]),
            text_heads=int(options["n_head_text"]),
            text_head_channels=int(options["n_head_state_text"]),
            text_layers=int(options["n_xf_blocks_text"]),
            embed_dim=int(options["n_embd"]),
            logit_scale=float(options["logit_scale"]),
            noise_schedule=str(options["beta_schedule"]),
        )
