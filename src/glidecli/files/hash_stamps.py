"""Records of weight files already hashed. Hashing a multi-gigabyte file on every run is slow,
so a successful check leaves a small record in the cache, keyed by the file's path, size and
modification time; any change to the file forces a re-hash."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def stamped_hash(path: Path, cache: Path) -> str | None:
    """The sha256 recorded for `path` as it is now, None when none is or the file changed."""
    try:
        stamp = json.loads(_stamp_path(path, cache).read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return None
    digest = stamp.get("sha256")
    if stamp.get("size") == stat.st_size and stamp.get("mtime_ns") == stat.st_mtime_ns and isinstance(digest, str):
        return digest
    return None


def write_stamp(path: Path, sha256: str, cache: Path) -> None:
    """Records that `path`, as it is now, hashes to `sha256` (written whole, by renaming)."""
    try:
        stat = path.stat()
        stamp = _stamp_path(path, cache)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        record = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
        temporary = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, stamp)
    except OSError:
        pass  # only an optimisation: a read-only cache means hashing again next time


def _stamp_path(path: Path, cache: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache / "verified" / f"{key}.json"
