#!/usr/bin/env python
"""Where one batch of pictures spends its time outside the networks: a profile of
`render_generate` (default sampling, base then upsampler), after a warm-up batch.

Issue 14 measured on an H200 that 14-18% of the wall time is outside network calls, more than
the sampler's arithmetic explains. This prints what a GPU session needs to find the rest:

- the wall time of the batch, the GPU's busy time (its kernels and copies, from the
  profiler) and so its idle share;
- every call that made the host wait for the GPU (CUDA's sync debug mode: blocking copies,
  .item(), stream synchronizations), by the line of Python that made it, split into the
  sampling loops (between a stage's first and last step) and the rest;
- the CUDA runtime calls (launches, graph replays, copies, synchronizations) and the ops that
  took the most host time.

    python benchmarks/profile_picture.py --device cuda --batch-size 1
    python benchmarks/profile_picture.py --device cuda --batch-size 64 --scale full
    python benchmarks/profile_picture.py --device cpu --scale tiny        # checks the script

It uses benchmarks/pipeline.py's random checkpoints (written once into --work).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import harness
from glidecli.render.engine import DEFAULT_BASE, DEFAULT_UPSAMPLE, Job, RenderOptions, Reporter, Session, render_generate

PACKAGE = str(harness.REPO_ROOT / "src")
RUNTIME_CALLS = ("cudaLaunchKernel", "cudaGraphLaunch", "cudaMemcpyAsync", "cudaStreamSynchronize",
                 "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaHostAlloc", "cudaMalloc")


class LoopWatch(Reporter):
    """Knows whether a sampling loop is running: between a stage's first and last step."""

    def __init__(self) -> None:
        self.in_loop = False

    def step(self, stage: str, info) -> None:
        self.in_loop = info.index < info.total


def batch(session: Session, watch: LoopWatch, size: int, seed: int) -> None:
    jobs = [Job(harness.PROMPT, seed + i, i) for i in range(size)]
    for _ in render_generate(session, jobs, DEFAULT_BASE, DEFAULT_UPSAMPLE, options=RenderOptions(batch_size=size, reporter=watch)):
        pass


def our_line(record: warnings.WarningMessage) -> str:
    """The warning's place when it is in glidecli's code, else the place as given."""
    return f"{Path(record.filename).name}:{record.lineno}" + ("" if record.filename.startswith(PACKAGE) else " (outside glidecli)")


def profiled_batch(session: Session, watch: LoopWatch, size: int):
    """Profile one batch: (wall seconds, the profiler's events, waits for the GPU by place)."""
    cuda = session.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    syncs: dict[str, collections.Counter] = {"in sampling loops": collections.Counter(), "elsewhere": collections.Counter()}
    with warnings.catch_warnings(record=True) as caught, profile(activities=activities) as prof:
        warnings.simplefilter("always")
        seen = 0
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
            torch.cuda.synchronize()
        started = time.perf_counter()
        try:
            original = watch.step

            def step(stage: str, info) -> None:  # file the warnings by where the loop was
                nonlocal seen
                where = "in sampling loops" if watch.in_loop else "elsewhere"
                for record in caught[seen:]:
                    syncs[where][our_line(record)] += 1
                seen = len(caught)
                original(stage, info)

            watch.step = step
            batch(session, watch, size, 1000)
            if cuda:
                torch.cuda.synchronize()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        wall = time.perf_counter() - started
    for record in caught[seen:]:
        syncs["elsewhere"][our_line(record)] += 1
    return wall, prof.key_averages(), syncs


def print_report(wall: float, events, syncs: dict, size: int, rows: int, cuda: bool) -> None:
    print(f"\nwall time {wall:.3f} s ({wall / size:.3f} s per picture)")
    if cuda:
        busy = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
        print(f"GPU busy {busy:.3f} s ({100 * busy / wall:.0f}% of the wall time; idle {100 * (1 - busy / wall):.0f}%)")
    print()
    harness.print_header(["waits for the GPU", "where (file:line)", "count"])
    for where, counter in syncs.items():
        for line, count in counter.most_common() or [("none", 0)]:
            print(f"| {where} | {line} | {count} |")
    counts = {e.key: e.count for e in events if e.key in RUNTIME_CALLS}
    if counts:
        print()
        harness.print_header(["CUDA runtime call", "count", "per picture"])
        for key in RUNTIME_CALLS:
            if key in counts:
                print(f"| {key} | {counts[key]} | {counts[key] / size:.0f} |")
    print(f"\nops by host (self CPU) time, top {rows}:\n")
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--scale", choices=("full", "tiny"), default="full")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "glidecli-pipeline-bench")
    ap.add_argument("--rows", type=int, default=15, help="ops listed by host time")
    harness.add_threads_option(ap, help_text="torch threads (default: torch's choice)")
    args = ap.parse_args()
    harness.set_threads(args.threads)

    session = harness.offline_session(harness.random_checkpoints(args.work, args.scale), args.device, args.dtype)
    watch = LoopWatch()
    batch(session, watch, args.batch_size, 0)  # warm-up: loading, graph capture
    print(f"# one batch of {args.batch_size} ({args.scale}-size random weights) on {session.device.type}, "
          f"{session.dtype}, torch {torch.__version__}")
    wall, events, syncs = profiled_batch(session, watch, args.batch_size)
    print_report(wall, events, syncs, args.batch_size, args.rows, session.device.type == "cuda")
    return 0


if __name__ == "__main__":
    sys.exit(main())
