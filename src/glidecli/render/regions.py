"""Geometry of editing big pictures, as plain functions over numpy arrays (no models here).

Two workflows use it:
  * inpainting a region of a large picture: the square around the mask (`square_around`),
    the mask shrunk to a model's size so that even a one-pixel mask survives
    (`coverage_mask`), and the feathered paste that leaves every pixel outside the mask's
    feathered region the source's, bit for bit (`feather_weights`, `blend`);
  * outpainting: how far the canvas grows (`Extension`) and the windows, in painting order,
    that cover the new border while each sees part of what is already painted
    (`plan_windows`).

Pictures are uint8 arrays [H, W, 3]; masks are bool arrays [H, W] with True = repaint
(the user's convention). Boxes are half-open pixel rectangles and may reach outside the
picture, where `crop` fills in zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .defaults import MAX_CANVAS


@dataclass(frozen=True)
class Box:
    """Pixels [left, right) x [top, bottom)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def as_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]


# --- inpainting a region ----------------------------------------------------------------------


def mask_box(repaint: np.ndarray) -> Box | None:
    """The smallest box holding every True pixel, or None when there is none."""
    rows, cols = np.flatnonzero(repaint.any(axis=1)), np.flatnonzero(repaint.any(axis=0))
    if rows.size == 0:
        return None
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _place(centre2: int, side: int, length: int) -> int:
    """Start of a span of `side` centred at centre2 / 2, moved inside [0, length) when it
    fits there, else centred on it (sticking out on both ends)."""
    if side >= length:
        return -((side - length) // 2)
    return min(max((centre2 - side) // 2, 0), length - side)


def square_around(box: Box, margin: int, width: int, height: int, min_side: int) -> Box:
    """A square holding `box` plus `margin` pixels on every side and at least `min_side`
    wide, but no wider than the picture's longer side; inside the picture where it fits."""
    side = max(box.width, box.height) + 2 * margin
    side = min(max(side, min_side), max(width, height))
    left = _place(box.left + box.right, side, width)
    top = _place(box.top + box.bottom, side, height)
    return Box(left, top, left + side, top + side)


def crop(pixels: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """`pixels` inside `box` (zeros where the box leaves the picture) and a bool array of
    the box's pixels that lie inside the picture."""
    height, width = pixels.shape[:2]
    out = np.zeros((box.height, box.width, *pixels.shape[2:]), dtype=pixels.dtype)
    inside = np.zeros((box.height, box.width), dtype=bool)
    x0, y0 = max(box.left, 0), max(box.top, 0)
    x1, y1 = min(box.right, width), min(box.bottom, height)
    if x1 > x0 and y1 > y0:
        out[y0 - box.top : y1 - box.top, x0 - box.left : x1 - box.left] = pixels[y0:y1, x0:x1]
        inside[y0 - box.top : y1 - box.top, x0 - box.left : x1 - box.left] = True
    return out, inside


def paste(target: np.ndarray, box: Box, values: np.ndarray, where: np.ndarray) -> None:
    """Write values[where] into `target` at `box` (the part of the box inside `target`)."""
    height, width = target.shape[:2]
    x0, y0 = max(box.left, 0), max(box.top, 0)
    x1, y1 = min(box.right, width), min(box.bottom, height)
    if x1 <= x0 or y1 <= y0:
        return
    inner = (slice(y0 - box.top, y1 - box.top), slice(x0 - box.left, x1 - box.left))
    region = target[y0:y1, x0:x1]
    region[where[inner]] = values[inner][where[inner]]


def fill_unknown(pixels: np.ndarray, known: np.ndarray) -> np.ndarray:
    """`pixels` with the unknown ones set to the mean colour of the known ones, so that
    shrinking the picture (bicubic) does not darken known pixels next to the unknown."""
    if known.all() or not known.any():
        return pixels
    filled = pixels.copy()
    filled[~known] = np.rint(pixels[known].reshape(-1, pixels.shape[-1]).mean(axis=0)).astype(pixels.dtype)
    return filled


def sides(size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a size given as a square's side or as (width, height)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_picture(pixels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A uint8 picture resized to size x size (or a (width, height) size), bicubic (as glide
    fits pictures)."""
    width, height = sides(size)
    if pixels.shape[:2] == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.BICUBIC))


def coverage_mask(repaint: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """`repaint` at size x size (or a (width, height) size): a pixel is repainted when ANY
    part of its footprint is, so that a mask of a few pixels still reaches the model and the
    model repaints at least everything the user masked."""
    width, height = sides(size)
    if repaint.shape == (height, width):
        return repaint.copy()
    share = Image.fromarray(repaint.astype(np.float32), "F").resize((width, height), Image.Resampling.BOX)
    return np.asarray(share) > 1e-6


def distance_to(mask: np.ndarray, limit: int) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of `mask`, exact up to
    `limit`; pixels farther away get infinity. Two passes of 2 * limit + 1 shifts: the
    nearest True pixel in each column, then the nearest such column."""
    height, width = mask.shape
    column = np.full((height, width), np.inf)
    for dy in range(-limit, limit + 1):
        shifted = np.zeros_like(mask)
        src = slice(max(dy, 0), height + min(dy, 0))
        dst = slice(max(-dy, 0), height + min(-dy, 0))
        shifted[dst] = mask[src]  # shifted[y] = mask[y + dy]
        column = np.where(shifted, np.minimum(column, abs(dy)), column)
    squared = np.full((height, width), np.inf)
    for dx in range(-limit, limit + 1):
        shifted = np.full((height, width), np.inf)
        src = slice(max(dx, 0), width + min(dx, 0))
        dst = slice(max(-dx, 0), width + min(-dx, 0))
        shifted[:, dst] = column[:, src] ** 2
        squared = np.minimum(squared, shifted + dx * dx)
    distance: np.ndarray = np.sqrt(squared)
    distance[distance > limit] = np.inf
    return distance


def feather_weights(repaint: np.ndarray, feather: int) -> np.ndarray:
    """How much of the repainted picture each pixel takes: 1 on the mask, falling linearly
    to 0 over `feather` pixels outside it (1 - d / (feather + 1) at distance d), exactly 0
    everywhere else."""
    if feather <= 0:
        return repaint.astype(np.float64)
    return np.clip(1.0 - distance_to(repaint, feather) / (feather + 1), 0.0, 1.0)


def blend(source: np.ndarray, painted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """source * (1 - w) + painted * w rounded to uint8, and the source's own bytes wherever
    w is 0 (no float round trip there)."""
    mixed = source.astype(np.float64) * (1.0 - weights[..., None]) + painted.astype(np.float64) * weights[..., None]
    mixed = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return np.where((weights > 0)[..., None], mixed, source)


# --- outpainting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extension:
    """How many pixels the canvas grows on each side."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    @classmethod
    def to_size(cls, width: int, height: int, new_width: int, new_height: int) -> Extension:
        """Grow a width x height picture to new_width x new_height, centred (an odd pixel
        goes right or down)."""
        if new_width < width or new_height < height:
            raise ValueError(f"{new_width}x{new_height} is smaller than the picture's {width}x{height}")
        grow_x, grow_y = new_width - width, new_height - height
        return cls(grow_x // 2, grow_x - grow_x // 2, grow_y // 2, grow_y - grow_y // 2)

    def canvas(self, width: int, height: int) -> tuple[int, int]:
        return self.left + width + self.right, self.top + height + self.bottom

    @property
    def empty(self) -> bool:
        return not (self.left or self.right or self.top or self.bottom)


def _clamp(start: int, window: int, length: int) -> int:
    """A window start inside [0, length) when the window fits, else the window centred."""
    if length <= window:
        return -((window - length) // 2)
    return min(max(start, 0), length - window)


def _spans(start: int, end: int, window: int, stride: int, length: int) -> list[int]:
    """Window starts covering [start, end) along an axis of `length`, `stride` apart."""
    if end - start <= window:
        return [_clamp(start - (window - (end - start)) // 2, window, length)]
    starts = list(range(start, end - window, stride)) + [end - window]
    return [_clamp(s, window, length) for s in starts]


def _rings(first_new: int, last_new: int, window: int, context: int, length: int, outward: int) -> list[int]:
    """Window starts that step outward (+1: towards higher coordinates) over the new
    pixels [first_new, last_new), each keeping `context` pixels of the previous ring."""
    step = window - context
    starts = []
    if outward > 0:
        start = first_new - context
        while True:
            starts.append(_clamp(start, window, length))
            if start + window >= last_new:
                break
            start += step
    else:
        end = last_new + context
        while True:
            starts.append(_clamp(end - window, window, length))
            if end - window <= first_new:
                break
            end -= step
    return list(dict.fromkeys(starts))  # clamping can repeat a start


def plan_windows(width: int, height: int, extension: Extension, window: int | tuple[int, int], context: int) -> list[Box]:
    """The windows (canvas coordinates, `window` pixels square, or a (width, height)
    rectangle) that outpaint a width x height picture, in painting order: the left border, the right, then the top and the
    bottom across the whole width (so the corners see the painted sides). Each side is
    painted in rings that step outward from the picture, every window keeping `context`
    pixels towards the picture (the previous ring), and along the border the windows
    overlap by `context` too. Every new pixel lies in some window, and every window
    paints some pixel no window before it painted."""
    window_w, window_h = sides(window)
    if not 0 < context < min(window_w, window_h):
        raise ValueError(f"context must be between 1 and {min(window_w, window_h) - 1} pixels, got {context}")
    canvas_w, canvas_h = extension.canvas(width, height)
    x0, y0 = extension.left, extension.top
    windows: list[Box] = []

    def add(left: int, top: int) -> None:
        box = Box(left, top, left + window_w, top + window_h)
        if box not in windows:
            windows.append(box)

    rows = _spans(y0, y0 + height, window_h, window_h - context, canvas_h)
    columns = _spans(0, canvas_w, window_w, window_w - context, canvas_w)
    # Left, right, top, bottom: rings stepping outward from the picture (over the new pixels
    # [first, last) of that side), each across the picture's rows or the whole canvas's columns.
    outward_sides = (
        (extension.left, 0, x0, -1, False),
        (extension.right, x0 + width, canvas_w, +1, False),
        (extension.top, 0, y0, -1, True),
        (extension.bottom, y0 + height, canvas_h, +1, True),
    )
    for grown, first, last, outward, vertical in outward_sides:
        if not grown:
            continue
        window, length, across = (window_h, canvas_h, columns) if vertical else (window_w, canvas_w, rows)
        for ring in _rings(first, last, window, context, length, outward):
            for place in across:
                if vertical:
                    add(place, ring)
                else:
                    add(ring, place)
    # Keep only the windows that find something left to paint, in order.
    painted = np.zeros((canvas_h, canvas_w), dtype=bool)
    painted[y0 : y0 + height, x0 : x0 + width] = True
    useful = []
    for box in windows:
        known, inside = crop(painted, box)
        new = inside & ~known
        if new.any():
            useful.append(box)
            paste(painted, box, new, new)
    return useful


__all__ = [
    "MAX_CANVAS",
    "Box",
    "Extension",
    "blend",
    "coverage_mask",
    "crop",
    "distance_to",
    "feather_weights",
    "fill_unknown",
    "mask_box",
    "paste",
    "plan_windows",
    "resize_picture",
    "sides",
    "square_around",
]
