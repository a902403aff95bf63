"""How a stage's network call runs: eagerly, replayed as a CUDA graph, or compiled.

The samplers stay pure functions over `denoise(x, i)`; what changes is the callable that
`pipeline.sample_stage` hands to the guidance wrapper in place of the network, with the
network's own signature `network(x, timesteps, text, **images)`:

- `GraphedNetwork` (CUDA's default): the first call for a set of input shapes warms up and
  captures the network's kernels into a CUDA graph reading static input buffers; later calls
  copy their inputs into those buffers and replay the graph. At batch 1 most of a network
  call is kernel launches (issue 14: 31 ms eager, 7.4 ms replayed). The text embedding and
  conditioning images are the same tensors for a whole batch, so they are copied once per
  batch; x and t every step. Replay runs the very kernels eager execution runs, on the same
  values, so results equal eager bit for bit; where capture fails it notes so once and runs
  eagerly.
  The text object is any NamedTuple or dataclass of tensors (GLIDE's `TextEmbedding`, unCLIP's
  `ClipText` and mask-carrying decoder text): each tensor field gets a buffer and the graph
  rebuilds the object with its own type, None fields kept None, so replay sees exactly the
  inputs an eager call would.
- `CompiledNetwork` (`--compile`): torch.compile (inductor, static shapes), its cache kept
  between runs in `compile_cache_dir()`, the compile time of each new shape noted once.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from ..files.fetch import cache_dir

NetworkCall = Callable[..., Tensor]  # network(x, timesteps, text=None, **images) -> output
Signature = tuple[object, ...]  # a call's text type, then each input's name, shape, dtype, strides and device
Note = Callable[[str], None]


class GraphBackend(Protocol):
    def capture(self, run: Callable[[], Tensor]) -> tuple[Callable[[], None], Tensor]:
        """Capture `run()` (which reads fixed input buffers) and return (replay, output):
        after `replay()`, `output` holds what `run()` would return for the buffers' values."""


class CudaGraphs:
    """torch.cuda.CUDAGraph capture. The graphs of one backend share one memory pool, so
    several shapes and networks cost about the largest one's activations: safe here because
    GraphedNetwork copies each output out right after its replay, before any other graph
    (whose intermediates may overlap that output) runs."""

    def __init__(self) -> None:
        self._pool: Any = None

    def capture(self, run: Callable[[], Tensor]) -> tuple[Callable[[], None], Tensor]:
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch leaves Stream.__new__ unannotated
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run()  # warm-up outside the capture: cuDNN/cuBLAS pick algorithms, inductor compiles
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = run()
        return graph.replay, output


def _version(tensor: Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # inference-mode tensors keep no version counter
        return None


class _Captured:
    """One captured graph: static input buffers (allocated outside the graph's pool) and
    which tensors they hold now, so an unchanged text embedding is not copied again."""

    def __init__(self, inputs: dict[str, Tensor]):
        self.buffers = {name: torch.empty_like(value) for name, value in inputs.items()}
        self._held: dict[str, tuple[Tensor, int | None]] = {}
        self.copies = 0  # input tensors copied in so far (tests read it)
        self.replay: Callable[[], None] = lambda: None
        self.output: Tensor  # set by GraphedNetwork._capture; only captured graphs are kept

    def load(self, inputs: dict[str, Tensor]) -> None:
        for name, value in inputs.items():
            held = self._held.get(name)
            version = _version(value)
            if held is not None and held[0] is value and version is not None and held[1] == version:
                continue
            self.buffers[name].copy_(value)
            self._held[name] = (value, version)
            self.copies += 1


def _text_fields(text: Any) -> dict[str, Any]:
    """The fields of a text object, in order: a NamedTuple's or a dataclass's."""
    if isinstance(text, tuple) and hasattr(text, "_fields"):
        return dict(zip(text._fields, text))
    if dataclasses.is_dataclass(text) and not isinstance(text, type):
        return {field.name: getattr(text, field.name) for field in dataclasses.fields(text)}
    raise TypeError(f"a text input of type {type(text).__name__} is neither a NamedTuple nor a dataclass")


TEXT = "text."  # prefix of the text object's fields among the flattened inputs


def _flatten(x: Tensor, timesteps: Tensor, text: Any, images: dict[str, Tensor | None]) -> dict[str, Tensor]:
    """Every tensor a call reads, by name: x, timesteps, `text.<field>` for each tensor field
    of the text object (None fields are left out), then the conditioning images."""
    inputs = {"x": x, "timesteps": timesteps}
    if text is not None:
        for name, value in _text_fields(text).items():
            if isinstance(value, Tensor):
                inputs[TEXT + name] = value
            elif value is not None:
                raise TypeError(f"text field {name!r} is a {type(value).__name__}, not a tensor")
    inputs.update((name, value) for name, value in images.items() if value is not None)
    return inputs


def _text_rebuilder(text: Any) -> Callable[[dict[str, Tensor]], Any]:
    """A function making an object of `text`'s type from the buffers (its None fields stay
    None); it keeps the type and field names only, not `text`'s tensors."""
    if text is None:
        return lambda buffers: None
    kind, names = type(text), tuple(_text_fields(text))
    return lambda buffers: kind(**{name: buffers.get(TEXT + name) for name in names})


def _signature(inputs: dict[str, Tensor], text: Any = None) -> Signature:
    shapes = tuple((name, tuple(v.shape), v.dtype, v.stride(), str(v.device)) for name, v in inputs.items())
    return (type(text).__qualname__, *shapes)


class GraphedNetwork:
    """`network` with its calls replayed as graphs, one per input signature (shapes, dtypes,
    strides). Calls with autograd on (CLIP guidance's gradient) run eagerly."""

    def __init__(self, network: NetworkCall, backend: GraphBackend, *, name: str = "network", note: Note | None = None):
        self.network = network
        self.backend = backend
        self.name = name
        self.note = note or (lambda message: None)
        self.graphs: dict[Signature, _Captured] = {}
        self.failed: str | None = None  # why capture was given up, once it was

    def __call__(self, x: Tensor, timesteps: Tensor, text: Any = None, **images: Tensor | None) -> Tensor:
        if self.failed is not None or torch.is_grad_enabled():
            return self.network(x, timesteps, text, **images)
        try:
            inputs = _flatten(x, timesteps, text, images)
        except TypeError as error:  # not made of tensors: it cannot live in static buffers
            self._give_up(str(error))
            return self.network(x, timesteps, text, **images)
        key = _signature(inputs, text)
        captured = self.graphs.get(key)
        if captured is None:
            captured = self._capture(inputs, text, list(images))
            if captured is None:
                return self.network(x, timesteps, text, **images)
            self.graphs[key] = captured
        captured.load(inputs)
        captured.replay()
        # A copy: the next replay (of this or another graph in the pool) rewrites the output.
        return captured.output.clone()

    def _capture(self, inputs: dict[str, Tensor], text: Any, image_names: list[str]) -> _Captured | None:
        captured = _Captured(inputs)
        captured.load(inputs)
        buffers = captured.buffers
        rebuild_text = _text_rebuilder(text)

        def run() -> Tensor:
            images = {name: buffers[name] for name in image_names if name in buffers}
            return self.network(buffers["x"], buffers["timesteps"], rebuild_text(buffers), **images)

        try:
            captured.replay, captured.output = self.backend.capture(run)
        except Exception as error:  # noqa: BLE001 - any failure means: run this network eagerly
            self._give_up((str(error).strip().splitlines() or [type(error).__name__])[0])
            return None
        return captured

    def _give_up(self, why: str) -> None:
        self.failed = why
        self.note(f"CUDA graph capture of {self.name} failed ({why}); running it without graphs")


# --- torch.compile ------------------------------------------------------------------------


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled kernels between runs: $TORCHINDUCTOR_CACHE_DIR when set,
    else `inductor/` in glidecli's cache (next to the converted weights)."""
    explicit = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(explicit) if explicit else cache_dir() / "inductor"


class CompiledNetwork:
    """torch.compile(network) with static shapes; the first call of each new input signature
    compiles (or loads from the cache) and is timed and noted once."""

    def __init__(self, network: torch.nn.Module, *, name: str = "network", note: Note | None = None):
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
        self.network = network
        self.compiled: NetworkCall = torch.compile(network, dynamic=False)
        self.name = name
        self.note = note or (lambda message: None)
        self.compile_seconds: dict[Signature, float] = {}

    def __call__(self, x: Tensor, timesteps: Tensor, text: Any = None, **images: Tensor | None) -> Tensor:
        key = _signature(_flatten(x, timesteps, text, images), text)
        if key in self.compile_seconds:
            return self.compiled(x, timesteps, text, **images)
        started = time.perf_counter()
        output = self.compiled(x, timesteps, text, **images)
        if output.is_cuda:
            torch.cuda.synchronize(output.device)
        seconds = self.compile_seconds[key] = time.perf_counter() - started
        self.note(
            f"compiled {self.name} for a network batch of {x.shape[0]} in {seconds:.1f} s"
            f" (kept in {os.environ['TORCHINDUCTOR_CACHE_DIR']} for later runs)"
        )
        return output


def network_call(
    network: torch.nn.Module,
    device: torch.device,
    *,
    compile: bool = False,
    cuda_graphs: bool | None = None,
    name: str = "network",
    note: Note | None = None,
    backend: GraphBackend | None = None,
) -> NetworkCall:
    """The callable that samples `network` on `device`: compiled with `compile`, replayed as
    CUDA graphs when `cuda_graphs` (default: on CUDA), else the network itself."""
    call: NetworkCall = CompiledNetwork(network, name=name, note=note) if compile else network
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda"
    if cuda_graphs:
        call = GraphedNetwork(call, backend or CudaGraphs(), name=name, note=note)
    return call
