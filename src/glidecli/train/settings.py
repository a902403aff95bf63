"""The settings of a training run: what shapes its optimization (Hyper, the dtypes it may
use, the learning-rate and EMA schedules), what to train (ModelSource, the size presets of
fresh networks) and how the run proceeds (RunPlan).

Both the loop (loop.py) and the batch maker (data.py) read them, so they live apart from both;
torch-free, so that `glide train`'s request (request/train.py) checks them before torch loads.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..nets.config import UNetConfig, unet_defaults
from ..nets.kinds import UNET_KINDS, ModelKind
from .vocabulary import MIXED_PRECISIONS, MixedPrecision, PresetName, SaveDtypeName


@dataclass(frozen=True)
class Hyper:
    """Settings that shape the optimization; a resumed run must keep them."""

    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema: float = 0.9999
    seed: int = 0
    warmup: int = 0
    grad_clip: float = 1.0
    caption_dropout: float = 0.2
    crop_min: float = 0.8  # random crops keep 80..100% of the picture's short side
    amp: MixedPrecision = "fp32"  # autocast dtype: fp32 (off), bf16 or fp16
    min_snr: float = 0.0  # Min-SNR-gamma weighting of the MSE (losses.py); 0: GLIDE's plain loss
    noisy_share: float = 0.0  # share of examples with t in the noisiest 15% (data.noisy_start)

    def check(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"learning rate must be a positive finite number, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight decay must be a finite number, not negative, got {self.weight_decay}")
        if not 0 <= self.seed < 2**64:  # what torch's generators take
            raise ValueError(f"seed must be in 0..2**64-1, got {self.seed}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {self.ema}")
        if not 0 <= self.caption_dropout <= 1:
            raise ValueError(f"caption dropout must be in [0, 1], got {self.caption_dropout}")
        if not 0 < self.crop_min <= 1:
            raise ValueError(f"crop minimum must be in (0, 1], got {self.crop_min}")
        if self.warmup < 0 or self.grad_clip < 0:
            raise ValueError("warm-up and gradient clipping must not be negative")
        if not 0 <= self.noisy_share <= 1:
            raise ValueError(f"noisy share must be in [0, 1], got {self.noisy_share}")
        if self.min_snr < 0:
            raise ValueError(f"min-SNR gamma must not be negative, got {self.min_snr}")
        if self.amp not in MIXED_PRECISIONS:
            raise ValueError(f"unknown mixed-precision dtype {self.amp!r}; choose fp32, bf16 or fp16")


# --- what to train and how ------------------------------------------------------------------

# Fresh networks by size. Upsamplers see 4x-smaller pictures as their low-resolution input;
# inpainting variants take the sizes of their base or upsample kind.
_TEXT_SMALL = dict(text_ctx=16, xf_width=64, xf_layers=2, xf_heads=4)
PRESETS: dict[str, dict[PresetName, dict[str, Any]]] = {
    ModelKind.BASE: {
        "micro": dict(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
                      num_head_channels=32, dropout=0.0, text_ctx=8, xf_width=32, xf_layers=1, xf_heads=2),
        "tiny": dict(image_size=32, model_channels=32, num_res_blocks=1, channel_mult=(1, 1, 2, 2), attention_resolutions=(8, 4),
                     num_head_channels=32, dropout=0.0, **_TEXT_SMALL),
        "small": dict(image_size=64, model_channels=64, num_res_blocks=2, channel_mult=(1, 2, 3, 4), attention_resolutions=(16, 8),
                      num_head_channels=32, dropout=0.1, text_ctx=32, xf_width=256, xf_layers=4, xf_heads=4),
        "full": {},  # the official GLIDE base network (64x64)
    },
    ModelKind.UPSAMPLE: {
        "micro": dict(image_size=32, model_channels=32, num_res_blocks=1, channel_mult=(1, 1, 2), attention_resolutions=(),
                      num_head_channels=32, dropout=0.0, text_ctx=8, xf_width=32, xf_layers=1, xf_heads=2),
        "tiny": dict(image_size=64, model_channels=32, num_res_blocks=1, channel_mult=(1, 1, 2, 2), attention_resolutions=(8,),
                     num_head_channels=32, dropout=0.0, **_TEXT_SMALL),
        "small": dict(image_size=128, model_channels=64, num_res_blocks=2, channel_mult=(1, 1, 2, 3, 4), attention_resolutions=(16, 8),
                      num_head_channels=32, dropout=0.1, text_ctx=32, xf_width=256, xf_layers=4, xf_heads=4),
        "full": {},  # the official GLIDE upsampler network (64 -> 256)
    },
}


@dataclass(frozen=True)
class RunPlan:
    """Settings that may change between a run and its resumption."""

    steps: int = 1000
    save_every: int = 500
    sample_every: int = 0  # 0: only at the end
    samples: bool = True  # False: no samples at all
    keep_checkpoints: int = 2
    log_every: int = 50
    grad_checkpointing: bool = False
    save_dtype: SaveDtypeName | None = None  # None: the resumed run's, else fp32


@dataclass
class ModelSource:
    """Where the starting network comes from: a manifest entry (fine-tuning) or a preset."""

    name: str  # the trained model's name (its file name and manifest entry)
    kind: str = ModelKind.BASE
    entry: str | None = None  # manifest entry to fine-tune
    preset: PresetName | None = None  # size preset of a fresh network
    arch_changes: dict[str, Any] = field(default_factory=dict)  # over the preset's (or, only "prediction", the entry's)
    tokenizer_vocab: int = 512  # vocabulary of a fresh tokenizer built from the captions
    clip: str | None = None  # unCLIP's prior and decoder: the CLIP entry they learn from
    # A LoRA run (lora_recipe.py): rank, alpha, dropout, targets; then the base model's file and sha256.
    lora: dict[str, Any] | None = None


def preset_config(kind: str, preset: str, **changes: Any) -> UNetConfig:
    if kind not in UNET_KINDS:
        raise ValueError(f"cannot train {kind!r} models; choose one of {', '.join(UNET_KINDS)}")
    sizes = PRESETS[kind.removesuffix("-inpaint")]
    if preset not in sizes:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(sizes)}")
    return dataclasses.replace(unet_defaults(kind), **{**sizes[preset], **changes})


# --- the optimization schedule ---------------------------------------------------------------


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay at `step`, ramped up early so short runs still average sensibly."""
    return min(decay, (1.0 + step) / (10.0 + step))


def learning_rate(hyper: Hyper, step: int) -> float:
    if hyper.warmup and step < hyper.warmup:
        return hyper.lr * (step + 1) / hyper.warmup
    return hyper.lr
