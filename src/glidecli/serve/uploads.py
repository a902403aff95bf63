"""Pictures sent to the server: base64 text (plain or a data: URL) or multipart files.

Each is capped in bytes and in pixels (a small file can claim a huge picture: a
decompression bomb), checked by content (Pillow must recognise a picture format and decode
it whole), never by the name it came with, and saved unchanged under a name the server
makes, in a folder of the job's own that goes when the job ends. The PNGs record it as
"upload:FIELD sha256:..." instead of that temporary path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Formats a picture may come in, with the suffix it is saved under.
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class UploadError(Exception):
    """A picture the server will not take; `status` is 413 (too large) or 422."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 32 * 2**20
    max_pixels: int = 4096 * 4096


@dataclass
class Uploads:
    """The pictures of one request, saved in a folder of their own."""

    folder: Path
    paths: dict[str, Path] = field(default_factory=dict)  # request field name -> saved file
    labels: dict[str, str] = field(default_factory=dict)  # str(saved file) -> what a PNG records

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def new_uploads(root: Path) -> Uploads:
    root.mkdir(parents=True, exist_ok=True)
    return Uploads(Path(tempfile.mkdtemp(prefix="job-", dir=root)))


def decode_base64(text: str, name: str, limits: UploadLimits) -> bytes:
    """The bytes of base64 text, or of a data: URL's payload."""
    if not isinstance(text, str):
        raise UploadError(f"picture {name!r} must be base64 text or a data: URL")
    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    if len(payload) > (limits.max_bytes * 4) // 3 + 4:
        raise UploadError(f"picture {name!r} is larger than the upload limit of {limits.max_bytes} bytes", 413)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(f"picture {name!r} is not valid base64") from None


def save_picture(uploads: Uploads, field_name: str, data: bytes, limits: UploadLimits) -> Path:
    """Check `data` as a picture and save it for `field_name`; UploadError otherwise."""
    label = field_name.replace("_", "-")
    if len(data) > limits.max_bytes:
        raise UploadError(f"picture {label!r} is {len(data)} bytes; the upload limit is {limits.max_bytes}", 413)
    if not data:
        raise UploadError(f"picture {label!r} is empty")
    suffix = check_picture(data, label, limits)
    digest = hashlib.sha256(data).hexdigest()
    path = uploads.folder / f"{label}-{digest[:16]}{suffix}"
    with open(path, "xb") as file:
        file.write(data)
    uploads.paths[field_name] = path
    uploads.labels[str(path)] = f"upload:{label} sha256:{digest}"
    return path


def check_picture(data: bytes, label: str, limits: UploadLimits) -> str:
    """The suffix of the picture's format, after its header's size is checked against the
    pixel cap and the whole picture decoded once."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind = image.format
                width, height = image.size
                if kind not in FORMATS:
                    raise UploadError(f"picture {label!r} is a {kind} file; send PNG, JPEG, WebP, GIF, BMP or TIFF")
                if width * height > limits.max_pixels:
                    raise UploadError(f"picture {label!r} is {width}x{height} pixels; the limit is {limits.max_pixels} pixels", 413)
                image.load()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"picture {label!r} claims more pixels than the limit of {limits.max_pixels}", 413) from None
    except UnidentifiedImageError:
        raise UploadError(f"picture {label!r} is not a picture Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UploadError(f"picture {label!r} cannot be decoded: {' '.join(str(error).split())[:200]}") from None
    return FORMATS[kind]


def hide_uploads(message: str, labels: dict[str, str]) -> str:
    """`message` with each saved upload's path replaced by what the pictures record for it
    ("upload:image sha256:..."): a client never learns the server's temporary paths."""
    for path, label in labels.items():
        message = message.replace(path, label)
    return message


def has_transparency(data: bytes) -> bool:
    """Whether a (checked) picture has an alpha channel with any pixel not fully opaque."""
    with Image.open(io.BytesIO(data)) as image:
        if "A" not in image.getbands() and "transparency" not in image.info:
            return False
        alpha = image.convert("RGBA").getchannel("A")
    extrema = alpha.getextrema()  # (lowest, highest) of the one channel
    return isinstance(extrema[0], (int, float)) and extrema[0] < 255
