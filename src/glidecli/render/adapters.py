"""LoRA adapters on a session's networks (nets/lora.py): which adapters each network wears,
applied when the network loads or when a render asks for others. The cached base weights are
never changed: applying, switching or removing adapters only stands layers in for others, so a
warm server switches in milliseconds and a render without adapters is the base model's, bit
for bit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..files.lora_file import AdapterError, AdapterFile
from ..nets.lora import Adapter, AdapterMismatch, apply_adapters


@dataclass(frozen=True)
class AdapterUse:
    """One `--lora` of a request: the adapter as the user named it (a manifest name or a
    path), its checked file, its weight, and the manifest model it adapts."""

    name: str
    file: AdapterFile
    weight: float
    model: str

    def record(self) -> dict[str, Any]:
        """What a picture records of it: enough to find and check it again."""
        return {"name": self.name, "sha256": self.file.sha256, "weight": self.weight}


def adapter_records(uses: Sequence[AdapterUse]) -> list[dict[str, Any]]:
    return [use.record() for use in uses]


class SessionAdapters:
    """The adapters a session's networks should wear and those they wear; each adapter's
    tensors are read once (by the sha256 of its file)."""

    def __init__(self) -> None:
        self.wanted: dict[str, tuple[tuple[str, float], ...]] = {}  # model -> (sha256, weight) pairs
        self.worn: dict[str, tuple[tuple[str, float], ...]] = {}
        self._files: dict[str, AdapterFile] = {}
        self._tensors: dict[str, Adapter] = {}

    def want(self, uses: Sequence[AdapterUse]) -> None:
        """From now on, exactly these adapters (none: every network as loaded)."""
        wanted: dict[str, list[tuple[str, float]]] = {}
        for use in uses:
            self._files[use.file.sha256] = use.file
            wanted.setdefault(use.model, []).append((use.file.sha256, use.weight))
        self.wanted = {model: tuple(pairs) for model, pairs in wanted.items()}

    def sync(self, model: str, network: nn.Module, device: torch.device) -> bool:
        """Dress `network` (the manifest's `model`) in the adapters wanted for it; True when
        that changed its layers. AdapterError (one line) when an adapter does not fit."""
        wanted = self.wanted.get(model, ())
        if self.worn.get(model, ()) == wanted:
            return False
        stack = [(self._adapter(sha256), weight) for sha256, weight in wanted]
        try:
            apply_adapters(network, stack, device=device)
        except AdapterMismatch as error:
            self.worn[model] = ()  # apply_adapters left the network as loaded
            names = ", ".join(str(self._files[sha256].folder) for sha256, _ in wanted)
            raise AdapterError(f"adapter {names} does not fit model {model!r}: {error}") from None
        self.worn[model] = wanted
        return True

    def _adapter(self, sha256: str) -> Adapter:
        if sha256 not in self._tensors:
            self._tensors[sha256] = self._files[sha256].load()
        return self._tensors[sha256]
