"""LoRA adapters on glidecli's networks, as Hugging Face PEFT lays them out.

A LoRA adapter adds to a layer's output a low-rank update, `scaling * B(A(x))`: A ("lora_A")
maps the layer's input to `r` channels with the layer's own kind of map (a Linear, or a
convolution with the layer's kernel, stride and padding), B ("lora_B") maps those back to the
layer's outputs (a Linear, or a 1x1 convolution). `scaling` is alpha / r (alpha / sqrt(r) with
rsLoRA). These are PEFT's LoraLayer, Conv1d and Conv2d, so PEFT's state-dict keys
(`base_model.model.<module path>.lora_A.weight`) name the same tensors here.

`apply_adapters` stands a `LoraLayer` in for each adapted layer of a loaded network, in place;
the base layer itself, and so its cached weights, stays as it was inside it, and
`remove_adapters` puts the base layers back: the network is then the one loaded, bit for bit.
Several adapters stack, each with its weight (the output gains weight * its update).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# The layers an adapter can adapt: every projection of the networks is one of these.
ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
PEFT_PREFIX = "base_model.model."  # what PEFT's saved keys put before a module's path
# The attention projections of glidecli's networks, by their last name: the U-Nets' attention
# blocks (qkv, encoder_kv, proj_out) and the text transformers' (c_qkv, c_proj of `attn`).
ATTENTION_TARGETS = ("qkv", "encoder_kv", "proj_out", "attn.c_qkv", "attn.c_proj")


class AdapterMismatch(ValueError):
    """An adapter that does not fit a network (a module it names is absent or of other
    shapes); the message is one line."""


@dataclass(frozen=True)
class LoraPair:
    """One layer's update: `down` is lora_A's weight [r, in, *kernel], `up` lora_B's
    [out, r, *ones] (and its bias, PEFT's lora_bias), `scaling` alpha / r."""

    down: torch.Tensor
    up: torch.Tensor
    scaling: float
    up_bias: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter: the update of each adapted layer, by the layer's module path."""

    pairs: Mapping[str, LoraPair]

    @property
    def parameter_count(self) -> int:
        return sum(p.down.numel() + p.up.numel() + (0 if p.up_bias is None else p.up_bias.numel()) for p in self.pairs.values())


Adaptable = nn.Linear | nn.Conv1d | nn.Conv2d


def layer_weight(layer: nn.Module) -> torch.Tensor:
    """The weight of an adaptable layer (or of the base layer a LoraLayer stands in for)."""
    weight = layer.weight
    if not isinstance(weight, torch.Tensor):
        raise AdapterMismatch(f"a {type(layer).__name__} has no weight tensor")
    return weight


def lora_scaling(alpha: float, rank: int, rslora: bool = False) -> float:
    """PEFT's scaling of a rank-`rank` update: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return alpha / math.sqrt(rank) if rslora else alpha / rank


class LoraBranch(nn.Module):
    """One adapter's low-rank path beside a layer: lora_A, lora_B (and dropout while training)."""

    lora_A: Adaptable
    lora_B: Adaptable

    def __init__(self, base: nn.Module, rank: int, scaling: float, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.scaling = scaling
        self.factor = 1.0  # the adapter's weight in a stack
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if isinstance(base, nn.Linear):
            self.lora_A = nn.Linear(base.in_features, rank, bias=False)
            self.lora_B = nn.Linear(rank, base.out_features, bias=bias)
        elif isinstance(base, (nn.Conv1d, nn.Conv2d)):
            conv = type(base)
            ones = (1,) * (base.weight.dim() - 2)
            self.lora_A = conv(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)  # type: ignore[arg-type]
            self.lora_B = conv(rank, base.out_channels, ones, ones, bias=bias)  # type: ignore[arg-type]
        else:
            raise AdapterMismatch(f"LoRA adapts Linear, Conv1d and Conv2d layers, not {type(base).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update: torch.Tensor = self.lora_B(self.lora_A(self.lora_dropout(x)))
        return update * (self.scaling * self.factor)


class LoraLayer(nn.Module):
    """Stands in for an adapted layer: its base layer's output plus each branch's update. The
    base layer is kept as it was (`base_layer`), so its weights are never touched."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.branches: list[LoraBranch] = nn.ModuleList()  # type: ignore[assignment]  # a ModuleList of branches

    # The base layer's weights, for code that reads them through the layer (a network's dtype).
    @property
    def weight(self) -> torch.Tensor:
        return layer_weight(self.base_layer)

    @property
    def bias(self) -> torch.Tensor | None:
        bias = self.base_layer.bias
        return bias if isinstance(bias, torch.Tensor) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.base_layer(x)
        for branch in self.branches:
            like = branch.lora_A.weight  # a branch may sit on the device while offloaded weights go home
            result = result + branch(x.to(like.device, like.dtype)).to(result)
        return result


def lora_layers(network: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    """(module path, layer) of each LoraLayer standing in a network."""
    for path, module in network.named_modules():
        if isinstance(module, LoraLayer):
            yield path, module


def remove_adapters(network: nn.Module) -> None:
    """Put back every adapted layer's base layer: the network as loaded."""
    for path, layer in list(lora_layers(network)):
        network.set_submodule(path, layer.base_layer)


def check_adapter(network: nn.Module, adapter: Adapter) -> None:
    """AdapterMismatch unless every layer the adapter names is in `network`, adaptable, and
    of the shapes its update maps between."""
    for path, pair in adapter.pairs.items():
        try:
            layer = network.get_submodule(path)
        except AttributeError:
            raise AdapterMismatch(f"the network has no layer {path!r}") from None
        base: nn.Module = layer.base_layer if isinstance(layer, LoraLayer) else layer
        if not isinstance(base, ADAPTABLE):
            raise AdapterMismatch(f"layer {path!r} is a {type(base).__name__}, which LoRA does not adapt")
        expected = _branch_shapes(base, pair.rank)
        found = (tuple(pair.down.shape), tuple(pair.up.shape))
        if found != expected:
            raise AdapterMismatch(f"layer {path!r} takes lora_A/lora_B of shapes {list(expected[0])}/{list(expected[1])}, not {list(found[0])}/{list(found[1])}")
        if pair.up_bias is not None and tuple(pair.up_bias.shape) != (expected[1][0],):
            raise AdapterMismatch(f"layer {path!r}: lora_B's bias has shape {list(pair.up_bias.shape)}, not [{expected[1][0]}]")


def _branch_shapes(base: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    weight = layer_weight(base)
    out_features, in_features, *kernel = weight.shape
    return (rank, in_features, *kernel), (out_features, rank, *(1 for _ in kernel))


def apply_adapters(network: nn.Module, adapters: Sequence[tuple[Adapter, float]], device: torch.device | None = None) -> None:
    """Stand adapters in the network with their weights (replacing any applied before), their
    tensors on `device` (default: each base layer's). An adapter of weight 0 is left out, so
    all-zero weights leave the base network itself. Every adapter is checked first:
    AdapterMismatch leaves the network as loaded."""
    remove_adapters(network)
    for adapter, _ in adapters:
        check_adapter(network, adapter)
    for adapter, weight in adapters:
        if weight == 0:
            continue
        for path, pair in adapter.pairs.items():
            layer = network.get_submodule(path)
            if not isinstance(layer, LoraLayer):
                layer = LoraLayer(layer)
                network.set_submodule(path, layer)
            layer.branches.append(_frozen_branch(layer.base_layer, pair, weight, device))


def _frozen_branch(base: nn.Module, pair: LoraPair, weight: float, device: torch.device | None) -> LoraBranch:
    """A branch holding `pair`'s tensors on `device` (or the base layer's) in the base layer's dtype, not trained."""
    with torch.device("meta"):
        branch = LoraBranch(base, pair.rank, pair.scaling, bias=pair.up_bias is not None)
    like = layer_weight(base)
    target = device or like.device
    tensors = {"lora_A.weight": pair.down, "lora_B.weight": pair.up}
    if pair.up_bias is not None:
        tensors["lora_B.bias"] = pair.up_bias
    branch.load_state_dict({k: v.to(target, like.dtype) for k, v in tensors.items()}, assign=True)
    branch.requires_grad_(False)
    branch.factor = weight
    return branch


# --- which layers, and adapters from PEFT's keys -------------------------------------------------------


def matching_paths(network: nn.Module, targets: Sequence[str]) -> list[str]:
    """The adaptable layers whose module path ends with one of `targets` (whole names)."""
    return [
        path
        for path, module in network.named_modules()
        if isinstance(module, ADAPTABLE) and any(path == t or path.endswith("." + t) for t in targets)
    ]


def adapter_from_state(state: Mapping[str, torch.Tensor], scaling_of: Callable[[str, int], float]) -> Adapter:
    """An Adapter from PEFT's saved keys; `scaling_of(path, rank)` is each layer's scaling.
    AdapterMismatch for a key that is not a LoRA tensor or a layer without both halves."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        body = key.removeprefix(PEFT_PREFIX)
        for suffix in ("lora_A.weight", "lora_B.weight", "lora_B.bias"):
            if body.endswith("." + suffix):
                parts.setdefault(body[: -len(suffix) - 1], {})[suffix] = tensor
                break
        else:
            raise AdapterMismatch(f"tensor {key!r} is not a LoRA weight (lora_A.weight, lora_B.weight or lora_B.bias)")
    pairs = {}
    for path, found in parts.items():
        if "lora_A.weight" not in found or "lora_B.weight" not in found:
            raise AdapterMismatch(f"layer {path!r} has only one of lora_A and lora_B")
        down, up = found["lora_A.weight"], found["lora_B.weight"]
        if down.dim() < 2 or up.dim() != down.dim() or up.shape[1] != down.shape[0]:
            raise AdapterMismatch(f"layer {path!r}: lora_A {list(down.shape)} and lora_B {list(up.shape)} do not compose")
        pairs[path] = LoraPair(down, up, scaling_of(path, int(down.shape[0])), found.get("lora_B.bias"))
    return Adapter(pairs)


def merged_delta(base: nn.Module, pair: LoraPair) -> torch.Tensor:
    """The change of the base layer's weight that equals the update: scaling * B A (for a
    convolution, A's kernel mixed by B's 1x1 map)."""
    up = pair.up.flatten(1).double()  # [out, r]
    delta = torch.einsum("or,ri...->oi...", up, pair.down.double())
    return (delta * pair.scaling).to(layer_weight(base).dtype)
