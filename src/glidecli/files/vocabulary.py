"""The words of pictures and files, each declared once and free of torch: how a picture is
fitted to a size, which animations are written, and the default file names."""

from __future__ import annotations

from enum import StrEnum


class FitMode(StrEnum):
    """Fitting a picture to another shape (files/images.py)."""

    CROP = "crop"  # the centre
    PAD = "pad"  # black borders, kept
    STRETCH = "stretch"


FIT_MODES = tuple(FitMode)
ANIMATION_FORMATS = {"gif": "GIF", "webp": "WEBP"}  # --animate's choices -> Pillow's format
DEFAULT_PATTERN = "{index:05d}-{seed}-{slug}.png"  # file names in --out (a command may have its own)
