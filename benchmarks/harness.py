"""What the benchmark scripts share: where the repository and its small models are, networks
and checkpoints with random weights, timing loops, the machine's description, markdown tables
and the command-line options they have in common.

The scripts run as `python benchmarks/NAME.py`, so this folder is on sys.path and they import
this module as `harness`. What the tests' helpers already have (the tiny U-Net settings, the CPU
stand-in for CUDA graph capture, where models/ is) is imported from tests/helpers, as `helpers`
like the tests import it (this module puts tests/ on sys.path once), and offered here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from glidecli.render.session import DTYPES  # fp32, fp16, bf16: the --dtype choices

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.append(str(REPO_ROOT / "tests"))

# What the tests already have, from tests/helpers: the repository's models/ folder, the tiny
# U-Net settings and the CPU stand-in for CUDA graph capture.
from helpers.graphs import ReplayingBackend as ReplayingBackend  # noqa: E402
from helpers.paths import MODELS as MODELS_DIR  # noqa: E402
from helpers.tiny import tiny_unet_config as tiny_unet_config  # noqa: E402

MODELS = MODELS_DIR / "weights.toml"  # the small shapes models' manifest
PROMPT = "a corgi wearing a red hat"  # the prompt of the runs on random full-size weights
GiB = 2**30


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds the tables alone."""
    print(message, file=sys.stderr, flush=True)


# --- the command line ---------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    """The integers of a comma-separated list such as 1,8,32 (an argparse type)."""
    return [int(part) for part in text.split(",") if part.strip()]


def add_threads_option(parser: argparse.ArgumentParser, default: int | None = None,
                       help_text: str = "torch.set_num_threads (default: torch's choice)") -> None:
    parser.add_argument("--threads", type=int, default=default, help=help_text)


def add_dtype_option(parser: argparse.ArgumentParser, default: str | None = "fp32", help_text: str | None = None) -> None:
    """--dtype, one of DTYPES (fp32, fp16, bf16)."""
    parser.add_argument("--dtype", default=default, choices=DTYPES, help=help_text)


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads, when the command line names a number."""
    if threads:
        torch.set_num_threads(threads)


# --- timing -----------------------------------------------------------------------------------


def sync(device: str | torch.device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_calls(step: Callable[[], object], device: str | torch.device, warmups: int = 1, repeats: int = 3,
               max_seconds: float = float("inf")) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds of each timed call of `step()`, after `warmups` untimed
    ones, the GPU synchronized around each call, gradients off (as the samplers run). Stops
    repeating once the timed calls took `max_seconds` in all."""
    times: list[float] = []
    cpu_times: list[float] = []
    with torch.no_grad():
        for i in range(warmups + repeats):
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            sync(device)
            if i >= warmups:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
                if sum(times) >= max_seconds:
                    break
    return times, cpu_times


def median_ms(step: Callable[[], object], device: str | torch.device, repeats: int, warmups: int = 1) -> float:
    """Median milliseconds of one call of `step()` (each call synchronized on its own)."""
    return 1000 * statistics.median(time_calls(step, device, warmups, repeats)[0])


def back_to_back_ms(step: Callable[[], object], device: str | torch.device, repeats: int, warmups: int = 3) -> float:
    """Mean milliseconds per call over `repeats` calls queued back to back (one
    synchronization at each end: the GPU's launches overlap its work, as in a sampling loop)."""
    for _ in range(warmups):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    return (time.perf_counter() - started) / repeats * 1000


def peak_memory_gib(device: str | torch.device) -> float:
    """GPU: torch's peak allocated memory; CPU: the process's peak RSS (monotonic over a run)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# --- the machine --------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as in "0.52, 1.10, 1.31"."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def gpu_summary(index: int = 0) -> str:
    """The GPU's name, memory and CUDA version, as in "NVIDIA H200 (140 GiB, CUDA 13.0)"."""
    props = torch.cuda.get_device_properties(index)
    return f"{props.name} ({props.total_memory / GiB:.0f} GiB, CUDA {torch.version.cuda})"


def machine_description(devices: Sequence[str]) -> list[str]:
    """Lines on the CPU (and the GPU when `devices` has cuda), torch and the load average."""
    lines = [
        f"CPU: {cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}, "
        f"Python {platform.python_version()}",
    ]
    if "cuda" in devices:
        lines.append(f"GPU: {gpu_summary()}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
                     f"TF32 conv {torch.backends.cudnn.allow_tf32}")
    if hasattr(os, "getloadavg"):
        lines.append(f"load average at start: {load_average()}"
                     f" (on {os.cpu_count()} cores: anything above ~0 means other processes share the CPU)")
    return lines


def matmul_peak(device: str, dtype: torch.dtype, tries: int) -> float:
    """Best GFLOP/s of torch.mm on large square matrices (the ceiling the networks can reach)."""
    n = matmul_side(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = min(time_calls(lambda: torch.mm(a, b), device, warmups=0, repeats=tries)[0])
    return 2 * n**3 / best / 1e9


def matmul_side(device: str) -> int:
    return 4096 if device == "cpu" else 8192


# --- markdown tables ------------------------------------------------------------------------------


def md_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table_header(columns: Sequence[str]) -> list[str]:
    """A markdown table's header line and its rule."""
    return [md_row(columns), "|" + "---|" * len(columns)]


def print_header(columns: Sequence[str], flush: bool = False) -> None:
    print("\n".join(table_header(columns)), flush=flush)


# --- networks and checkpoints with random weights ----------------------------------------------------


def unet_arch(kind: str, scale: str = "full"):
    """A U-Net's full-size architecture, or at `scale="tiny"` the same image sizes and pipeline
    with a sliver of the compute (for checking a script)."""
    from glidecli.nets.config import unet_defaults

    arch = unet_defaults(kind)
    if scale == "tiny":
        arch = dataclasses.replace(arch, model_channels=32, num_res_blocks=1, num_head_channels=32, xf_width=64,
                                   xf_layers=1, xf_heads=2)
    return arch


def random_network(kind: str, arch=None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   fp32_norms: bool = True) -> torch.nn.Module:
    """A network with random weights (seed 0), full size unless `arch` says otherwise, in eval
    mode without gradients. Its weights are in `dtype`, the normalization parameters in float32
    when `fp32_norms` (as loading keeps them). On the meta device the weights stay unset."""
    from glidecli.nets.checkpoint import build_network, fp32_parameter_names, random_init_

    with torch.device(device):
        model = build_network(kind, arch if arch else unet_arch(kind))
    if torch.device(device).type != "meta":
        random_init_(model, seed=0)
    keep = fp32_parameter_names(model) if fp32_norms else set()
    for name, param in model.named_parameters():
        param.data = param.data.to(torch.float32 if name in keep else dtype)
    return model.eval().requires_grad_(False)


def random_checkpoints(work: Path, scale: str) -> Path:
    """Random base and upsampler checkpoints and a manifest for them (with a tokenizer), written
    once into `work` (tiny ones into work/tiny) and kept for reuse: the manifest's path."""
    from glidecli.nets.checkpoint import build_network, random_init_, save_network
    from glidecli.train.dataset import build_caption_tokenizer

    folder = work if scale == "full" else work / scale
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "weights.toml"
    if manifest.is_file():
        return manifest
    tables = []
    for kind in ("base", "upsample"):
        log(f"writing a random {scale}-size {kind} checkpoint to {folder} ...")
        arch = unet_arch(kind, scale)
        save_network(random_init_(build_network(kind, arch), seed=0), folder / f"{kind}.safetensors")
        changed = {k: v for k, v in dataclasses.asdict(arch).items() if v != dataclasses.asdict(unet_arch(kind, "full"))[k]}
        tables.append(f'[models.{kind}]\nkind = "{kind}"\npath = "{kind}.safetensors"\ntokenizer = "bench"\n'
                      + (f"[models.{kind}.arch]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in changed.items()) if changed else ""))
    # The prompt's tokens cost nothing measurable; any byte-level BPE will do.
    build_caption_tokenizer([PROMPT, "a watercolor of a lighthouse"], folder / "tokenizer.json")
    manifest.write_text("version = 1\n\n" + "\n".join(tables) + '\n[tokenizers.bench]\npath = "tokenizer.json"\n')
    return manifest


# --- render sessions and their pictures ------------------------------------------------------------


def offline_session(manifest: Path = MODELS, device: str = "cpu", dtype: str = "fp32"):
    """A render session on a manifest's models, offline: by default the small shapes models of
    models/ on the CPU in fp32."""
    from glidecli.files.manifest import load_manifest
    from glidecli.render.session import Session

    return Session(load_manifest(manifest), device=device, dtype=dtype, offline=True)


def rgb_pixels(image, dtype=np.float64) -> np.ndarray:
    """A PIL picture's RGB values as an array (height, width, 3)."""
    return np.asarray(image.convert("RGB"), dtype=dtype)
