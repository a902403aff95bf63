"""Turning a pickled PyTorch checkpoint (.pt, .ckpt) into safetensors, without running any
code the pickle holds."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .weights_error import WeightsError, first_line

if TYPE_CHECKING:  # torch loads in the functions that use it, not with this module
    import torch


def convert_pt_to_safetensors(src: str | Path, dst: str | Path, *, metadata: Mapping[str, str] | None = None) -> Path:
    """Convert a pickled state dict of tensors to safetensors.

    The pickle is read with weights_only=True, so a file holding anything but tensors and
    plain containers is refused before any of its code can run. A training checkpoint gives
    its `state_dict`; a pair of same-shaped tensors is stored under the keys "0" and "1". The result is written to a
    temporary name and moved into place, so `dst` is either absent or complete."""
    import torch

    src, dst = Path(src), Path(dst)
    state = _load_pickled_tensors(src)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        # A training checkpoint (PyTorch Lightning's .ckpt, as Karlo's): only its weights.
        state = state["state_dict"]
    elif _is_tensor_pair(state):
        # A (mean, std) pair, as Karlo's CLIP stats file holds, is kept under "0" and "1".
        state = {str(i): v for i, v in enumerate(state)}
    if not isinstance(state, dict):
        raise WeightsError(f"{src}: expected a state dict of tensors, found a {type(state).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{src}: expected a flat state dict of tensors, but key {key!r} holds a {type(value).__name__}"
            )
        tensor = value.detach()
        if tensor.numel():
            # safetensors refuses tensors that share memory (tied weights); give each its own.
            storage = tensor.untyped_storage().data_ptr()
            if storage in seen_storages:
                tensor = tensor.clone()
            else:
                seen_storages.add(storage)
        tensors[key] = tensor.contiguous()
    return save_whole(tensors, dst, metadata)


def save_whole(tensors: dict[str, torch.Tensor], dst: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a converted safetensors file under a temporary name and move it into place, so
    `dst` is either absent or complete."""
    from safetensors.torch import save_file

    dst.parent.mkdir(parents=True, exist_ok=True)
    temporary = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata={"format": "pt", **(metadata or {})})
        os.replace(temporary, dst)
    except OSError as exc:
        raise WeightsError(f"{dst}: cannot write the converted file: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return dst


def _is_tensor_pair(value: object) -> bool:
    import torch

    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, torch.Tensor) for v in value)
        and value[0].shape == value[1].shape
    )


def _load_pickled_tensors(src: Path) -> Any:
    import pickle

    import torch

    try:
        try:
            return torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Files from torch's legacy (non-zip) format cannot be memory-mapped.
            return torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{src}: no such file") from None
    except pickle.UnpicklingError as exc:
        weights = _training_checkpoint_weights(src)
        if weights is not None:
            return weights
        raise WeightsError(
            f"{src}: refused to load: the file is not a plain tensor checkpoint ({unpickling_reason(exc)});"
            " only pickles of tensors are read, and nothing in them is executed"
        ) from None
    except Exception as exc:  # a damaged file can fail inside the unpickler in many ways
        raise WeightsError(f"{src}: not a readable PyTorch checkpoint ({first_line(exc)})") from None


def _training_checkpoint_weights(src: Path) -> dict[str, dict[Any, torch.Tensor]] | None:
    """{"state_dict": tensors} of a training checkpoint (a Lightning .ckpt, say) whose other
    entries pickle objects that weights_only refuses, read without running any of its code;
    None when the file is anything else."""
    import torch

    from .tensor_pickle import read_without_code

    try:
        tree = read_without_code(src)
    except ValueError:
        return None
    state = tree.get("state_dict") if isinstance(tree, dict) else None
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return {"state_dict": state}
    return None


def unpickling_reason(exc: Exception) -> str:
    # torch's message is long; its "WeightsUnpickler error:" part says what was refused.
    text = " ".join(str(exc).split())
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|$)", text)
    return match.group(1) if match else first_line(exc)
