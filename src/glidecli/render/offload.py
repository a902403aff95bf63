"""Memory offload: which networks' weights sit on the device while a render runs.

- "none": every network loaded stays on the device (the fastest).
- "model": only the network that runs is on the device; the others wait in (pinned, on CUDA)
  CPU memory in their inference dtype, so a move is one copy of the weights, never through an
  fp32 copy. unCLIP holds CLIP, the prior, the decoder and the super-resolution pair (3.7B
  parameters, 7.4 GB in fp16); with "model" the device holds the largest of them, SR's 2.8 GB.
- "sequential": each block of a network comes onto the device just for its own call and goes
  back right after (the blocks of a network's block lists, each transformer layer, each other
  layer with weights), for the smallest GPUs; the few tensors a network reads outside its
  layers (embeddings, learned queries) stay while that network runs.

A network comes onto the device when any of its layers is called (forward pre-hooks) or when
the session hands it out, and leaves when another network comes. Each parameter and buffer
keeps one home tensor in CPU memory; moving to the device copies it there, moving home only
drops the device copy. The values are the same tensors either way, so a picture is the same bit
for bit with any choice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .defaults import OFFLOAD_CHOICES

# Methods through which a network is used besides its forward, some of which read its own
# weights before calling any of its layers (the decoder's learned "no image" embedding).
ENTRY_METHODS = ("encode_clip", "encode_text")


class OffloadError(ValueError):
    """An offload choice that is not one of OFFLOAD_CHOICES; the message is one line."""


def check_offload(choice: str) -> str:
    if choice not in OFFLOAD_CHOICES:
        raise OffloadError(f"unknown offload {choice!r}; choose one of {', '.join(OFFLOAD_CHOICES)}")
    return choice


class _Resident:
    """The home (CPU) copies of some tensors of one module tree, and moving them."""

    def __init__(self, module: nn.Module, names: list[str], pin: bool):
        # Each tensor's owning module, found once: "sequential" moves blocks at every call.
        self.owners = []
        for name in names:
            owner, _, leaf = name.rpartition(".")
            self.owners.append((name, module.get_submodule(owner) if owner else module, leaf))
        self.pin = pin
        self.home: dict[str, torch.Tensor] = {}
        self.placed: dict[str, torch.Tensor] = {}  # the tensor each name held when it last moved
        self.on_device = False

    def _tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, module, leaf in self.owners:
            tensor = getattr(module, leaf)  # looked up each time: a module may replace it (the prior's stats)
            if tensor is not None:
                yield name, tensor

    def to_device(self, device: torch.device) -> None:
        if self.on_device:
            return
        for name, tensor in self._tensors():
            self._keep(name, tensor)
            tensor.data = self.home[name].to(device, non_blocking=self.pin)
        self.on_device = True

    def to_home(self) -> None:
        if not self.on_device:
            return
        for name, tensor in self._tensors():
            self._keep(name, tensor)
            tensor.data = self.home[name]  # the device copy is dropped, nothing is copied
        self.on_device = False

    def _keep(self, name: str, tensor: torch.Tensor) -> None:
        """A home copy of a tensor met for the first time, or that the module replaced since
        (the prior's stats are set after loading)."""
        if self.placed.get(name) is not tensor:
            home = tensor.detach().to("cpu")
            self.home[name] = home.pin_memory() if self.pin and not home.is_pinned() else home
            self.placed[name] = tensor


def _tensor_names(module: nn.Module, prefix: str = "", recurse: bool = True) -> list[str]:
    params = [prefix + n for n, _ in module.named_parameters(recurse=recurse)]
    buffers = [prefix + n for n, _ in module.named_buffers(recurse=recurse)]
    return params + buffers


def network_blocks(module: nn.Module, prefix: str = "") -> tuple[list[str], list[str]]:
    """(block module names, names of the tensors read outside any block). Blocks: each member
    of a block list (ModuleList, and so glidecli's Stage), each other leaf module with weights."""
    blocks, loose = [], _tensor_names(module, prefix, recurse=False)
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(module, nn.ModuleList) or not any(True for _ in child.children()):
            if _tensor_names(child):
                blocks.append(path)
        else:
            inner, inner_loose = network_blocks(child, path + ".")
            blocks += inner
            loose += inner_loose
    return blocks, loose


class Offload:
    """Moves a session's networks between the device and CPU memory for one choice."""

    def __init__(self, choice: str, device: torch.device):
        self.choice = check_offload(choice)
        self.device = device
        self.pin = device.type == "cuda"
        self.home_device = torch.device("cpu")
        self.moves: Counter[str] = Counter()  # network name -> times it came onto the device
        self.active: str | None = None
        self._networks: dict[str, _Resident] = {}  # whole networks ("model"), or their loose tensors ("sequential")

    @property
    def enabled(self) -> bool:
        return self.choice != "none"

    @property
    def load_device(self) -> torch.device:
        """Where a network is loaded: the device, or CPU memory when it is offloaded."""
        return self.home_device if self.enabled else self.device

    def manage(self, name: str, network: nn.Module) -> nn.Module:
        """Take charge of a freshly loaded network (on `load_device`)."""
        if not self.enabled:
            return network
        if self.choice == "model":
            self._networks[name] = _Resident(network, _tensor_names(network), self.pin)
        else:
            blocks, loose = network_blocks(network)
            self._networks[name] = _Resident(network, loose, self.pin)
            for block in blocks:
                self._sequential_hooks(network.get_submodule(block))
        for module in network.modules():
            module.register_forward_pre_hook(lambda *_, name=name: self.activate(name))
        for method in ENTRY_METHODS:
            if hasattr(network, method):
                setattr(network, method, self._activating(name, getattr(network, method)))
        return network

    def _activating(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.activate(name)
            return method(*args, **kwargs)

        return call

    def _sequential_hooks(self, block: nn.Module) -> None:
        resident = _Resident(block, _tensor_names(block), self.pin)

        def arrive(*_: object) -> None:
            resident.to_device(self.device)

        def leave(*_: object) -> None:
            resident.to_home()

        block.register_forward_pre_hook(arrive)
        block.register_forward_hook(leave)

    def activate(self, name: str) -> None:
        """Network `name` is about to run: bring it (or its loose tensors) onto the device and
        send the one there before home."""
        if not self.enabled or self.active == name or name not in self._networks:
            return
        self.evict()
        self._networks[name].to_device(self.device)
        self.moves[name] += 1
        self.active = name

    def evict(self) -> None:
        """No network on the device."""
        if self.active is not None:
            self._networks[self.active].to_home()
            self.active = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # the next network may need the room at once
