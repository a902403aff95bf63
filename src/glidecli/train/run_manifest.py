"""The manifest a training run writes: the entries it made and, for unCLIP's kinds, those it
used (the CLIP, and the prior a decoder run was given), so that `glide generate`, `glide
unclip/vary/blend --weights RUN/weights.toml` work as they stand. Paths are relative to the
manifest; entries from elsewhere keep their source. Its [defaults] table names the run's
model of each kind, so that those commands need no model named (files/roles.py)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..files.file_facts import sha256_file
from ..files.manifest import HubSource, LocalSource, Manifest, ModelEntry, toml_value
from ..files.roles import KIND_ROLES, Role, defaults_table
from ..nets.kinds import ModelKind
from .dataset import default_mode
from .state import arch_dict


def made_entry(
    name: str, kind: str, weights: Path, arch: dict[str, Any] | None, folder: Path, extra: tuple[str, ...] = ()
) -> list[str]:
    """A model this run made: its file beside the manifest (`extra`: more key lines)."""
    lines = [f"[models.{json.dumps(name)}]", f"kind = {toml_value(kind)}", f"path = {toml_value(os.path.relpath(weights, folder))}",
             f"sha256 = {toml_value(sha256_file(weights))}", f"size = {weights.stat().st_size}", *extra, ""]
    return lines + _arch(name, arch)


def write_model_manifest(path: Path, name: str, kind: str, cfg: Any, weights: Path, tokenizer: Path, comment: list[str]) -> Path:
    """GLIDE's kinds: one model and the tokenizer its prompts use."""
    tokenizer_name = f"{name}-tokenizer"
    model = made_entry(name, kind, weights, arch_dict(cfg), path.parent, (f"tokenizer = {toml_value(tokenizer_name)}",))
    tokens = [f"[tokenizers.{json.dumps(tokenizer_name)}]", f"path = {toml_value(os.path.relpath(tokenizer, path.parent))}",
              f"sha256 = {toml_value(sha256_file(tokenizer))}"]
    return write_run_manifest(path, [model, tokens], comment, run_roles([(name, ModelKind(kind))]))


def run_roles(models: Iterable[tuple[str, ModelKind]], preferred: Mapping[Role, str] | None = None) -> dict[Role, str]:
    """The roles of a run's manifest whose models are (name, kind): each kind it holds once
    plays its role; a kind held several times plays it by the model `preferred` (the roles of
    the manifest the run read) names, else none (a decoder run given several priors names none)."""
    by_kind: dict[ModelKind, list[str]] = {}
    for name, kind in models:
        by_kind.setdefault(kind, []).append(name)
    roles = {}
    for kind, names in by_kind.items():
        role = KIND_ROLES[kind]
        chosen = names[0] if len(names) == 1 else (preferred or {}).get(role)
        if chosen in names:
            roles[role] = chosen
    return roles


def manifest_roles(manifest: Manifest | None) -> dict[Role, str]:
    """The models a manifest's roles name (its [defaults], or its one entry of a kind); none without one."""
    if manifest is None:
        return {}
    return {role: choice.model for role, choice in manifest.roles().choices.items() if choice.present}


def used_entry(entry: ModelEntry, folder: Path) -> list[str]:
    """A model this run used, as its own manifest describes it (a local path made relative)."""
    lines = [f"[models.{json.dumps(entry.name)}]", f"kind = {toml_value(entry.kind)}"]
    source = entry.source
    if isinstance(source, LocalSource):
        lines.append(f"path = {toml_value(os.path.relpath(source.path, folder))}")
    elif isinstance(source, HubSource):
        lines += [f"hub = {toml_value(source.repo)}"] + ([f"file = {toml_value(source.file)}"] if source.file else [])
        lines += [f"revision = {toml_value(source.revision)}"] if source.revision else []
    else:
        lines.append(f"url = {toml_value(source.url)}")
    lines.append(f"format = {toml_value(entry.format)}")
    lines += [f"sha256 = {toml_value(entry.sha256)}"] if entry.sha256 else []
    lines.append("")
    return lines + _arch(entry.name, None if entry.arch is None else arch_dict(entry.arch))


def _arch(name: str, arch: dict[str, Any] | None) -> list[str]:
    if not arch:
        return []
    return [f"[models.{json.dumps(name)}.arch]", *(f"{key} = {toml_value(value)}" for key, value in arch.items()), ""]


def write_run_manifest(path: Path, blocks: list[list[str]], comment: list[str], roles: Mapping[Role, str] | None = None) -> Path:
    """Write the manifest whole (temporary file, then rename), with a [defaults] table of `roles`."""
    lines = [f"# {line}" for line in comment] + ["", "version = 1", "", *defaults_table(roles or {})]
    for block in blocks:
        lines += block
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines).rstrip() + "\n")
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)
    return path
