"""The settings that shape a training run's optimization, and the dtypes it may use.

Both the loop (loop.py) and the batch maker (data.py) read them, so they live apart from both.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    amp: str = "fp32"  # autocast dtype: fp32 (off), bf16 or fp16
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
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"unknown mixed-precision dtype {self.amp!r}; choose fp32, bf16 or fp16")
