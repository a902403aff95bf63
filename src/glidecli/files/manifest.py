"""The weights manifest: which files hold each model, where to get them, and how the
network that reads them is shaped.

A manifest is a TOML file (the packaged `weights.toml` by default; see that file for the
schema). Loading it validates everything up front so that a typo fails with one line that
names the file and the problem, before any download starts.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from ..nets.config import ClipConfig, UNetConfig
from ..nets.kinds import MODEL_KINDS, UNET_KINDS, ModelKind
from ..nets.unclip_config import OpenClipConfig, PriorConfig
from .arch_settings import ManifestError as ManifestError
from .arch_settings import build_arch, one_line
from .roles import DEFAULTS_TABLE, Role, Roles, parse_defaults, resolve_roles

MANIFEST_ENV = "GLIDE_WEIGHTS"
FORMATS = ("safetensors", "pt", "diffusers", "peft")
# A lora entry's format: PEFT's adapter folder (adapter_config.json + adapter_model.safetensors).
PEFT_FORMAT = "peft"
# Kinds a diffusers unCLIP (Karlo) folder holds: files/diffusers_unclip.py's COMPONENTS.
DIFFUSERS_KINDS = (ModelKind.UNCLIP_PRIOR, ModelKind.UNCLIP_DECODER, ModelKind.UNCLIP_SR, ModelKind.CLIP_STATS)

# File suffixes whose format is unambiguous; anything else needs an explicit `format`.
_SUFFIX_FORMATS = {
    ".safetensors": "safetensors",
    ".pt": "pt",
    ".pth": "pt",
    ".bin": "pt",
    ".ckpt": "pt",
}
_SOURCE_KEYS = ("hub", "url", "path")
_MODEL_KEYS = frozenset({"kind", "hub", "file", "revision", "url", "path", "format", "sha256", "size", "arch", "tokenizer"})
_TOKENIZER_KEYS = frozenset({"hub", "file", "revision", "url", "path", "sha256"})
_TOP_LEVEL_KEYS = frozenset({"version", "models", "tokenizers", DEFAULTS_TABLE})
_SCHEMA_VERSION = 1
DEFAULT_TOKENIZER = "gpt2"  # the [tokenizers.NAME] a U-Net's prompts use unless its entry names another
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_URL_SCHEMES = ("https", "http", "file")


@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face Hub repository, fetched with `hf_hub_download`."""

    repo: str
    file: str  # "" for a whole diffusers folder (format = "diffusers")
    revision: str | None = None

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"hf://{self.repo}/{self.file}{at}" if self.file else f"hf://{self.repo}{at}"


@dataclass(frozen=True)
class UrlSource:
    """A plain download (https, http, or file:// for copies on a local disk)."""

    url: str

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class LocalSource:
    """A file already on disk, used in place; `path` is absolute once loaded."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


Source = HubSource | UrlSource | LocalSource
EntryT = TypeVar("EntryT")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: ModelKind
    source: Source
    format: str
    sha256: str | None
    size: int | None
    arch: UNetConfig | ClipConfig | PriorConfig | OpenClipConfig | None  # None: clip-stats
    # The manifest this entry came from, so that error messages can say what to edit.
    manifest_path: Path | None = field(default=None, compare=False)
    # The [tokenizers.NAME] entry that turns prompts into this U-Net's tokens.
    tokenizer: str = DEFAULT_TOKENIZER

    @property
    def file_name(self) -> str:
        """The source's file name (what a download is saved as)."""
        return _source_file_name(self.source)


@dataclass(frozen=True)
class TokenizerEntry:
    name: str
    source: Source
    sha256: str | None
    manifest_path: Path | None = field(default=None, compare=False)

    @property
    def file_name(self) -> str:
        return _source_file_name(self.source)


Entry = ModelEntry | TokenizerEntry  # what `glide weights` lists and fetches


@dataclass
class Manifest:
    path: Path
    models: dict[str, ModelEntry]
    tokenizers: dict[str, TokenizerEntry]
    defaults: dict[Role, str] = field(default_factory=dict)  # its [defaults] table (files/roles.py)

    def roles(self) -> Roles:
        """The model that plays each role when a command names none (files/roles.py)."""
        return resolve_roles({name: entry.kind for name, entry in self.models.items()}, self.defaults)

    def model(self, name: str) -> ModelEntry:
        return _named(self.models, name, "model", self.path)

    def tokenizer(self, name: str) -> TokenizerEntry:
        return _named(self.tokenizers, name, "tokenizer", self.path)

    def models_of_kind(self, kind: ModelKind) -> list[ModelEntry]:
        """Entries of one kind, in manifest order."""
        return [entry for entry in self.models.values() if entry.kind == kind]


def _named(entries: Mapping[str, EntryT], name: str, what: str, path: Path) -> EntryT:
    """The entry called `name`, or ManifestError naming the ones there are."""
    try:
        return entries[name]
    except KeyError:
        known = ", ".join(entries) or "none"
        raise ManifestError(f"{path}: no {what} named {name!r}; known {what}s: {known}") from None


def packaged_manifest_path() -> Path:
    """The `weights.toml` shipped inside the package."""
    return Path(str(resources.files("glidecli.files").joinpath("weights.toml")))


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read and validate a manifest: `path`, else $GLIDE_WEIGHTS, else the packaged one."""
    origin = ""
    if path is None or str(path) == "":
        env_path = os.environ.get(MANIFEST_ENV, "")
        if env_path:
            path, origin = env_path, f" (from ${MANIFEST_ENV})"
        else:
            path = packaged_manifest_path()
    manifest_path = Path(path).expanduser()
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{manifest_path}{origin}: no such manifest file") from None
    except IsADirectoryError:
        raise ManifestError(f"{manifest_path}{origin}: is a directory, not a manifest file") from None
    except OSError as exc:
        raise ManifestError(f"{manifest_path}{origin}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest_path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message already ends with "(at line L, column C)".
        raise ManifestError(f"{manifest_path}: invalid TOML: {one_line(str(exc))}") from None
    return _parse_manifest(data, manifest_path.resolve())


def _parse_manifest(data: Mapping[str, Any], path: Path) -> Manifest:
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise ManifestError(f"{path}: unknown top-level key {unknown[0]!r}; expected models, tokenizers, {DEFAULTS_TABLE} or version")
    version = data.get("version", _SCHEMA_VERSION)
    if version != _SCHEMA_VERSION:
        raise ManifestError(f"{path}: unsupported manifest version {version!r}; this glidecli reads version {_SCHEMA_VERSION}")
    models_table = _table(data.get("models", {}), path, "models")
    tokenizers_table = _table(data.get("tokenizers", {}), path, "tokenizers")
    models = {
        name: _parse_model(name, _table(table, path, f"models.{name}"), path)
        for name, table in models_table.items()
    }
    tokenizers = {
        name: _parse_tokenizer(name, _table(table, path, f"tokenizers.{name}"), path)
        for name, table in tokenizers_table.items()
    }
    for entry in models.values():
        if entry.tokenizer != DEFAULT_TOKENIZER and entry.tokenizer not in tokenizers:
            known = ", ".join(tokenizers) or "none"
            raise ManifestError(
                f"{path}: model {entry.name!r} uses tokenizer {entry.tokenizer!r}, which has no"
                f" [tokenizers.{entry.tokenizer}] entry; known tokenizers: {known}"
            )
    defaults = parse_defaults(data.get(DEFAULTS_TABLE, {}), {name: entry.kind for name, entry in models.items()}, path)
    return Manifest(path=path, models=models, tokenizers=tokenizers, defaults=defaults)


def _parse_model(name: str, table: Mapping[str, Any], path: Path) -> ModelEntry:
    where = f"{path}: model {name!r}"
    _reject_unknown_keys(table, _MODEL_KEYS, where)
    kind = table.get("kind")
    if kind is None:
        raise ManifestError(f"{where}: missing 'kind' (one of {', '.join(MODEL_KINDS)})")
    if kind not in MODEL_KINDS:
        raise ManifestError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    kind = ModelKind(kind)
    file_format = table.get("format")
    if file_format is not None and file_format not in FORMATS:
        raise ManifestError(f"{where}: unknown format {file_format!r}; expected safetensors, pt or diffusers")
    if kind == ModelKind.LORA:
        return _parse_lora(name, table, path, where, file_format)
    if file_format == PEFT_FORMAT:
        raise ManifestError(f"{where}: format peft holds lora adapters, not {kind}")
    source = _parse_source(table, path, where, folder=file_format == "diffusers")
    if file_format is None:
        file_format = _format_from_name(_source_file_name(source), where)
    if file_format == "diffusers":
        if kind not in DIFFUSERS_KINDS:
            raise ManifestError(f"{where}: format diffusers holds unCLIP's {', '.join(DIFFUSERS_KINDS)}, not {kind}")
        if "sha256" in table:
            raise ManifestError(f"{where}: a diffusers folder has no single file for sha256; pin `revision` instead")
    size = table.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ManifestError(f"{where}: size must be a positive whole number of bytes, not {size!r}")
    arch_table = _table(table.get("arch", {}), path, f"models.{name}.arch")
    tokenizer = table.get("tokenizer", DEFAULT_TOKENIZER)
    if not isinstance(tokenizer, str) or not tokenizer:
        raise ManifestError(f"{where}: tokenizer must be the name of a [tokenizers.NAME] entry, not {tokenizer!r}")
    if "tokenizer" in table and kind not in UNET_KINDS:
        raise ManifestError(f"{where}: 'tokenizer' applies to U-Net models only, not {kind}")
    return ModelEntry(
        name=name,
        kind=kind,
        source=source,
        format=file_format,
        sha256=_parse_sha256(table, where),
        size=size,
        arch=build_arch(kind, arch_table, where),
        manifest_path=path,
        tokenizer=tokenizer,
    )


def _parse_lora(name: str, table: Mapping[str, Any], path: Path, where: str, file_format: str | None) -> ModelEntry:
    """A LoRA adapter: a local folder (or its adapter_model.safetensors) or a hub repository
    holding one at its root (with optional revision); sha256 pins its safetensors file."""
    if file_format not in (None, PEFT_FORMAT):
        raise ManifestError(f"{where}: a lora adapter is in PEFT's format (format = \"peft\"), not {file_format}")
    for key in ("arch", "tokenizer", "file"):
        if key in table:
            raise ManifestError(f"{where}: {key!r} does not apply to a lora adapter (its folder says what it adapts)")
    if "url" in table:
        raise ManifestError(f"{where}: a lora adapter comes from a local path or a hub repository, not a url")
    source = _parse_source(table, path, where, folder=True)
    if isinstance(source, HubSource):
        source = HubSource(repo=source.repo, file="adapter_model.safetensors", revision=source.revision)
    size = table.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ManifestError(f"{where}: size must be a positive whole number of bytes, not {size!r}")
    return ModelEntry(
        name=name, kind=ModelKind.LORA, source=source, format=PEFT_FORMAT, sha256=_parse_sha256(table, where), size=size, arch=None, manifest_path=path,
    )


def _parse_tokenizer(name: str, table: Mapping[str, Any], path: Path) -> TokenizerEntry:
    where = f"{path}: tokenizer {name!r}"
    _reject_unknown_keys(table, _TOKENIZER_KEYS, where)
    return TokenizerEntry(
        name=name,
        source=_parse_source(table, path, where),
        sha256=_parse_sha256(table, where),
        manifest_path=path,
    )


def _parse_source(table: Mapping[str, Any], path: Path, where: str, folder: bool = False) -> Source:
    """The entry's source; `folder`: a diffusers pipeline folder (a hub repository without
    `file`, or a local folder), not a file."""
    given = [key for key in _SOURCE_KEYS if key in table]
    if len(given) != 1:
        found = f"found {', '.join(given)}" if given else "found none"
        raise ManifestError(f"{where}: give exactly one source, hub (with file), url or path; {found}")
    kind = given[0]
    for key in ("hub", "file", "revision", "url", "path"):
        if key in table and not (isinstance(table[key], str) and table[key]):
            raise ManifestError(f"{where}: {key} must be a non-empty string")
    if kind != "hub":
        for key in ("file", "revision"):
            if key in table:
                raise ManifestError(f"{where}: {key!r} only goes with hub sources")
    if folder and kind == "url":
        raise ManifestError(f"{where}: format diffusers reads a hub repository or a local folder, not a url")
    if kind == "hub":
        repo = table["hub"]
        if repo.count("/") != 1 or repo.startswith("/") or repo.endswith("/"):
            raise ManifestError(f"{where}: hub must be 'owner/repo', not {repo!r}")
        if folder:
            if "file" in table:
                raise ManifestError(f"{where}: format diffusers reads the repository's component folders; remove 'file'")
            return HubSource(repo=repo, file="", revision=table.get("revision"))
        if "file" not in table:
            raise ManifestError(f"{where}: hub source needs file = \"...\" (the file's path in {repo})")
        return HubSource(repo=repo, file=table["file"], revision=table.get("revision"))
    if kind == "url":
        url = table["url"]
        scheme = urlparse(url).scheme
        if scheme not in _URL_SCHEMES:
            raise ManifestError(f"{where}: url must start with https://, http:// or file://, not {url!r}")
        if not _source_file_name(UrlSource(url)):
            raise ManifestError(f"{where}: url {url!r} does not end in a file name")
        return UrlSource(url=url)
    local = Path(table["path"]).expanduser()
    if not local.is_absolute():
        local = path.parent / local  # relative to the manifest, not the working directory
    return LocalSource(path=Path(os.path.normpath(local)))


def _parse_sha256(table: Mapping[str, Any], where: str) -> str | None:
    digest = table.get("sha256")
    if digest is None:
        return None
    if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
        raise ManifestError(f"{where}: sha256 must be 64 hexadecimal digits, not {digest!r}")
    return digest.lower()


def _source_file_name(source: Source) -> str:
    if isinstance(source, HubSource):
        return source.file.rsplit("/", 1)[-1]
    if isinstance(source, UrlSource):
        return unquote(urlparse(source.url).path).rsplit("/", 1)[-1]
    return source.path.name


def _format_from_name(file_name: str, where: str) -> str:
    suffix = Path(file_name).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise ManifestError(f"{where}: cannot tell the format of {file_name!r}; add format = \"safetensors\" or \"pt\"")
    return _SUFFIX_FORMATS[suffix]


def _table(value: Any, path: Path, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{path}: [{key}] must be a table, not {type(value).__name__}")
    return value


def _reject_unknown_keys(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def toml_value(value: Any) -> str:
    """A TOML literal for a setting (bool, number, string or list of them), for writing manifests."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"
