"""Build GLIDE's networks from typed settings and load safetensors checkpoints into them.

Loading builds the network on the `meta` device and assigns the file's tensors directly,
read one at a time straight onto the target device in their final dtype, so a checkpoint is
never held twice in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from .clip import ClipImageEncoder, ClipTextEncoder
from .config import ClipConfig, UNetConfig
from .kinds import CLIP_KINDS, UNCLIP_KINDS, UNET_KINDS, ModelKind
from .layers import NORM_TYPES
from .unclip import ImprovedSuperRes, build_unclip_network, materialize_buffers, strip_prefix
from .unclip_config import ArchConfig
from .unet import Text2ImUNet

Network = Text2ImUNet | ClipImageEncoder | ClipTextEncoder | nn.Module


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit the network; the message is one line."""


def build_network(kind: str, arch: ArchConfig | None) -> Network:
    """A network of the given kind, on the current default device, weights uninitialized; a
    TypeError when `arch` is not the kind's settings (None: a clip-stats entry's, no network's)."""
    if kind in UNET_KINDS:
        if not isinstance(arch, UNetConfig):
            raise TypeError(f"kind '{kind}' needs a UNetConfig")
        if arch.kind != kind:
            raise CheckpointError(f"settings describe a {arch.kind} model, not {kind}")
        return _built(kind, lambda: Text2ImUNet(arch))
    if kind in CLIP_KINDS:
        if not isinstance(arch, ClipConfig):
            raise TypeError(f"kind '{kind}' needs a ClipConfig")
        return _built(kind, lambda: ClipImageEncoder(arch) if kind == ModelKind.CLIP_IMAGE else ClipTextEncoder(arch))
    if kind in UNCLIP_KINDS and kind != ModelKind.CLIP_STATS:
        return _built(kind, lambda: build_unclip_network(kind, arch))
    known = UNET_KINDS + CLIP_KINDS + tuple(k for k in UNCLIP_KINDS if k != ModelKind.CLIP_STATS)
    raise CheckpointError(f"unknown model kind '{kind}'; known: {', '.join(known)}")


def _built(kind: str, build: Callable[[], Network]) -> Network:
    """build(), with the errors of arch settings no network can have (channels that the
    group norms cannot split, ...) as one line: the manifest's checks catch the rest."""
    try:
        return build()
    except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as exc:
        raise CheckpointError(f"the arch settings make no {kind} network: {' '.join(str(exc).split())}") from None


# The threads building networks on meta right now, and the initializers set aside meanwhile.
_skipping_threads: set[int] = set()
_saved_initializers: dict[str, Callable[..., torch.Tensor]] = {}
_skipping_lock = threading.Lock()


@contextlib.contextmanager
def _skipping_init() -> Iterator[None]:
    """Modules built on `meta` for loading need no initial values, and PyTorch's meta
    `normal_` (nn.Embedding's init) first imports sympy and some 900 modules: seconds of
    start-up. The in-place initializers of torch.nn.init do nothing meanwhile, for this
    thread alone: another thread (a server's worker, a training beside it) that builds a
    network for real keeps PyTorch's initial values."""
    from torch.nn import init

    me = threading.get_ident()
    with _skipping_lock:
        if not _skipping_threads:
            names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
            _saved_initializers.update({name: getattr(init, name) for name in names})
            for name, original in _saved_initializers.items():
                setattr(init, name, _unless_skipping(original))
        _skipping_threads.add(me)
    try:
        yield
    finally:
        with _skipping_lock:
            _skipping_threads.discard(me)
            if not _skipping_threads:
                for name, original in _saved_initializers.items():
                    setattr(init, name, original)
                _saved_initializers.clear()


def _unless_skipping(initializer: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def initialize(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if threading.get_ident() in _skipping_threads:
            return tensor
        return initializer(tensor, *args, **kwargs)

    return initialize


def build_on_meta(kind: str, arch: ArchConfig | None) -> Network:
    """The network of `kind` on the meta device: names and shapes, no memory, no init."""
    with torch.device("meta"), _skipping_init():
        return build_network(kind, arch)


def some_of(keys: list[str], limit: int = 3) -> str:
    """The first few of `keys` and how many more, for one-line messages."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict key and shape matching, with one line naming what is missing, extra or mis-shaped."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    misshaped = sorted(k for k in expected if k in state and tuple(state[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({some_of(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({some_of(unexpected)})")
    if misshaped:
        first = misshaped[0]
        problems.append(
            f"{len(misshaped)} keys with the wrong shape (e.g. {first}: file {list(state[first].shape)}, "
            f"model {list(expected[first])})"
        )
    if problems:
        raise CheckpointError(f"{source} does not fit the configured network: " + "; ".join(problems))


def fp32_parameter_names(model: nn.Module) -> set[str]:
    """Parameters kept in float32 under fp16/bf16 inference: those of normalization layers."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_TYPES) or getattr(module, "keep_fp32", False):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CheckpointError(f"{path} is not a readable safetensors file ({first_line})")


def read_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None


def load_network(
    kind: str,
    arch: ArchConfig | None,
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Network:
    """Build the network for `arch` and load `path` into it, ready for inference (eval, no grad).

    The file is read one tensor at a time, each put on `device` in its final dtype (norms
    fp32, the rest `dtype`) and layout (U-Net convolutions channels-last) before the next is
    read: the peak is the finished network plus one tensor, never a full fp32 copy."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        model = build_on_meta(kind, arch)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    # open_clip's own LayerNorm runs in the weights' dtype, so its norms follow `dtype`.
    keep_fp32 = set() if kind == ModelKind.OPENCLIP else fp32_parameter_names(model)
    channels_last = isinstance(model, (Text2ImUNet, ImprovedSuperRes))  # faster convolutions (oneDNN, cuDNN)
    state = {}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as file:
            names = strip_prefix(kind, {name: name for name in file.keys()})  # the model's name -> the file's
            shapes = {name: torch.empty(file.get_slice(key).get_shape(), device="meta") for name, key in names.items()}
            check_state_dict(model, shapes, str(path))
            for name, key in names.items():
                tensor = file.get_tensor(key).to(torch.float32 if name in keep_fp32 else dtype)
                if channels_last and tensor.dim() == 4:
                    tensor = tensor.contiguous(memory_format=torch.channels_last)
                state[name] = tensor
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None
    model.load_state_dict(state, strict=True, assign=True)
    materialize_buffers(kind, model, device)
    if isinstance(model, (Text2ImUNet, ImprovedSuperRes)):  # channels_last (the checker narrows on isinstance only)
        model.use_channels_last()  # a no-op for the weights read above, kept for any the file lacks
    return model.eval().requires_grad_(False)


def save_network(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the network's weights as safetensors, atomically (temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def random_init_(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Fill every weight with small random values (normalization gains near 1): for tests and
    for training a fresh model. Deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    gains = {n for n in fp32_parameter_names(model) if n.endswith((".weight", ".g"))}
    with torch.no_grad():
        for name, param in model.named_parameters():
            values = torch.randn(param.shape, generator=generator, device="cpu") * std
            if name in gains:
                values += 1.0
            param.copy_(values)
    return model


def read_clip_stats(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The CLIP image-embedding mean and std from a converted stats file (keys "0" and "1",
    from the release's pickled (mean, std) pair)."""
    state = read_safetensors(path)
    if set(state) != {"0", "1"} or state["0"].shape != state["1"].shape:
        raise CheckpointError(f"{path} does not hold a CLIP stats pair (mean, std of one shape)")
    return state["0"].float().reshape(-1), state["1"].float().reshape(-1)
