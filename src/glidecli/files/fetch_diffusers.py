"""Fetching a model entry of `format = "diffusers"`: unCLIP (Karlo) from a diffusers pipeline
folder, on the Hugging Face hub or on a local disk, converted once to one safetensors file of
glidecli's layout in `cache_dir()/converted/`.

Hub files go through huggingface_hub's cache and are never modified; files already there are
used without any network access. Which weight file a component has is asked of the hub, not
assumed: its safetensors file, else diffusers' older `.bin` where the hub answers that there is
no safetensors file. The converted file
records the path, size and modification time of every file it was made from, and is reused
only while they all still match; it is written whole (temporary file, then rename) after every
check has passed, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from ..nets.kinds import ModelKind
from .convert import save_whole
from .diffusers_unclip import COMPONENTS, CONFIG_FILE, WEIGHT_FILES, convert_components, read_component
from .file_facts import safetensors_metadata, sha256_file
from .manifest import HubSource, LocalSource, ModelEntry
from .weights_error import WeightsError, first_line

if TYPE_CHECKING:  # torch loads with the conversion, not with this module
    import torch

_META_SOURCES = "glidecli.diffusers_sources"
_META_SHA256 = "glidecli.source_sha256"  # as fetch.py's conversions: the model's hash (recorded_sha256)
_META_COMMIT = "glidecli.hub_commit"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SNAPSHOT_RE = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]")


class _SourceRecord(TypedDict):
    """A file a converted file was made from, as its metadata records it."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


def fetch_diffusers(entry: ModelEntry, *, offline: bool, progress: bool, force: bool, cache: Path) -> Path:
    """The converted safetensors file of `entry`, fetching and converting as needed."""
    if not force:
        ready = cached_diffusers(entry, cache)
        if ready is not None:
            return ready
    files = _used(entry.kind, _source_files(entry, offline=offline, progress=progress, force=force))
    where = str(entry.source)
    components = {name: read_component(where, name, files.get) for name in COMPONENTS[entry.kind]}
    state = convert_components(entry.kind, entry.arch, _expected_shapes(entry, components), components, where)
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"Converted {entry.name} from {where} (once)", highlight=False, markup=False)
    return _write(state, _converted_path(entry, cache), _describe(files))


def cached_diffusers(entry: ModelEntry, cache: Path) -> Path | None:
    """The converted file when it is up to date with files still on disk, without network access."""
    converted = _converted_path(entry, cache)
    recorded = _metadata(converted)
    if recorded is None:
        return None
    try:
        sources = json.loads(recorded[_META_SOURCES])
    except (KeyError, ValueError):
        return None
    for record in sources.values():
        try:
            stat = Path(record["path"]).stat()
        except (OSError, KeyError, TypeError):
            return None
        if stat.st_size != record.get("size") or stat.st_mtime_ns != record.get("mtime_ns"):
            return None
        if isinstance(entry.source, LocalSource) and not Path(record["path"]).is_relative_to(entry.source.path):
            return None  # the entry now names another folder
    return converted


# --- sources ----------------------------------------------------------------------------------


def _source_files(entry: ModelEntry, *, offline: bool, progress: bool, force: bool) -> dict[str, Path]:
    """Relative path -> local file, for every file the entry's components need."""
    wanted = [f"{name}/{file}" for name in COMPONENTS[entry.kind] for file in (CONFIG_FILE, *WEIGHT_FILES)]
    source = entry.source
    if isinstance(source, LocalSource):
        folder = source.path
        if not folder.is_dir():
            what = "is a file" if folder.is_file() else "does not exist"
            raise WeightsError(f"model {entry.name}: {folder} {what}; format diffusers needs a diffusers pipeline folder")
        return {rel: folder / rel for rel in wanted if (folder / rel).is_file()}
    assert isinstance(source, HubSource)
    cached = {} if force else _from_hub_cache(source, wanted)
    complete = all(f"{name}/{CONFIG_FILE}" in cached for name in COMPONENTS[entry.kind]) and all(
        any(f"{name}/{file}" in cached for file in WEIGHT_FILES) for name in COMPONENTS[entry.kind]
    )
    if complete:
        return cached
    if offline:
        raise WeightsError(
            f"model {entry.name}: {source.repo} is not in the Hugging Face cache and offline mode is on; run"
            f" `glide weights download {entry.name}` on a connected machine and copy the cache, or point the entry"
            f" at a local diffusers folder with `path = ...`"
        )
    return _download(entry, source, progress=progress, force=force)


def _used(kind: str, files: dict[str, Path]) -> dict[str, Path]:
    """The files a conversion reads: each component's config and its first weight file."""
    used: dict[str, Path] = {}
    for name in COMPONENTS[kind]:
        config = f"{name}/{CONFIG_FILE}"
        weights = next((f"{name}/{file}" for file in WEIGHT_FILES if f"{name}/{file}" in files), None)
        used |= {rel: files[rel] for rel in (config, weights) if rel in files}
    return used


def _from_hub_cache(source: HubSource, wanted: list[str]) -> dict[str, Path]:
    from huggingface_hub import try_to_load_from_cache

    found = {}
    for rel in wanted:
        path = try_to_load_from_cache(source.repo, rel, revision=source.revision)
        if isinstance(path, str):
            found[rel] = Path(path)
    return found


def _download(entry: ModelEntry, source: HubSource, *, progress: bool, force: bool) -> dict[str, Path]:
    """Each component's config and weights from the hub: its safetensors file, or diffusers'
    older .bin where the hub says the safetensors file does not exist."""
    files = {}
    for name in COMPONENTS[entry.kind]:
        for rel in (f"{name}/{CONFIG_FILE}", *(f"{name}/{file}" for file in WEIGHT_FILES)):
            if rel.endswith(WEIGHT_FILES) and any(f"{name}/{file}" in files for file in WEIGHT_FILES):
                break
            path = _hub_download(entry, source, rel, progress=progress, force=force)
            if path is not None:
                files[rel] = path
    return files


def _hub_download(entry: ModelEntry, source: HubSource, rel: str, *, progress: bool, force: bool) -> Path | None:
    """The file from the hub cache or the hub; None when the repository has no such file
    (read_component then names what is missing)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    options: dict[str, Any] = {"revision": source.revision, "force_download": force}
    if not progress:
        from .download import silent_tqdm

        options["tqdm_class"] = silent_tqdm()
    try:
        return Path(huggingface_hub.hf_hub_download(source.repo, rel, **options))
    except LocalEntryNotFoundError as exc:  # not cached, and the hub cannot be reached
        raise WeightsError(
            f"model {entry.name}: cannot download {rel} from {source} and it is not in the Hugging Face cache"
            f" ({first_line(exc)}); check the connection, or point the entry at a local diffusers folder with `path = ...`"
        ) from None
    except EntryNotFoundError:  # the hub answered: no such file in the repository
        return None
    except Exception as exc:  # noqa: BLE001 - the hub client also raises its HTTP library's errors
        raise WeightsError(f"model {entry.name}: cannot download {rel} from {source}: {first_line(exc)}") from None


# --- the converted file ---------------------------------------------------------------------------


def _expected_shapes(entry: ModelEntry, components: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the manifest's network (built on the meta device)."""
    if entry.kind == ModelKind.CLIP_STATS:
        prior = components["prior"]
        shapes = {key: tuple(prior[name].shape) for key, name in (("0", "clip_mean"), ("1", "clip_std")) if name in prior}
        return shapes or {"0": (), "1": ()}
    from ..nets.checkpoint import CheckpointError, build_on_meta

    try:
        network = build_on_meta(entry.kind, entry.arch)
    except CheckpointError as exc:
        raise WeightsError(f"model {entry.name}: {exc}") from None
    return {name: tuple(t.shape) for name, t in network.state_dict().items()}


def _describe(files: dict[str, Path]) -> dict[str, _SourceRecord]:
    """What the converted file was made from: each source file's path, size, time and sha256
    (the hub cache names an LFS blob by its sha256; other files are hashed)."""
    described: dict[str, _SourceRecord] = {}
    for rel, path in sorted(files.items()):
        stat = path.stat()
        blob = path.resolve().name
        digest = blob if _SHA256_RE.fullmatch(blob) else sha256_file(path)
        described[rel] = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    return described


def _write(state: Mapping[str, torch.Tensor], converted: Path, sources: dict[str, _SourceRecord]) -> Path:
    combined = hashlib.sha256("".join(f"{rel}:{s['sha256']}\n" for rel, s in sources.items()).encode()).hexdigest()
    metadata = {_META_SOURCES: json.dumps(sources), _META_SHA256: combined}
    commits = {m.group(1) for s in sources.values() if (m := _SNAPSHOT_RE.search(s["path"]))}
    if len(commits) == 1:  # the hub commit the files came from, whatever `revision` named
        metadata[_META_COMMIT] = commits.pop()
    return save_whole({k: v.contiguous() for k, v in state.items()}, converted, metadata)


def _converted_path(entry: ModelEntry, cache: Path) -> Path:
    source = entry.source
    if isinstance(source, HubSource):
        identity = f"hub:{source.repo}:{source.revision or 'main'}:{entry.kind}:{entry.arch!r}"
    else:
        assert isinstance(source, LocalSource)  # the manifest takes diffusers from the hub or a folder
        identity = f"path:{source.path}:{entry.kind}:{entry.arch!r}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return cache / "converted" / f"diffusers-{entry.kind}-{key}" / f"{entry.name}.safetensors"


def _metadata(path: Path) -> dict[str, str] | None:
    recorded = safetensors_metadata(path)
    return recorded if recorded and _META_SOURCES in recorded else None

