"""img2img (SDEdit): start a render from a picture instead of pure noise.

The picture, fitted to a stage's size, is diffused to the timestep at fraction `strength`
of that stage's sampler grid and sampled from there with the usual guidance
(diffusion/partial.py). Low strengths keep the picture's layout and colours, high ones
keep less and follow the prompt more; strength 1 is plain generation. Every bit of noise
comes from the image's own seed (the first draw of its generator, as in plain generation,
is the noise the picture is diffused with), so a rerun gives the same picture.

Stages: with `strength` the base model starts from the picture at the base size and the
upsampler then runs as usual; with `upsample_strength` the upsampler starts from the picture
at its own size. `upsample_strength` alone skips the base model: the picture, fitted to
the base size and rounded to 8 bits, is the upsampler's low-resolution input, so the
upsampler alone re-noises and redraws a picture that is already at its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..diffusion.partial import check_strength
from ..files.images import load_image


@dataclass(frozen=True)
class InitImage:
    """The picture to start from and how much of it to redraw at each stage (None: the
    stage runs as usual; base strength None means the base model does not run)."""

    image: Path
    strength: float | None = None
    upsample_strength: float | None = None
    fit: str = "crop"

    def __post_init__(self) -> None:
        if self.strength is None and self.upsample_strength is None:
            raise ValueError("an init image needs a strength (0 < S <= 1) for the base model, the upsampler or both")
        if self.strength is not None:
            check_strength(self.strength, "strength")
        if self.upsample_strength is not None:
            check_strength(self.upsample_strength, "upsample strength")

    @property
    def skips_base(self) -> bool:
        return self.strength is None

    def picture(self, size: tuple[int, int]) -> torch.Tensor:
        """The picture fitted to (height, width): [1, 3, height, width] in [-1, 1]."""
        height, width = size
        return load_image(self.image, (width, height), self.fit)

    def meta(self) -> dict[str, Any]:
        """What a PNG records so that `glide info` shows how to redo the picture."""
        record: dict[str, Any] = {"init_image": str(self.image), "init_fit": self.fit}
        if self.strength is not None:
            record["strength"] = self.strength
        if self.upsample_strength is not None:
            record["upsample_strength"] = self.upsample_strength
        return record
