"""Pictures in PNG, JPEG or WebP, each carrying its record, and read back from any of them.

`encode_picture` gives a file's bytes (what the server sends as base64), `write_picture` writes
them whole or not at all (pngfile.write_whole), and `read_picture_record` reads the settings
back from any of the three formats (`glide info`, `--from`). Where each format keeps the record
is metadata.py's; a PNG is written exactly as pngfile.write_png always has, byte for byte.

    data = encode_picture(image, done.record, ImageFormat.WEBP, quality=100)   # lossless WebP
    write_picture(image, "corgi.jpg", done.record, quality=90)                 # format from the name
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from .metadata import exif_with_parameters, record_from_texts, record_json, record_xmp
from .parameters import build_parameters_text, parameter_items
from .pngfile import ImageError, png_info, read_picture_texts, write_whole
from .record import PictureRecord
from .vocabulary import DEFAULT_QUALITY, LOSSLESS_QUALITY, ImageFormat

Record = PictureRecord | Mapping[str, Any]
# Pillow's formats whose records glide reads (MPO: a JPEG with more frames, as phones write).
READABLE = ("PNG", "JPEG", "MPO", "WEBP")
# A JPEG segment holds at most 64 KiB (its length is 16 bits), EXIF's and XMP's included.
_JPEG_SEGMENT = 65533 - 64  # less the headers before the data


def output_format(chosen: str | None, out: str | Path) -> ImageFormat:
    """The format pictures are written in: the one chosen (--format), else the one an --out
    file name's suffix names (`-o corgi.jpg`; not a folder's, which render_output_path
    writes into), else PNG."""
    if chosen is not None:
        return ImageFormat(chosen)
    named = ImageFormat.of_path(out)
    return named if named is not None and not Path(out).is_dir() else ImageFormat.PNG


def check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= LOSSLESS_QUALITY:
        raise ImageError(f"quality {quality!r} is not a whole number from 0 to {LOSSLESS_QUALITY}")
    return quality


def save_picture(image: Image.Image, file: BinaryIO, meta: Record, image_format: ImageFormat = ImageFormat.PNG, quality: int = DEFAULT_QUALITY) -> None:
    """Encode `image` into `file` with its record (a picture's, or any settings by key).
    `quality` (0-100) sets JPEG's and WebP's compression; WebP at 100 is lossless, with the
    colour of transparent pixels kept too. PNG is lossless and ignores it."""
    record = meta.as_meta() if isinstance(meta, PictureRecord) else meta
    image_format = ImageFormat(image_format)
    if image_format is ImageFormat.PNG:
        image.save(file, format="PNG", pnginfo=png_info(record))  # as write_png: byte for byte the same
        return
    quality = check_quality(quality)
    exif = exif_with_parameters(build_parameters_text(record))
    xmp = record_xmp(record_json(record, ascii_only=True))
    if image_format is ImageFormat.JPEG:
        if max(len(exif), len(xmp)) > _JPEG_SEGMENT:
            raise ImageError(
                f"the picture's settings ({max(len(exif), len(xmp))} bytes) do not fit in a JPEG's metadata (64 KiB); use --format png or webp"
            )
        # JPEG has no transparency; A1111 too writes a transparent picture's colours.
        rgb = image if image.mode in ("RGB", "L") else image.convert("RGB")
        rgb.save(file, format="JPEG", quality=quality, exif=exif, xmp=xmp)
        return
    lossless = quality == LOSSLESS_QUALITY
    webp = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if "A" in image.getbands() else "RGB")
    webp.save(file, format="WEBP", quality=quality, lossless=lossless, exact=lossless, exif=exif, xmp=xmp)


def encode_picture(image: Image.Image, meta: Record, image_format: ImageFormat = ImageFormat.PNG, quality: int = DEFAULT_QUALITY) -> bytes:
    """The bytes of the picture's file in `image_format`, its record included (save_picture)."""
    buffer = io.BytesIO()
    save_picture(image, buffer, meta, image_format, quality)
    return buffer.getvalue()


def write_picture(
    image: Image.Image, path: str | Path, meta: Record, image_format: ImageFormat | None = None, quality: int = DEFAULT_QUALITY,
    *, overwrite: bool = False,
) -> Path:
    """Write `image` with its record, whole or not at all (pngfile.write_whole), in
    `image_format`: by default the one the name's suffix names, else PNG."""
    chosen = output_format(image_format, path)
    check_quality(quality)
    return write_whole(path, lambda file: save_picture(image, file, meta, chosen, quality), overwrite=overwrite)


def read_picture_record(source: str | Path | bytes) -> dict[str, Any]:
    """The settings recorded in a PNG, JPEG or WebP picture (a path, or the file's bytes): glide's
    JSON record when present, else what A1111's `parameters` text gives, else {}."""
    return record_from_texts(read_picture_texts(source, READABLE))


@dataclass(frozen=True)
class A1111Parameters:
    """A picture's `parameters` text as written (A1111's, or glide's own copy of its settings)
    and the same label by label ("Prompt", "Negative prompt", "Steps"...: parameters.parameter_items)."""

    text: str
    items: dict[str, str]


def read_a1111_parameters(source: str | Path | bytes) -> A1111Parameters | None:
    """A1111's `parameters` text of a picture (a path or the file's bytes): a PNG's text chunk,
    JPEG's or WebP's EXIF UserComment. None where the picture has none. glide's JSON record is
    not read here (read_picture_record reads it)."""
    text = read_picture_texts(source, READABLE).parameters
    return None if text is None else A1111Parameters(text, parameter_items(text))
