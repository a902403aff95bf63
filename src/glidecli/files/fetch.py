"""Getting weight files onto the local disk, checking them, and turning pickles into
safetensors (the downloading itself is in download.py, the conversion in convert.py).

Where files live:
- hub sources: the Hugging Face cache (HF_HOME / HF_HUB_CACHE), managed by huggingface_hub
  and never modified here;
- url sources: `cache_dir()/downloads/<stem>-<hash of the URL>/<file name>`;
- local sources: where the manifest says.
A `.pt` file is converted once to `.safetensors`: next to its download for url sources,
else under `cache_dir()/converted/`. The converted file records the source's size,
modification time and sha256 in its safetensors metadata, so it is reused only while it
still matches its source.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .convert import convert_pt_to_safetensors
from .download import download_file, download_lock, silent_tqdm
from .fetch_diffusers import cached_diffusers, fetch_diffusers
from .file_facts import safetensors_metadata, sha256_file
from .hash_stamps import stamped_hash, write_stamp
from .lora_names import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from .manifest import PEFT_FORMAT, Entry, HubSource, LocalSource, ModelEntry, UrlSource
from .weights_error import WeightsError, first_line

_TRUE = {"1", "true", "yes", "on"}
# Keys this module writes into the metadata of converted files.
_META_SHA256 = "glidecli.source_sha256"
_META_SIZE = "glidecli.source_size"
_META_MTIME = "glidecli.source_mtime_ns"
_META_PATH = "glidecli.source_path"


def cache_dir() -> Path:
    """Where url downloads and converted files go: $GLIDE_CACHE, else $HF_HOME/glidecli."""
    explicit = os.environ.get("GLIDE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if not hf_home:
        # huggingface_hub's own default, so both caches sit side by side.
        xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
        hf_home = os.path.join(xdg, "huggingface")
    return Path(hf_home).expanduser() / "glidecli"


def fetch_entry(
    entry: Entry, *, offline: bool | None = None, progress: bool = True, force: bool = False
) -> Path:
    """A local path for `entry`: a .safetensors file for a model, the file itself for a
    tokenizer. Downloads, checks and converts as needed; `offline=None` follows
    $HF_HUB_OFFLINE; `force` downloads and converts again even if files are present."""
    if offline is None:
        offline = _env_flag("HF_HUB_OFFLINE")
    show_progress = progress and not _env_flag("HF_HUB_DISABLE_PROGRESS_BARS")
    if isinstance(entry, ModelEntry) and entry.format == "diffusers":
        return fetch_diffusers(entry, offline=offline, progress=show_progress, force=force, cache=cache_dir())
    if isinstance(entry, ModelEntry) and entry.format == PEFT_FORMAT:
        return _adapter_folder(entry, offline=offline, progress=show_progress, force=force)
    source = entry.source
    if isinstance(entry, ModelEntry) and entry.format == "pt" and not force and not isinstance(source, HubSource):
        # The converted file answers without touching the source or the network. Hub files
        # still go through hf_hub_download, which notices when a revision has moved.
        ready = _up_to_date_conversion(entry)
        if ready is not None:
            return ready
    if isinstance(source, LocalSource):
        original = _local_file(entry, source)
        fresh_hash = None
    elif isinstance(source, HubSource):
        original = _hub_file(entry, source, offline=offline, progress=show_progress, force=force)
        fresh_hash = None
    else:
        original, fresh_hash = _url_file(entry, source, offline=offline, progress=show_progress, force=force)
    if entry.sha256 is not None:
        _check_hash(entry, original, fresh_hash or stamped_hash(original, cache_dir()) or sha256_file(original))
        write_stamp(original, entry.sha256, cache_dir())
    if not isinstance(entry, ModelEntry) or entry.format == "safetensors":
        return original
    converted = _converted_path(entry, original)
    if not force and _matches_source(converted, original, entry.sha256):
        return converted
    source_hash = entry.sha256 or fresh_hash or stamped_hash(original, cache_dir())
    if source_hash is None:
        source_hash = sha256_file(original)
        write_stamp(original, source_hash, cache_dir())
    if show_progress:
        _status(f"Converting {original.name} to safetensors (once) ...")
    stat = original.stat()
    convert_pt_to_safetensors(
        original,
        converted,
        metadata={
            _META_SHA256: source_hash,
            _META_SIZE: str(stat.st_size),
            _META_MTIME: str(stat.st_mtime_ns),
            _META_PATH: str(original),
        },
    )
    return converted


def verify_file(entry: Entry, path: str | Path | None = None) -> str:
    """Hash the file as distributed and check it against the entry's sha256 (if any).

    `path` defaults to the cached source file. A file converted by `fetch_entry` stands
    for its source: the .pt it was made from is hashed instead. Returns the hash."""
    if isinstance(entry, ModelEntry) and entry.format == "diffusers":
        raise WeightsError(
            f"{_label(entry)}: a diffusers folder has no single file to hash; huggingface_hub checks each"
            " file's hash when it downloads it, and `revision` pins them"
        )
    if path is None:
        found = cached_source(entry)
        if found is None:
            raise WeightsError(f"{_label(entry)}: not downloaded yet; run `glide weights download {entry.name}`")
        path = found
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if os.path.lexists(path) else "does not exist"
        raise WeightsError(f"{_label(entry)}: {path} {what}")
    recorded = _conversion_metadata(path)
    if recorded is not None and _META_PATH in recorded and isinstance(entry, ModelEntry) and entry.format == "pt":
        path = Path(recorded[_META_PATH])
        if not path.is_file():
            raise WeightsError(
                f"{_label(entry)}: {path}, the file that was converted, is gone, so its hash cannot be"
                f" checked; run `glide weights download {entry.name}` to fetch it again"
            )
    actual = sha256_file(path)
    _check_hash(entry, path, actual)
    write_stamp(path, actual, cache_dir())
    return actual


def cached_path(entry: Entry) -> Path | None:
    """Where the entry already is on disk, without any network access: the converted
    .safetensors when it is up to date, else the source file, else None."""
    if isinstance(entry, ModelEntry) and entry.format == "diffusers":
        return cached_diffusers(entry, cache_dir())
    if isinstance(entry, ModelEntry) and entry.format == "pt":
        ready = _up_to_date_conversion(entry)
        if ready is not None:
            return ready
    return cached_source(entry)


def cached_source(entry: Entry) -> Path | None:
    """The file as distributed (.pt or .safetensors), if it is on disk (None for a diffusers
    folder, which is many files; a LoRA adapter's safetensors file)."""
    if isinstance(entry, ModelEntry) and entry.format == "diffusers":
        return None
    source = entry.source
    if isinstance(source, LocalSource):
        if isinstance(entry, ModelEntry) and entry.format == PEFT_FORMAT and source.path.is_dir():
            weights = source.path / ADAPTER_WEIGHTS
            return weights if weights.is_file() else None
        return source.path if source.path.is_file() else None
    if isinstance(source, UrlSource):
        path = _download_path(source)
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source.repo, source.file, revision=source.revision)
    return Path(found) if isinstance(found, str) else None


def recorded_sha256(path: str | Path) -> str | None:
    """The sha256 of the file as distributed, when known without hashing: what a converted
    file recorded about its source, or a still-valid record of an earlier check."""
    path = Path(path)
    recorded = _conversion_metadata(path)
    if recorded is not None and _META_SHA256 in recorded:
        return recorded[_META_SHA256]
    return stamped_hash(path, cache_dir())


def _adapter_folder(entry: ModelEntry, *, offline: bool, progress: bool, force: bool) -> Path:
    """The local folder of a LoRA adapter (adapter_config.json + adapter_model.safetensors):
    a local one as it is, a hub repository's two files downloaded into one snapshot."""
    source = entry.source
    if isinstance(source, LocalSource):
        if not source.path.exists():
            raise WeightsError(f"{_label(entry)}: {source.path} does not exist; fix its `path` in {_manifest_name(entry)}")
        folder = source.path if source.path.is_dir() else source.path.parent
        weights = folder / ADAPTER_WEIGHTS
    elif isinstance(source, HubSource):
        config = HubSource(source.repo, ADAPTER_CONFIG, source.revision)
        _hub_file(entry, config, offline=offline, progress=progress, force=force)
        weights = _hub_file(entry, source, offline=offline, progress=progress, force=force)
        folder = weights.parent
    else:
        raise WeightsError(f"{_label(entry)}: a lora adapter comes from a local path or a hub repository")
    if entry.sha256 is not None and weights.is_file():
        _check_hash(entry, weights, stamped_hash(weights, cache_dir()) or sha256_file(weights))
        write_stamp(weights, entry.sha256, cache_dir())
    return folder


# --- sources -----------------------------------------------------------------------------


def _local_file(entry: Entry, source: LocalSource) -> Path:
    path = source.path
    if not path.is_file():
        what = "is not a regular file" if os.path.lexists(path) else "does not exist"
        raise WeightsError(f"{_label(entry)}: {path} {what}; fix its `path` in {_manifest_name(entry)}")
    return path


def _hub_file(entry: Entry, source: HubSource, *, offline: bool, progress: bool, force: bool) -> Path:
    import inspect

    import huggingface_hub
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    options: dict[str, Any] = {"revision": source.revision, "local_files_only": offline, "force_download": force}
    if not progress and "tqdm_class" in inspect.signature(huggingface_hub.hf_hub_download).parameters:
        options["tqdm_class"] = silent_tqdm()
    try:
        return Path(huggingface_hub.hf_hub_download(source.repo, source.file, **options))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        if offline or isinstance(exc, OfflineModeIsEnabled):
            raise WeightsError(
                f"{_label(entry)}: {source.file} from {source.repo} is not in the Hugging Face cache"
                f" and offline mode is on; {_offline_fix(entry)}"
            ) from None
        raise WeightsError(
            f"{_label(entry)}: cannot download {source} and it is not in the Hugging Face cache"
            f" ({first_line(exc)}); check the connection, or {_offline_fix(entry)}"
        ) from None
    except HfHubHTTPError as exc:
        raise WeightsError(f"{_label(entry)}: cannot download {source}: {first_line(exc)}") from None


def _url_file(entry: Entry, source: UrlSource, *, offline: bool, progress: bool, force: bool) -> tuple[Path, str | None]:
    """The downloaded file, and its sha256 when this call downloaded it."""
    dest = _download_path(source)
    part = dest.with_name(dest.name + ".part")
    if force:
        for stale in (dest, part):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    if dest.is_file():
        return dest, None
    is_file_url = urlparse(source.url).scheme == "file"
    if offline and not is_file_url:
        raise WeightsError(f"{_label(entry)}: {dest} is not downloaded and offline mode is on; {_offline_fix(entry)}")
    with download_lock(dest):  # the ranks of a torchrun, or a job array's tasks, share the cache
        if dest.is_file():  # another process finished it while this one waited
            return dest, None
        return _url_download(entry, source, dest, part, progress)


def _url_download(entry: Entry, source: UrlSource, dest: Path, part: Path, progress: bool) -> tuple[Path, str | None]:
    try:
        digest = download_file(source.url, part, label=entry.name, progress=progress)
    except WeightsError as exc:
        raise WeightsError(f"{_label(entry)}: {exc}") from None
    if entry.sha256 is not None and digest != entry.sha256:
        part.unlink()  # a retry should start clean, not resume a bad file
        raise WeightsError(
            f"{_label(entry)}: download of {source.url} has sha256 {digest}, expected {entry.sha256};"
            f" the file at the url differs from the manifest: fix `url` or `sha256` in {_manifest_name(entry)}"
        )
    os.replace(part, dest)
    return dest, digest


# --- cache layout ------------------------------------------------------------------------


def _download_path(source: UrlSource) -> Path:
    name = Path(unquote(urlparse(source.url).path)).name or "download"
    key = hashlib.sha256(source.url.encode()).hexdigest()[:12]
    return cache_dir() / "downloads" / f"{Path(name).stem}-{key}" / name


def _converted_path(entry: ModelEntry, original: Path) -> Path:
    name = Path(original.name).with_suffix(".safetensors").name
    if isinstance(entry.source, UrlSource):
        return original.with_name(name)
    if isinstance(entry.source, HubSource):
        identity = f"hub:{entry.source.repo}:{entry.source.revision or 'main'}:{entry.source.file}"
    else:
        identity = f"path:{entry.source.path}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return cache_dir() / "converted" / f"{Path(name).stem}-{key}" / name


def _up_to_date_conversion(entry: ModelEntry) -> Path | None:
    original = cached_source(entry)
    if original is None:
        return None
    converted = _converted_path(entry, original)
    return converted if _matches_source(converted, original, entry.sha256) else None


def _matches_source(converted: Path, original: Path, sha256: str | None) -> bool:
    """Whether `converted` was made from `original` as it is now (and from the right bytes)."""
    recorded = _conversion_metadata(converted)
    if recorded is None:
        return False
    try:
        stat = original.stat()
    except OSError:
        return False
    return (
        recorded.get(_META_SIZE) == str(stat.st_size)
        and recorded.get(_META_MTIME) == str(stat.st_mtime_ns)
        and (sha256 is None or recorded.get(_META_SHA256) == sha256)
    )


def _conversion_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a safetensors file written by this module, read from its header only."""
    metadata = safetensors_metadata(path)
    return metadata if metadata is not None and _META_SHA256 in metadata else None


# --- checks and messages -----------------------------------------------------------------


def _check_hash(entry: Entry, path: Path, actual: str) -> None:
    if entry.sha256 is None or actual == entry.sha256:
        return
    if isinstance(entry.source, LocalSource):
        fix = f"replace the file or fix `sha256` in {_manifest_name(entry)}"
    elif isinstance(entry.source, HubSource):
        # Deleting the snapshot link alone would leave the bad blob for reuse.
        fix = (
            f"fetch it again with `hf download {entry.source.repo} {entry.source.file} --force-download`"
            f" or fix `sha256` in {_manifest_name(entry)}"
        )
    else:
        fix = f"delete it and run `glide weights download {entry.name}`"
    raise WeightsError(f"{_label(entry)}: {path} has sha256 {actual}, expected {entry.sha256}; {fix}")


def _offline_fix(entry: Entry) -> str:
    return (
        f"run `glide weights download {entry.name}` on a connected machine and copy the cache,"
        f" or point it at a local file with `path = ...` in a manifest ($GLIDE_WEIGHTS)"
    )


def _label(entry: Entry) -> str:
    return f"{'model' if isinstance(entry, ModelEntry) else 'tokenizer'} {entry.name}"


def _manifest_name(entry: Entry) -> str:
    return str(entry.manifest_path) if entry.manifest_path else "the manifest"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _status(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message, highlight=False, markup=False)
