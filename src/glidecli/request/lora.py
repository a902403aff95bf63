"""A request's `--lora` adapters, found and checked before any model loads: each names a
manifest entry of kind lora or an adapter folder, with a weight. An adapter records the model
it was made for (files/lora_file.py); it goes on the command's model of that name, and is
refused in one line for a model of other weights (its sha256) or shapes, unless `--force`
(a deliberate transfer between fine-tunes of one architecture, whose shapes must still fit)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files.lora_file import AdapterError, AdapterFile, read_adapter
from ..files.manifest import Manifest, ModelEntry
from ..nets.kinds import ADAPTABLE_KINDS, ModelKind
from .commands import Request
from .values import adapter_weight

if TYPE_CHECKING:
    from ..render.adapters import AdapterUse

# The request fields that name the networks a command runs, in the order they run.
MODEL_FIELDS = ("prior_model", "model", "decoder_model", "upsample_model", "sr_model")


def request_models(request: Request, manifest: Manifest) -> list[ModelEntry]:
    """The manifest models a request runs that adapters can adapt, in the order they run."""
    entries = []
    for field in MODEL_FIELDS:
        name = getattr(request, field, None)
        if isinstance(name, str) and name in manifest.models and manifest.models[name].kind in ADAPTABLE_KINDS:
            entries.append(manifest.models[name])
    return entries


def resolve_adapters(request: Request, manifest: Manifest, allow_paths: bool = True) -> tuple[AdapterUse, ...]:
    """The request's adapters, each read, checked and matched to the model it adapts;
    `allow_paths` False (the server) takes manifest adapters only. RequestError or
    AdapterError (one line each) for anything that cannot be used."""
    from ..render.adapters import AdapterUse

    uses = []
    models = request_models(request, manifest) if request.lora else []
    for spec in request.lora:
        name, weight = adapter_weight(spec)
        found = adapter_file(name, manifest, allow_paths)
        target = _target(name, found, models, manifest, request.force)
        # A picture records a folder by its absolute path, so that --from finds it from anywhere.
        recorded = name if name in manifest.models else str(Path(name).expanduser().resolve())
        uses.append(AdapterUse(recorded, found, 1.0 if weight is None else weight, target.name))
    return tuple(uses)


def adapter_file(name: str, manifest: Manifest, allow_paths: bool = True) -> AdapterFile:
    """The adapter `name` names: a manifest entry of kind lora (fetched), else (with
    `allow_paths`) a folder or file."""
    entry = manifest.models.get(name)
    if entry is not None:
        if entry.kind != ModelKind.LORA:
            raise AdapterError(f"--lora {name}: {manifest.path} holds {name!r} as a {entry.kind} model, not a lora adapter")
        from ..files.fetch import fetch_entry

        return read_adapter(fetch_entry(entry, progress=False))
    path = Path(name).expanduser()
    if not allow_paths or (not path.exists() and not path.suffix):
        known = ", ".join(e.name for e in manifest.models_of_kind(ModelKind.LORA)) or "none"
        folder = " and no such folder" if allow_paths else ""
        raise AdapterError(f"--lora {name}: no adapter of that name in {manifest.path} (known adapters: {known}){folder}")
    return read_adapter(path)


def _target(name: str, found: AdapterFile, models: list[ModelEntry], manifest: Manifest, force: bool) -> ModelEntry:
    """The command's model the adapter goes on, its weights and shapes checked."""
    if not models:
        raise AdapterError(f"--lora {name}: this command runs no network that LoRA adapts")
    made_for = found.base_model or str(found.config.get("base_model_name_or_path") or "")
    by_name = [entry for entry in models if entry.name == made_for]
    if by_name:
        target = by_name[0]
        if not force and found.base_sha256 and target.sha256 and found.base_sha256 != target.sha256:
            raise AdapterError(
                f"--lora {name}: made for {made_for!r} with weights sha256 {found.base_sha256[:12]}..., but {manifest.path}'s"
                f" {made_for!r} has {target.sha256[:12]}...; --force applies it anyway"
            )
    elif made_for and not force:
        used = ", ".join(entry.name for entry in models)
        raise AdapterError(f"--lora {name}: made for model {made_for!r}, which this command does not run (it runs {used}); --force applies it to one of the same kind")
    else:
        same_kind = [entry for entry in models if entry.kind == found.base_kind]
        target = (same_kind or models)[0]
    _check_shapes(name, found, target)
    return target


def _check_shapes(name: str, found: AdapterFile, target: ModelEntry) -> None:
    """AdapterError unless the adapter's tensors fit the target network's layers (checked on
    a network built on the meta device: shapes only, no memory, no weights read)."""
    import torch

    from ..nets.checkpoint import build_on_meta
    from ..nets.lora import AdapterMismatch, adapter_from_state, check_adapter

    network: Any = build_on_meta(target.kind, target.arch)
    state = {key: torch.empty(shape, device="meta") for key, shape in found.shapes.items()}
    try:
        check_adapter(network, adapter_from_state(state, found.scaling))
    except AdapterMismatch as error:
        raise AdapterError(f"--lora {name}: does not fit model {target.name!r} ({target.kind}): {error}") from None

