"""Whether this CPU computes bf16 natively (AVX512_BF16 or AMX on x86, BF16 on Arm), which
decides `--dtype auto` on the CPU: bf16 where it is native (the base model's guided call ran
1.7x faster in bf16 than in fp32 on a 2-core Zen 4, benchmarks/README.md), fp32 elsewhere
(emulated bf16 is slower than fp32).

Detected, not guessed: the processor's feature flags where the system lists them (Linux's
/proc/cpuinfo), and oneDNN must support bf16 at all; elsewhere a short measured probe (a
bf16 matrix product against an fp32 one), once per processor and PyTorch, cached."""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path

import torch

NATIVE_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86's two, and Arm's (Linux spells it bf16)
PROBE_SPEEDUP = 1.3  # bf16 must beat fp32 by this much to count as native


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The processor's feature flags, or None where the system does not list them."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return None


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """True where this CPU computes bf16 in hardware."""
    if not _onednn_bf16():
        return False
    flags = cpu_flags()
    if flags is not None:
        return any(flag in flags for flag in NATIVE_FLAGS)
    return _probe_cached()


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _probe_cached() -> bool:
    from ..files.fetch import cache_dir

    key = f"{platform.machine()} {platform.processor()} torch {torch.__version__}"
    path = cache_dir() / "cpu-bf16.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    cached = known.get(key) if isinstance(known, dict) else None
    if isinstance(cached, bool):
        return cached
    result = probe_speedup() >= PROBE_SPEEDUP
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({**(known if isinstance(known, dict) else {}), key: result}))
        os.replace(temp, path)
    except OSError:
        pass  # an unwritable cache: probe again next time
    return result


def probe_speedup(size: int = 512, repeats: int = 5) -> float:
    """fp32 time over bf16 time of a size x size matrix product, best of `repeats` (~50 ms)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        torch.mm(x, y)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - started)
        return min(times)

    return best(a, b) / best(a.bfloat16(), b.bfloat16())
