"""Animated pictures (GIF or WebP) from frames, with Pillow, written whole or not at all."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from .pngfile import ImageError, write_whole
from .vocabulary import ANIMATION_FORMATS


def animation_path(first_frame: Path, kind: str) -> Path:
    """Beside the first frame: `00000-7-a-corgi.png` -> `00000-7-a-corgi.gif`; a frame that is
    itself a .webp picture (--format webp) -> `00000-7-a-corgi-animation.webp`."""
    path = first_frame.with_suffix(f".{kind}")
    return path.with_name(f"{first_frame.stem}-animation.{kind}") if path == first_frame else path


def write_animation(frames: Sequence[Image.Image], path: str | Path, kind: str, *, frame_ms: int = 200, overwrite: bool = False) -> Path:
    """Frames in order, looping forever; every frame at the first frame's size. WebP keeps
    the frames as they are (lossless); a GIF has 256 colours a frame."""
    if kind not in ANIMATION_FORMATS:
        raise ImageError(f"unknown animation format {kind!r}; choose {' or '.join(ANIMATION_FORMATS)}")
    if not frames:
        raise ImageError("an animation needs at least one frame")
    size = frames[0].size
    sized = [frame.convert("RGB") if frame.size == size else frame.convert("RGB").resize(size, Image.Resampling.NEAREST) for frame in frames]
    options = {"lossless": True} if kind == "webp" else {"optimize": False}

    def save(file: BinaryIO) -> None:
        sized[0].save(file, format=ANIMATION_FORMATS[kind], save_all=True, append_images=sized[1:], duration=frame_ms, loop=0, **options)

    return write_whole(path, save, overwrite=overwrite)
