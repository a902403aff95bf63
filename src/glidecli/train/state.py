"""The state of a `glide train` run (loop.py): the networks' weights and the files the
run keeps in its output folder.

Holds a fresh network's initialization, float32 working copies of weights, gradient
checkpointing, the checkpoints (model, EMA and optimizer moments as safetensors, plus
state.json), the loss log's trimming on resume, the sample pictures, and the manifest of
the exported model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..diffusion.vocabulary import SamplerName
from ..nets.checkpoint import build_network
from ..nets.config import UNetConfig
from ..nets.tokenizer import GlideTokenizer
from ..nets.unclip import materialize_buffers
from ..nets.unet import AttentionBlock, ResBlock, Text2ImUNet
from .data import pil_to_tensor, random_crop
from .dataset import Dataset, default_mode

STATE_VERSION = 2  # of a checkpoint's state.json; 2: each example draws from its own generator
RESUMABLE_VERSIONS = (1, 2)  # 1 differs only in the examples' random draws
NetworkT = TypeVar("NetworkT", bound=nn.Module)


# --- the networks ---------------------------------------------------------------------------


def init_fresh_(model: Text2ImUNet, seed: int) -> Text2ImUNet:
    """Initialize a new network as ADM does: PyTorch's default layer init, small random text
    embeddings, and zero for the last layer of every residual branch and of the output (so
    each block starts as the identity). Deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                module.weight.copy_((torch.rand(module.weight.shape, generator=generator) * 2 - 1) * bound)
                if module.bias is not None:
                    module.bias.copy_((torch.rand(module.bias.shape, generator=generator) * 2 - 1) * bound)
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)
            elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
                module.weight.fill_(1.0)
                module.bias.fill_(0.0)
        for name in ("positional_embedding", "padding_embedding"):
            param = getattr(model, name, None)
            if param is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        zero = [model.out[-1]]
        for module in model.modules():
            if isinstance(module, ResBlock):
                zero.append(module.out_layers[-1])
            if isinstance(module, AttentionBlock):
                zero.append(module.proj_out)
        for module in zero:
            for param in module.parameters(recurse=False):  # its weight and bias (when it has one)
                param.zero_()
    return model


def enable_gradient_checkpointing(model: Text2ImUNet) -> None:
    """Recompute each U-Net stage's activations in the backward pass instead of storing
    them (less memory, about a third more compute). Wraps the stages' forward methods."""
    from torch.utils.checkpoint import checkpoint

    stages = [*model.input_blocks, model.middle_block, *model.output_blocks]
    for stage in stages:
        if getattr(stage, "_glide_checkpointed", False):
            continue
        inner = stage.forward

        def forward(*args: Any, _inner: Callable = inner, **kwargs: Any) -> Tensor:
            if torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        stage.forward = forward
        stage._glide_checkpointed = True


def network_from_weights(kind: str, cfg: Any, weights: dict[str, Tensor], device: torch.device) -> nn.Module:
    """A float32 network of `kind` on `device` holding copies of `weights` (and the buffers a
    checkpoint does not hold: CLIP's causal mask, the prior's placeholder stats)."""
    with torch.device("meta"):
        network = build_network(kind, cfg)
    copies = {k: v.detach().to(device=device, dtype=torch.float32, copy=True) for k, v in weights.items()}
    network.load_state_dict(copies, strict=True, assign=True)
    materialize_buffers(kind, network, device)
    return network


def network_as(cls: type[NetworkT], network: nn.Module) -> NetworkT:
    """`network` as the class its kind builds (build_network's return type names only nn.Module)."""
    if not isinstance(network, cls):
        raise TypeError(f"expected a {cls.__name__}, got a {type(network).__name__}")
    return network


INPUT_CONV = "input_blocks.0.0.weight"  # the first convolution: the only layer that sees the inputs


def inpainting_weights(weights: dict[str, Tensor], cfg: UNetConfig) -> dict[str, Tensor]:
    """The weights of a base or upsample network `cfg`, as its inpainting variant: as in GLIDE,
    the four new input channels (masked picture and mask, after x_t) start at zero, so the
    new network computes exactly what the old one did until fine-tuning teaches it to use them."""
    if cfg.inpaint:
        raise ValueError("the network already is an inpainting model")
    conv = weights[INPUT_CONV]
    channels = cfg.image_channels
    extra = conv.new_zeros(conv.shape[0], channels + 1, *conv.shape[2:])
    return {**weights, INPUT_CONV: torch.cat([conv[:, :channels], extra, conv[:, channels:]], dim=1)}


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """The checkpoints in out/checkpoints, oldest first."""
    root = out / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            if path.is_dir() and path.name.startswith("step-") and path.name[5:].isdigit() and (path / "state.json").is_file():
                found.append((int(path.name[5:]), path))
    return sorted(found)


def write_checkpoint(out: Path, step: int, tensors: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> Path:
    """Write out/checkpoints/step-N: NAME.safetensors for each entry of `tensors`, and
    state.json. It is assembled in a temporary folder and renamed into place, so a run
    stopped while saving never leaves a half-written checkpoint for --resume to find."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step}."))
    try:
        for name, values in tensors.items():
            save_tensors(values, tmp / f"{name}.safetensors")
        write_json(tmp / "state.json", state)
        for item in tmp.iterdir():
            os.chmod(item, default_mode())
        os.chmod(tmp, default_mode(directory=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def prune_checkpoints(out: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (0: keep them all)."""
    for _, old in checkpoint_dirs(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """The optimizer's per-parameter state as flat tensors ("INDEX.KEY"), for safetensors."""
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if not isinstance(value, Tensor):
                value = torch.tensor(value)
            tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
    return tensors


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    """The inverse of optimizer_tensors; the parameter groups stay the optimizer's own."""
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def write_json(path: Path, data: Any) -> None:
    """`data` as JSON, written whole (its folder made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past `step` (written by a run that stopped before its next checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# --- samples and the manifest of a trained model -------------------------------------------


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """Save an [H, W, 3] uint8 picture as PNG through a temporary file, so that a picture
    being looked at while the run goes on is never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)
    return path


@torch.no_grad()
def write_samples(
    path: Path, ema: Text2ImUNet, tokenizer: GlideTokenizer, dataset: Dataset, cfg: UNetConfig, device: torch.device, count: int = 4
) -> Path:
    """A row of EMA samples (classifier-free guidance 3, 50 DDIM steps) for the first
    captions of the data set; upsamplers get those pictures' low-resolution versions, and
    inpainting models those pictures with the middle half of each side to fill."""
    from ..diffusion.noise import ImageNoise
    from ..render.pipeline import (
        Inpainting,
        SamplerChoice,
        StageInputs,
        encode_prompts,
        sample_stage,
    )

    count = min(count, len(dataset))
    captions = [dataset.examples[i].caption for i in range(count)]

    def pictures(size: int) -> Tensor:
        centre = torch.full((3,), 0.5)
        return torch.stack([pil_to_tensor(random_crop(dataset.image(i), size, 1.0, centre)) for i in range(count)]).to(device)

    size = cfg.image_size
    low_res = pictures(max(1, size // 4)) if cfg.super_res else None
    inpainting = None
    if cfg.inpaint:
        keep = torch.ones(count, 1, size, size, device=device)
        keep[:, :, size // 4 : size - size // 4, size // 4 : size - size // 4] = 0.0
        inpainting = Inpainting(pictures(size), keep)
    conditioning = encode_prompts(ema, tokenizer, captions, guided=True)
    images = sample_stage(
        ema, conditioning, ImageNoise(list(range(count))), SamplerChoice(SamplerName.DDIM, "50"), scale=3.0,
        inputs=StageInputs(low_res=low_res, inpainting=inpainting),
    )
    pixels = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    row = torch.cat(list(pixels), dim=2).permute(1, 2, 0).numpy()
    return write_png(path, row)


def arch_dict(cfg: Any) -> dict[str, Any]:
    """The network's settings with tuples as lists, as JSON and TOML write them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}

