"""Reading the tensors of a PyTorch zip checkpoint whose pickle also holds objects that
`torch.load(weights_only=True)` refuses (a training checkpoint's hyper-parameters, say),
without running any of its code.

The unpickler below resolves only what rebuilds tensors (storages by dtype, the tensor and
parameter rebuild functions, OrderedDict); every other global becomes `Opaque`, an inert
placeholder whose construction ignores its arguments. No function named by the file is ever
called, so nothing in it runs; the tensors come back, the objects do not.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class Opaque:
    """Stands for any object the checkpoint pickled: built from nothing, holding nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Opaque:
        return Opaque()


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: torch.Tensor, *rest: Any) -> torch.Tensor:
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool"):
            return getattr(torch, name)
        return Opaque

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else getattr(storage_type, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"storage {key} has no known dtype")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def read_without_code(path: str | Path) -> Any:
    """The checkpoint's pickled tree with tensors rebuilt and every other object an `Opaque`.
    Raises ValueError for files that are not PyTorch zip checkpoints."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"not a PyTorch zip checkpoint ({exc})") from None
    with archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError("not a PyTorch zip checkpoint (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            return _TensorOnlyUnpickler(archive.read(pickles[0]), archive, prefix).load()
        except Exception as exc:  # noqa: BLE001 - a damaged or unusual pickle, in one line
            raise ValueError(f"cannot read its tensors ({type(exc).__name__}: {exc})") from None
