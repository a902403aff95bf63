"""The records of weight files already hashed: reused while the file is unchanged, ignored once
it changes, and never a failure when the cache cannot be written."""

from __future__ import annotations

import hashlib
import os

from glidecli.files.hash_stamps import stamped_hash, write_stamp


def test_a_stamp_holds_while_the_file_is_unchanged(tmp_path):
    weights, cache = tmp_path / "model.safetensors", tmp_path / "cache"
    weights.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert stamped_hash(weights, cache) is None
    write_stamp(weights, digest, cache)
    assert stamped_hash(weights, cache) == digest
    assert [p.suffix for p in (cache / "verified").iterdir()] == [".json"]  # no temporary left behind
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched: hash again
    assert stamped_hash(weights, cache) is None
    write_stamp(weights, digest, cache)
    weights.write_bytes(b"other weights")  # another size
    assert stamped_hash(weights, cache) is None


def test_an_unwritable_cache_only_means_hashing_again(tmp_path):
    weights, cache = tmp_path / "model.safetensors", tmp_path / "cache"
    weights.write_bytes(b"weights")
    cache.write_text("a file where the cache folder should be")
    write_stamp(weights, "0" * 64, cache)
    assert stamped_hash(weights, cache) is None
