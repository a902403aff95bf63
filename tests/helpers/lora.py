"""LoRA adapters made up for tests: random lora_A/lora_B for a network's layers, written in
PEFT's format, and a copy of the shapes manifest that names them."""

from __future__ import annotations

from pathlib import Path

import torch

from glidecli.files.lora_file import write_adapter
from glidecli.files.manifest import load_manifest
from glidecli.nets.checkpoint import load_network
from glidecli.nets.lora import ATTENTION_TARGETS, matching_paths
from helpers.paths import MODELS


def random_adapter_state(network: torch.nn.Module, rank: int, seed: int, size: float = 0.3, targets=ATTENTION_TARGETS) -> dict[str, torch.Tensor]:
    """PEFT's keys -> random tensors (lora_B nonzero) for the network's `targets`."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for path in matching_paths(network, targets):
        weight = network.get_submodule(path).weight
        state[f"base_model.model.{path}.lora_A.weight"] = torch.randn(rank, *weight.shape[1:], generator=g) * size
        state[f"base_model.model.{path}.lora_B.weight"] = torch.randn(weight.shape[0], rank, *(1,) * (weight.dim() - 2), generator=g) * size
    return state


def shapes_adapter(folder: Path, model: str = "shapes", *, rank: int = 4, seed: int = 0, base_sha256: str | None = "", config: dict | None = None) -> Path:
    """A random adapter for the shapes model `model`, recording it (and its sha256 unless
    `base_sha256` gives another, or None for none)."""
    entry = load_manifest(MODELS / "weights.toml").model(model)
    network = load_network(entry.kind, entry.arch, entry.source.path, "cpu", torch.float32)
    state = random_adapter_state(network, rank, seed)
    sha = entry.sha256 if base_sha256 == "" else base_sha256
    settings = {"r": rank, "lora_alpha": rank, "target_modules": list(ATTENTION_TARGETS), **(config or {})}
    return write_adapter(folder, state, settings, base_model=model, base_kind=entry.kind, base_sha256=sha, overwrite=True)


def shapes_manifest_with(path: Path, adapters: dict[str, Path]) -> Path:
    """A copy of models/weights.toml at `path` (its files by absolute path) naming `adapters`."""
    text = (MODELS / "weights.toml").read_text().replace('path = "', f'path = "{MODELS}/')
    for name, folder in adapters.items():
        text += f'\n[models."{name}"]\nkind = "lora"\npath = "{folder}"\n'
    path.write_text(text)
    return path
