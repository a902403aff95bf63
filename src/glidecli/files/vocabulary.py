"""The words of pictures and files, each declared once and free of torch: how a picture is
fitted to a size, the formats pictures and animations are written in, and the default file names."""

from __future__ import annotations

from enum import StrEnum
from pathlib import PurePath


class FitMode(StrEnum):
    """Fitting a picture to another shape (files/images.py)."""

    CROP = "crop"  # the centre
    PAD = "pad"  # black borders, kept
    STRETCH = "stretch"


FIT_MODES = tuple(FitMode)
ANIMATION_FORMATS = {"gif": "GIF", "webp": "WEBP"}  # --animate's choices -> Pillow's format
DEFAULT_PATTERN = "{index:05d}-{seed}-{slug}.png"  # file names in --out (a command may have its own)


class ImageFormat(StrEnum):
    """The file formats of the pictures glide writes (--format; OpenAI's output_format). Each
    carries the picture's record: PNG in text chunks, JPEG and WebP in EXIF and XMP
    (files/pictures.py)."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def pillow(self) -> str:
        """Pillow's name of the format (Image.format, save's `format=`)."""
        return self.value.upper()

    @property
    def suffixes(self) -> tuple[str, ...]:
        """The file name suffixes that mean this format, the one glide writes first."""
        return _SUFFIXES[self]

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    @classmethod
    def of_path(cls, path: str | PurePath) -> ImageFormat | None:
        """The format a file name's suffix names (`a.JPG` -> JPEG), None for any other."""
        suffix = PurePath(path).suffix.lower()
        return next((kind for kind in cls if suffix in kind.suffixes), None)


_SUFFIXES = {ImageFormat.PNG: (".png",), ImageFormat.JPEG: (".jpg", ".jpeg"), ImageFormat.WEBP: (".webp",)}
IMAGE_FORMATS = tuple(ImageFormat)
# --quality (OpenAI's output_compression): JPEG's and lossy WebP's quality; at the maximum WebP is
# lossless (the pixels come back exactly). PNG is always lossless and ignores it.
LOSSLESS_QUALITY = 100
DEFAULT_QUALITY = 90
