"""Downloading a URL to a local file for fetch.py: resumable (HTTP Range, or seeking in a
file:// source), hashed while it is written, under an advisory lock shared by the processes
of a job, with a progress bar on stderr."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlparse

from .. import __version__
from .weights_error import WeightsError, first_line

CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60


@contextlib.contextmanager
def download_lock(dest: Path) -> Iterator[None]:
    """Hold an advisory lock on `dest`'s download (POSIX; elsewhere, nothing to hold). The
    lock file lives beside the download's folder, whose listing stays the files alone."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent.parent / f".{dest.parent.name}.{dest.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_file(url: str, part: Path, *, label: str, progress: bool) -> str:
    """Download `url` into `part`, resuming what is already there; returns its sha256."""
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    stream, total, resumed = _open_url(url, offset)
    digest = hashlib.sha256()
    if resumed:
        with open(part, "rb") as existing:  # hash the part we keep, so the file is read once
            while chunk := existing.read(CHUNK_BYTES):
                digest.update(chunk)
    else:
        offset = 0
    written = offset
    try:
        with stream, open(part, "ab" if resumed else "wb") as out, _progress_bar(
            label, total, offset, progress
        ) as advance:
            while chunk := stream.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                advance(len(chunk))
    except OSError as exc:  # includes socket timeouts and resets
        raise WeightsError(
            f"download of {url} stopped after {written} bytes ({first_line(exc)}); run the command again to resume"
        ) from None
    if total is not None and written != total:
        raise WeightsError(
            f"download of {url} stopped after {written} of {total} bytes; run the command again to resume"
        )
    return digest.hexdigest()


class _ByteStream(Protocol):
    """What a download reads: a local file, an HTTP response or an _EmptyStream."""

    def read(self, size: int = -1, /) -> bytes: ...

    def __enter__(self) -> object: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None, /
    ) -> bool | None: ...


def _open_url(url: str, offset: int) -> tuple[_ByteStream, int | None, bool]:
    """Open `url` from byte `offset`: (stream, total size or None, whether it resumed)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        # urllib's file handler ignores Range, so local copies resume by seeking.
        path = Path(urllib.request.url2pathname(parsed.path))
        try:
            stream = open(path, "rb")
        except OSError as exc:
            raise WeightsError(f"cannot read {url}: {exc.strerror or exc}") from None
        size = os.fstat(stream.fileno()).st_size
        resumed = 0 < offset <= size
        if resumed:
            stream.seek(offset)
        return stream, size, resumed
    headers = {"User-Agent": f"glidecli/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # The part may already hold everything; otherwise start again from zero.
            total = _content_range_total(exc.headers.get("Content-Range"))
            if total == offset:
                return _EmptyStream(), total, True
            return _open_url(url, 0)
        raise WeightsError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise WeightsError(f"cannot download {url}: {first_line(exc.reason)}") from None
    except OSError as exc:
        raise WeightsError(f"cannot download {url}: {first_line(exc)}") from None
    if offset and response.status == 206:
        total = _content_range_total(response.headers.get("Content-Range"))
        return response, total, True
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None, False


class _EmptyStream:
    def read(self, size: int = -1) -> bytes:
        return b""

    def __enter__(self) -> _EmptyStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def _content_range_total(header: str | None) -> int | None:
    # "bytes 100-199/200" or "bytes */200"; the total may be "*" (unknown).
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def _progress_bar(label: str, total: int | None, done: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(f"Downloading {label}", total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def silent_tqdm() -> type[Any]:
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):  # type: ignore[misc]  # tqdm ships no types: its classes are Any
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm
