"""Where and how GLIDE's networks run: the device, the dtype, and a `Session` that loads
each model of a manifest (and the tokenizers) the first time it is needed, once."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..diffusion.samplers import StepInfo
from ..files.fetch import fetch_entry, recorded_sha256
from ..files.manifest import DEFAULT_TOKENIZER, Manifest, ManifestError, ModelEntry
from ..nets.checkpoint import load_network
from ..nets.clip import NoisedClip
from ..nets.config import ClipConfig, UNetConfig
from ..nets.kinds import ModelKind
from ..nets.tokenizer import ClipTokenizer, GlideTokenizer
from ..nets.unet import Text2ImUNet
from .accel import CudaGraphs, NetworkCall, network_call
from .adapters import AdapterUse, SessionAdapters
from .defaults import DEVICES
from .offload import Offload, OffloadError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

log = logging.getLogger("glidecli")


class RenderError(Exception):
    """A render that cannot start (device absent, models that do not fit together); one line."""


# --- device and dtype ---------------------------------------------------------------------


DEVICE_ENV = "GLIDE_DEVICE"


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is $GLIDE_DEVICE when set (a machine's or a test run's standing choice), else
    CUDA, then Apple's MPS, then the CPU; an explicit device must exist."""
    if name not in DEVICES:
        raise RenderError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    standing = os.environ.get(DEVICE_ENV, "").strip()
    if name == "auto" and standing:
        if standing not in DEVICES:
            raise RenderError(f"{DEVICE_ENV}={standing!r} is not a device; choose one of {', '.join(DEVICES)}")
        name = standing
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise RenderError("device cuda is not available: PyTorch sees no CUDA GPU on this machine (try --device cpu)")
    if name == "mps" and not mps:
        raise RenderError("device mps is not available: PyTorch has no Apple MPS backend here (try --device cpu)")
    return torch.device(name)


DTYPE_ENV = "GLIDE_DTYPE"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is $GLIDE_DTYPE when set, else fp16 on GPUs and, on the CPU, bf16 where the
    processor computes it natively (render/cpu.py) and fp32 elsewhere. GLIDE's networks were
    trained in fp16, and on an H200 fp16 was both faster than bf16 (0.99 s against 1.59 s per
    batch-1 picture) and closer to fp32 (at most 6 levels against 40 on the shapes model);
    on a CPU there is no fp16 arithmetic, and native bf16 is the fast one. The norms stay in
    fp32 either way (nets/layers.py)."""
    standing = os.environ.get(DTYPE_ENV, "").strip()
    if name == "auto" and standing:
        if standing not in DTYPES and standing != "auto":
            raise RenderError(f"{DTYPE_ENV}={standing!r} is not a dtype; choose one of auto, {', '.join(DTYPES)}")
        name = standing
    if name == "auto":
        if device.type in ("cuda", "mps"):
            return torch.float16
        from .cpu import native_bf16

        return torch.bfloat16 if native_bf16() else torch.float32
    if name not in DTYPES:
        raise RenderError(f"unknown dtype {name!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


# --- progress -------------------------------------------------------------------------------


class Reporter:
    """Receives warnings and sampling progress. This default logs warnings and shows no
    progress; the CLI passes one that draws progress bars."""

    def warn(self, message: str) -> None:
        log.warning(message)

    def step(self, stage: str, info: StepInfo) -> None:
        """Called after every sampling step of `stage` (the model's kind)."""


# --- models ---------------------------------------------------------------------------------


def model_entry(manifest: Manifest, name: str, kind: str) -> ModelEntry:
    """The manifest entry `name`, which must be a model of `kind`."""
    entry = manifest.model(name)
    if entry.kind != kind:
        raise ManifestError(f"{manifest.path}: model {name!r} is of kind {entry.kind}, but this needs one of kind {kind}")
    return entry


class Session:
    """Models from one manifest on one device, each loaded on first use and kept.

    `sampling_call(name, kind)` is what sampling calls: on CUDA each network's calls are replayed as
    CUDA graphs (`cuda_graphs`, default on CUDA), with `compile` they are torch.compile'd
    (render/accel.py). `note` receives one-line notes (a graph capture given up, compile times)."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        offline: bool | None = None,
        show_progress: bool = False,
        tokenizer: str | None = None,
        compile: bool = False,
        cuda_graphs: bool | None = None,
        note: Callable[[str], None] | None = None,
        offload: str = "none",
    ):
        self.manifest = manifest
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, self.device)
        self.offline = offline
        self.show_progress = show_progress
        self.tokenizer_name = tokenizer  # None: each model's own (its entry's `tokenizer`)
        try:
            self.offload = Offload(offload, self.device)
        except OffloadError as exc:
            raise RenderError(str(exc)) from None
        if compile and self.offload.enabled:
            raise RenderError(
                f"--compile and --offload {offload} do not go together: compiled networks keep their weights on the"
                " device; choose one"
            )
        self.compile = compile
        self.note = note or log.warning
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and self.offload.enabled:
            # A graph replays the addresses its weights had when captured; offloaded weights
            # come back elsewhere, so offloaded networks run eagerly.
            self.cuda_graphs = False
            self.note(f"--offload {offload}: CUDA graphs are off (offloaded weights change address between calls)")
        self._graphs = CudaGraphs() if self.cuda_graphs else None  # one memory pool for all graphs
        self._networks: dict[str, Any] = {}
        self._calls: dict[str, NetworkCall] = {}
        self._paths: dict[str, Path] = {}
        self._tokenizers: dict[tuple[str, int], GlideTokenizer] = {}
        self._clip_tokenizers: dict[int, ClipTokenizer] = {}
        self.adapters = SessionAdapters()

    def use_adapters(self, uses: Sequence[AdapterUse]) -> None:
        """Wear exactly these LoRA adapters from now on (none: the networks as loaded): on the
        networks loaded now, and on the others when they load. A network whose adapters
        change gets new sampling calls (compiled or graphed calls hold its old layers)."""
        self.adapters.want(uses)
        for name, network in self._networks.items():
            self._sync_adapters(name, network)

    def _sync_adapters(self, name: str, network: Any) -> None:
        if self.adapters.sync(name, network, self.device):
            for key in [key for key in self._calls if key == name or key.startswith(name + ".")]:
                del self._calls[key]

    def entry(self, name: str, kind: str) -> ModelEntry:
        return model_entry(self.manifest, name, kind)

    def _load(self, name: str, kind: str) -> Any:
        if name not in self._networks:
            entry = self.entry(name, kind)
            path = fetch_entry(entry, offline=self.offline, progress=self.show_progress)
            self._paths[name] = path
            network = load_network(kind, entry.arch, path, self.offload.load_device, self.dtype)
            self._networks[name] = self.offload.manage(name, network)
            self._sync_adapters(name, self._networks[name])
        self.offload.activate(name)  # handed out to run: on the device (its calls also bring it)
        return self._networks[name]

    def peak_memory(self) -> int | None:
        """The most bytes the device's allocator has held so far (CUDA only, else None)."""
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None

    def network(self, name: str, kind: str) -> Any:
        """The manifest's model `name` (of `kind`), loaded on first use."""
        return self._load(name, kind)

    def loaded_models(self) -> list[str]:
        """The manifest names of the networks loaded so far."""
        return sorted(self._networks)

    def weights_path(self, name: str, kind: str) -> Path:
        """The local (converted) file of a manifest entry, fetched on first use."""
        if name not in self._paths:
            entry = self.entry(name, kind)
            self._paths[name] = fetch_entry(entry, offline=self.offline, progress=self.show_progress)
        return self._paths[name]

    def unet(self, name: str, kind: str) -> Text2ImUNet:
        network: Text2ImUNet = self._load(name, kind)
        return network

    def sampling_call(self, name: str, kind: str, part: str | None = None) -> NetworkCall:
        """The callable sampling runs for network `name` (a U-Net, or unCLIP's prior):
        `call(x, t, text, **images)`. `part` names a sub-network to call instead, e.g.
        "model_last_step" of unCLIP's super-resolution pair; each gets graphs of its own."""
        key = f"{name}.{part}" if part else name
        if key not in self._calls:
            network = self._load(name, kind)
            self._calls[key] = network_call(
                getattr(network, part) if part else network, self.device, compile=self.compile,
                cuda_graphs=self.cuda_graphs, name=key, note=self.note, backend=self._graphs,
            )
        return self._calls[key]

    def clip(self, image_model: str, text_model: str) -> NoisedClip:
        return NoisedClip(self._load(image_model, ModelKind.CLIP_IMAGE), self._load(text_model, ModelKind.CLIP_TEXT))

    def tokenizer(self, text_ctx: int, model: str | None = None) -> GlideTokenizer:
        """The prompt tokenizer of `model` (its entry's `tokenizer`, GPT-2's by default),
        padded to `text_ctx` (the model's context length)."""
        name = self.tokenizer_name or (self.manifest.model(model).tokenizer if model else DEFAULT_TOKENIZER)
        if (name, text_ctx) not in self._tokenizers:
            entry = self.manifest.tokenizer(name)
            path = fetch_entry(entry, offline=self.offline, progress=self.show_progress)
            tokenizer = GlideTokenizer.from_file(path, text_ctx=text_ctx)
            n_vocab = self._vocabulary_size(model) if model else None
            if n_vocab is not None and tokenizer.max_token >= n_vocab:
                raise RenderError(
                    f"tokenizer {name!r} makes ids up to {tokenizer.max_token}, but model {model!r} knows"
                    f" only {n_vocab} (n_vocab); give the model the tokenizer it was trained with"
                )
            self._tokenizers[(name, text_ctx)] = tokenizer
        return self._tokenizers[(name, text_ctx)]

    def _vocabulary_size(self, model: str) -> int:
        """n_vocab of `model`'s text encoder; only GLIDE U-Nets and CLIP's text tower read tokens."""
        arch = self.manifest.model(model).arch
        if not isinstance(arch, UNetConfig | ClipConfig):
            raise TypeError(f"model {model!r} ({type(arch).__name__}) has no text vocabulary (n_vocab)")
        return arch.n_vocab

    def clip_tokenizer(self, text_ctx: int) -> ClipTokenizer:
        if text_ctx not in self._clip_tokenizers:
            self._clip_tokenizers[text_ctx] = ClipTokenizer(text_ctx)
        return self._clip_tokenizers[text_ctx]

    def model_hash(self, name: str) -> str | None:
        """The sha256 of the model's file as distributed, when known without hashing it."""
        entry = self.manifest.model(name)
        if entry.sha256:
            return entry.sha256
        path = self._paths.get(name)
        return recorded_sha256(path) if path is not None else None
