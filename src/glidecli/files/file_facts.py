"""Facts about a file on disk that the fetching modules share: its sha256, and a safetensors
file's metadata read from its header alone."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from .download import CHUNK_BYTES


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def safetensors_metadata(path: Path) -> dict[str, str] | None:
    """A safetensors file's `__metadata__`, read from its header only; None if unreadable."""
    try:
        with open(path, "rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > 100_000_000:
                return None
            header = json.loads(handle.read(header_size))
    except (OSError, struct.error, ValueError):
        return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None
