"""Pictures and masks at their own full resolution, as numpy arrays (images.py fits them to
a model's square instead). Used where glide must give back every pixel it did not repaint
bit for bit: inpainting a region of a big picture, and outpainting.

Pictures are uint8 [H, W, 3] (transparent pixels on black, as images.py does); masks are
bool [H, W] with True = repaint: white (at least 50% grey) in a mask file, or less than 50%
opaque in a picture without a mask file. Failures raise `ImageError` with one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import _THRESHOLD, _alpha_channel, _open, _to_rgb, check_same_size
from .pngfile import ImageError


def load_pixels(path: str | Path) -> np.ndarray:
    """The picture at `path` as uint8 [H, W, 3], upright."""
    return np.asarray(_to_rgb(_open(path)), dtype=np.uint8).copy()


def load_repaint_mask(image: str | Path, mask: str | Path | None = None, invert: bool = False) -> np.ndarray:
    """What to repaint, bool [H, W] at the picture's size: the white part of `mask` (which
    must be the picture's size), or without one the picture's transparent pixels."""
    if mask is not None:
        check_same_size(image, mask)
        grey = np.asarray(_to_rgb(_open(mask, "mask")).convert("L"))
        repaint = grey >= _THRESHOLD
    else:
        alpha = _alpha_channel(_open(image))
        if alpha is None:
            raise ImageError(f"image {image} has no transparency to use as a mask; give a mask file")
        repaint = np.asarray(alpha) < _THRESHOLD
    return ~repaint if invert else repaint


def check_repaints_something(repaint: np.ndarray, source: str | Path) -> None:
    """Refuse a mask that selects nothing (the result would be the picture) or everything
    (nothing is left to edit; that is `glide generate`)."""
    if not repaint.any():
        raise ImageError(f"the mask of {source} selects nothing to repaint")
    if repaint.all():
        raise ImageError(f"the mask of {source} selects the whole picture; nothing would be kept (use glide generate)")
