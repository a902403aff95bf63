"""Pictures a tool call names: a path the server may read (under --input-dir, never
elsewhere, symbolic links resolved first) or the picture's bytes in base64.

A string is read as base64 when it is a data: URL, when it is longer than any path can be,
or when it decodes to bytes that begin like a picture file (PNG, JPEG, GIF, WebP, BMP,
TIFF); anything else is a path. The bytes then go through the server's upload checks
(serve/uploads.py: size and pixel caps, decoded whole) like any upload.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from ..serve.uploads import UploadLimits

LONGEST_PATH = 4096  # PATH_MAX on Linux: a longer string is no path
PICTURE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


class PictureError(Exception):
    """A picture argument the server will not read; its text is the one line the client sees."""


def picture_argument(value: object, label: str, input_dir: Path | None, limits: UploadLimits) -> bytes | str:
    """The picture `value` names: its bytes (read from a path under `input_dir`) or its base64
    text, which the server's upload code decodes and checks."""
    if not isinstance(value, str) or not value.strip():
        raise PictureError(f"picture {label!r} must be a path under --input-dir or base64 text")
    if value.startswith("data:") or len(value) > LONGEST_PATH or _looks_like_base64_picture(value):
        return value
    return read_allowed(value, label, input_dir, limits)


def read_allowed(text: str, label: str, input_dir: Path | None, limits: UploadLimits) -> bytes:
    """The bytes of a file under `input_dir`; PictureError for anything outside it (after
    resolving symbolic links and '..'), for a missing file, and when no `input_dir` is set."""
    if input_dir is None:
        raise PictureError(f"picture {label!r} is a path, and this server reads no files: start it with --input-dir DIR, or send the picture as base64")
    root = input_dir.resolve()
    candidate = Path(text).expanduser()
    path = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not path.is_relative_to(root):
        raise PictureError(f"picture {label!r}: {text} is outside --input-dir ({root})")
    if not path.is_file():
        raise PictureError(f"picture {label!r}: no file {text} under --input-dir ({root})")
    if path.stat().st_size > limits.max_bytes:
        raise PictureError(f"picture {label!r} is {path.stat().st_size} bytes; the upload limit is {limits.max_bytes}")
    return path.read_bytes()


def _looks_like_base64_picture(text: str) -> bool:
    head = "".join(text[:64].split())
    head = head[: len(head) // 4 * 4]
    try:
        start = base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return False
    return start.startswith(PICTURE_SIGNATURES)
