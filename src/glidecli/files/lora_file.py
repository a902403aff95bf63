"""LoRA adapters on disk in Hugging Face PEFT's format: a folder with `adapter_config.json`
(PEFT's LoraConfig as JSON) and `adapter_model.safetensors` (the lora_A/lora_B tensors under
PEFT's keys). PEFT's own `LoraConfig.from_pretrained` and `set_peft_model_state_dict` read what
`write_adapter` writes, and adapters PEFT saved load here; reading needs only safetensors and
json (PEFT itself is not needed). Pickled adapters (`adapter_model.bin`) are refused: loading
a pickle can run code.

glidecli records the model an adapter was made for in the safetensors metadata (PEFT ignores
it): its manifest name, kind and the sha256 of its weights file, so an adapter is refused on
another model unless the user forces it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..nets.lora import Adapter, AdapterMismatch, adapter_from_state, lora_scaling
from .file_facts import sha256_file
from .lora_names import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from .pngfile import ImageError, write_whole

META_BASE_MODEL = "glidecli.base_model"
META_BASE_KIND = "glidecli.base_kind"
META_BASE_SHA256 = "glidecli.base_sha256"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# LoraConfig settings that change what the tensors mean in ways glidecli does not compute.
_UNSUPPORTED = {"use_dora": "DoRA", "use_qalora": "QA-LoRA", "use_alora": "aLoRA", "fan_in_fan_out": "fan_in_fan_out"}


class AdapterError(Exception):
    """An adapter that cannot be used (missing, corrupt, pickled, of other shapes); one line."""


@dataclass(frozen=True)
class AdapterFile:
    """An adapter's files, read and checked: its config, its tensors' keys and shapes, the
    sha256 of its weights file and the model it records being made for."""

    folder: Path
    config: Mapping[str, Any]
    sha256: str
    shapes: Mapping[str, tuple[int, ...]]
    base_model: str | None = None
    base_kind: str | None = None
    base_sha256: str | None = None

    @property
    def weights_path(self) -> Path:
        return self.folder / ADAPTER_WEIGHTS

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    def load(self) -> Adapter:
        """The adapter's tensors (on the CPU) with each layer's scaling."""
        from safetensors.torch import load_file

        try:
            state = load_file(str(self.weights_path))
        except Exception as error:  # noqa: BLE001 - safetensors' errors vary by version; all mean a bad file
            raise AdapterError(f"{self.weights_path}: not a readable safetensors file ({_one_line(error)})") from None
        try:
            return adapter_from_state(state, self.scaling)
        except AdapterMismatch as error:
            raise AdapterError(f"{self.weights_path}: {error}") from None

    def scaling(self, path: str, rank: int) -> float:
        """PEFT's scaling of the layer `path`: its alpha (alpha_pattern, else lora_alpha) over
        its rank (or the rank's square root with use_rslora)."""
        alpha = _pattern_value(self.config.get("alpha_pattern") or {}, path, self.config.get("lora_alpha", 8))
        return lora_scaling(float(alpha), rank, bool(self.config.get("use_rslora", False)))


def adapter_folder(path: str | Path) -> Path:
    """The folder of the adapter at `path`: the folder itself, or the one holding a given
    adapter_model.safetensors. A pickled file is refused."""
    path = Path(path).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise AdapterError(f"{path}: a pickled adapter ({path.suffix}) can run code when loaded; use its adapter_model.safetensors")
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise AdapterError(f"{path}: not an adapter; give its folder (adapter_config.json + {ADAPTER_WEIGHTS})")
        return path.parent
    if not path.is_dir():
        raise AdapterError(f"{path}: no such adapter file or folder")
    return path


def read_adapter(path: str | Path) -> AdapterFile:
    """Read and check an adapter folder (or its safetensors file), not yet its tensors' values."""
    folder = adapter_folder(path)
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = [p.name for p in folder.glob("adapter_model.*") if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickled:
            raise AdapterError(f"{folder}: only a pickled adapter ({pickled[0]}), which can run code when loaded; convert it to {ADAPTER_WEIGHTS}")
        raise AdapterError(f"{folder}: no {ADAPTER_WEIGHTS}")
    config = _read_config(folder / ADAPTER_CONFIG)
    shapes, metadata = _header(weights)
    for key, shape in shapes.items():
        if key.endswith("lora_A.weight") and shape and shape[0] == 0:
            raise AdapterError(f"{weights}: {key} has rank 0")
    return AdapterFile(
        folder=folder,
        config=config,
        sha256=sha256_file(weights),
        shapes=shapes,
        base_model=metadata.get(META_BASE_MODEL),
        base_kind=metadata.get(META_BASE_KIND),
        base_sha256=metadata.get(META_BASE_SHA256),
    )


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{path.parent}: no {ADAPTER_CONFIG}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterError(f"{path}: not a readable JSON config ({_one_line(error)})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: not a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{path}: a {config.get('peft_type')} adapter, not LoRA")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterError(f"{path}: r (the rank) must be a whole number of 1 or more, not {rank!r}")
    alpha = config.get("lora_alpha", 8)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise AdapterError(f"{path}: lora_alpha must be a number, not {alpha!r}")
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise AdapterError(f"{path}: {what} adapters are not supported (only plain LoRA)")
    if config.get("modules_to_save"):
        raise AdapterError(f"{path}: modules_to_save (whole layers replaced) is not supported, only LoRA's low-rank layers")
    return config


def _header(weights: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """The tensors' shapes and the metadata of a safetensors file, from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as file:
            metadata = dict(file.metadata() or {})
            shapes = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118 - safe_open has no iteration
    except Exception as error:  # noqa: BLE001 - safetensors' errors vary by version; all mean a bad file
        raise AdapterError(f"{weights}: not a readable safetensors file ({_one_line(error)})") from None
    if not shapes:
        raise AdapterError(f"{weights}: holds no tensors")
    return shapes, metadata


def _pattern_value(patterns: Mapping[str, Any], path: str, default: Any) -> Any:
    """PEFT's rank_pattern/alpha_pattern lookup: the first key that matches the end of the
    module path (as a regular expression over whole names)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def write_adapter(
    folder: Path,
    state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    base_model: str,
    base_kind: str,
    base_sha256: str | None,
    overwrite: bool = False,
) -> Path:
    """Write an adapter folder in PEFT's format: `state` under PEFT's keys, `config` the
    LoraConfig's settings glidecli sets (the rest take PEFT's defaults). Each file is written
    whole or not at all."""
    from safetensors.torch import save

    metadata = {"format": "pt", META_BASE_MODEL: base_model, META_BASE_KIND: base_kind}
    if base_sha256:
        metadata[META_BASE_SHA256] = base_sha256
    tensors = {key: tensor.detach().to("cpu").contiguous() for key, tensor in state.items()}
    full_config = {**peft_config_defaults(), **config, "base_model_name_or_path": base_model}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(full_config, indent=2, sort_keys=True) + "\n"
        for name, data in ((ADAPTER_WEIGHTS, sorted_header(save(tensors, metadata))), (ADAPTER_CONFIG, text.encode("utf-8"))):
            write_whole(folder / name, functools.partial(_write_bytes, data), overwrite=overwrite)
    except (ImageError, OSError) as error:
        raise AdapterError(_one_line(error)) from None
    return folder


def sorted_header(blob: bytes) -> bytes:
    """A safetensors file's bytes with its JSON header's keys sorted: the library writes its
    metadata in a per-process random order, and the same adapter should be the same bytes
    (an exact resume's result among them). Offsets are into the data after the header, whose
    length (padded with spaces) stays the same."""
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(text) > length:  # not expected (the library writes compact JSON); keep its bytes
        return blob
    return blob[:8] + text + b" " * (length - len(text)) + blob[8 + length :]


def _write_bytes(data: bytes, file: BinaryIO) -> None:
    file.write(data)


def peft_config_defaults() -> dict[str, Any]:
    """The LoraConfig fields an adapter folder states (PEFT's values for plain LoRA)."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "inference_mode": True,
        "r": 8,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": [],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "lora_bias": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }


def _one_line(error: object) -> str:
    return " ".join(str(error).split())
