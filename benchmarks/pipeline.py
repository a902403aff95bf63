#!/usr/bin/env python
"""Time whole pictures (prompt to 256x256 PNG): in-process per batch size, as whole `glide
generate` processes, and the start-up of a fresh process phase by phase.

The official checkpoints cannot be downloaded here, so the script writes base and upsampler
checkpoints with random weights (full size by default: they cost exactly what the real ones
cost to load and run; `--scale tiny` for a quick check of the script itself) and a manifest
for them, once, into --work. Then, for each sampling setting (glidecli's default, the
reference notebook's):

- in-process rows (`in-process` section), per batch size, without and with `--compile`: the
  first run of a batch size (graph capture, compiling) and a second, timed run of B pictures
  with PNGs written as `glide` writes them: seconds per picture, pictures per second, the
  share of the wall time spent in network calls (the rest is host work: noise, sampler
  arithmetic, callbacks, PNGs), compile time and peak memory;
- whole-process rows (`process`): `glide generate PROMPT -n N` in a fresh process (default
  `--batch-size auto`), wall time, pictures per second, peak memory;
- the start-up breakdown (`startup`): import, manifest, loading both models, the first
  batch of one picture (capture/compile included) and a second one, in a fresh process.

    python benchmarks/pipeline.py                                   # CPU: whole processes, default and reference (about 10 min on 2 cores)
    python benchmarks/pipeline.py --device cuda --batch-sizes 1,8,32,64 --compile
    python benchmarks/pipeline.py --scale tiny --device cpu --sections in-process,process,startup   # a quick run of every part
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import harness
from glidecli.files.manifest import load_manifest
from glidecli.files.pngfile import write_png
from glidecli.files.writer import BackgroundWriter
from glidecli.render.accel import CompiledNetwork
from glidecli.render.engine import (
    DEFAULT_BASE,
    DEFAULT_UPSAMPLE,
    REFERENCE_BASE,
    REFERENCE_UPSAMPLE,
    Job,
    RenderOptions,
    Session,
    Stage,
    render_generate,
)
from harness import PROMPT, log

SETTINGS = {"default": (DEFAULT_BASE, DEFAULT_UPSAMPLE), "reference": (REFERENCE_BASE, REFERENCE_UPSAMPLE)}
SECTIONS = ("in-process", "process", "startup")


def out(line: str = "") -> None:
    print(line, flush=True)  # row by row: a run cut short still shows what it measured


def arguments(base: Stage, upsample: Stage) -> list[str]:
    return ["--sampler", base.sampler.name, "--steps", base.sampler.steps,
            "--upsample-sampler", upsample.sampler.name, "--upsample-steps", upsample.sampler.steps]


def calls(base: Stage, upsample: Stage) -> str:
    return f"{len(base.sampler.schedule('squaredcos_cap_v2'))} + {len(upsample.sampler.schedule('linear'))}"


# --- in-process rows ----------------------------------------------------------------------------------


class TimedCalls:
    """Wraps a session's network call and adds up the time spent in it (CUDA events: no sync)."""

    def __init__(self, call, device: torch.device):
        self.call, self.cuda, self.pairs, self.seconds = call, device.type == "cuda", [], 0.0

    def __call__(self, *args, **kwargs):
        if not self.cuda:
            started = time.perf_counter()
            result = self.call(*args, **kwargs)
            self.seconds += time.perf_counter() - started
            return result
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = self.call(*args, **kwargs)
        end.record()
        self.pairs.append((start, end))
        return result

    def take(self) -> float:
        """Seconds spent since the last take (synchronizes)."""
        if self.cuda:
            torch.cuda.synchronize()
            self.seconds += sum(start.elapsed_time(end) for start, end in self.pairs) / 1000
            self.pairs.clear()
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def peak_memory(device: torch.device) -> str:
    return f"{harness.peak_memory_gib(device):.1f} GiB" + ("" if device.type == "cuda" else " RSS (process)")


def render_once(session: Session, stages, batch: int, seed: int, folder: Path) -> float:
    """Wall seconds for `batch` pictures, PNGs written as `glide` writes them."""
    base, upsample = stages
    jobs = [Job(PROMPT, seed + i, i) for i in range(batch)]
    writer = BackgroundWriter()
    harness.sync(session.device)
    started = time.perf_counter()
    try:
        for done in render_generate(session, jobs, base, upsample, options=RenderOptions(batch_size=batch)):
            writer.submit(lambda d: write_png(d.image, folder / f"{d.job.index:05d}.png", d.meta, overwrite=True), done)
        writer.close()
    finally:
        writer.finish()
    harness.sync(session.device)
    return time.perf_counter() - started


def compile_seconds(session: Session) -> float:
    """Seconds spent compiling so far (the compiled networks sit under the graph and timing wrappers)."""
    total = 0.0
    for name in ("base", "upsample"):
        layer = session.sampling_call(name, name)
        while layer is not None and not isinstance(layer, CompiledNetwork):
            layer = getattr(layer, "call", None) or getattr(layer, "network", None)
        if layer is not None:
            total += sum(layer.compile_seconds.values())
    return total


def in_process_rows(manifest: Path, args, device: torch.device, setting: str) -> None:
    stages = SETTINGS[setting]
    folder = args.work / "in-process"
    folder.mkdir(parents=True, exist_ok=True)
    for compiled in args.compile_modes:
        session = Session(load_manifest(manifest), device=device, dtype=args.dtype, offline=True, compile=compiled, note=log)
        timers = {}
        for name in ("base", "upsample"):
            session.unet(name, name)
            timers[name] = session._calls[name] = TimedCalls(session.sampling_call(name, name), device)
        sizes = args.compile_batch_sizes if compiled and args.compile_batch_sizes else args.batch_sizes
        for batch in sizes:
            compiled_before = compile_seconds(session)
            first = render_once(session, stages, batch, 0, folder)
            compile_time = compile_seconds(session) - compiled_before
            for timer in timers.values():
                timer.take()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            wall = render_once(session, stages, batch, 1000, folder)
            network = sum(timer.take() for timer in timers.values())
            out(f"| {setting} | {batch} | {'yes' if compiled else 'no'} | {first:.2f} s | {wall / batch:.3f} s | {batch / wall:.2f}"
                f" | {100 * network / wall:.0f}% | {compile_time:.0f} s | {peak_memory(device)} |")
        del session, timers
        if device.type == "cuda":
            torch.cuda.empty_cache()


# --- whole processes ------------------------------------------------------------------------------

# Runs `glide` as `python -m glidecli` does, and on exit reports the GPU's peak memory on stderr.
GLIDE_WITH_PEAK = (
    "import atexit, sys, runpy, torch\n"
    "atexit.register(lambda: torch.cuda.is_available() and print(f'GLIDE_BENCH_PEAK {torch.cuda.max_memory_allocated()}', file=sys.stderr))\n"
    "sys.argv = ['glide', *sys.argv[1:]]\n"
    "runpy.run_module('glidecli', run_name='__main__')\n"
)


def child_env(args) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def process_rows(manifest: Path, args, device: torch.device, setting: str) -> None:
    for count in args.process_counts:
        for compiled in args.compile_modes:
            if compiled and args.compile_process_counts and count not in args.compile_process_counts:
                continue
            extra = arguments(*SETTINGS[setting]) + (["--compile"] if compiled else [])
            command = [sys.executable, "-c", GLIDE_WITH_PEAK, "generate", PROMPT, "--weights", str(manifest), "--seed", "0",
                       "-n", str(count), "--device", device.type, "--dtype", args.dtype, "--quiet", "--overwrite",
                       "--out", str(args.work / "process"), *extra]
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            started = time.perf_counter()
            done = subprocess.run(command, env=child_env(args), capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"glide generate failed ({done.returncode}): {done.stderr.strip()}")
            rss = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
            peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("GLIDE_BENCH_PEAK")]
            notes = "; ".join(line[6:] for line in done.stderr.splitlines() if line.startswith("note: "))
            memory = f"{int(peak[0]) / harness.GiB:.1f} GiB GPU, {rss:.1f} GiB RSS" if peak else f"{rss:.1f} GiB RSS"
            out(f"| {setting} | {count} | {'yes' if compiled else 'no'} | {wall:.1f} s | {count / wall:.2f} | {memory} | {notes or '-'} |")


# --- start-up ---------------------------------------------------------------------------------------

STARTUP = """
import json, sys, time
started = time.perf_counter()
from glidecli.render.engine import DEFAULT_BASE, DEFAULT_UPSAMPLE, Job, Session, render_generate
from glidecli.files.manifest import load_manifest
imported = time.perf_counter()
manifest = load_manifest(sys.argv[1])
read = time.perf_counter()
session = Session(manifest, device=sys.argv[2], dtype=sys.argv[3], offline=True)
session.unet("base", "base"); session.unet("upsample", "upsample")
session.tokenizer(session.unet("base", "base").config.text_ctx, "base")
loaded = time.perf_counter()
def picture(seed):
    list(render_generate(session, [Job("a corgi wearing a red hat", seed)], DEFAULT_BASE, DEFAULT_UPSAMPLE))
    if session.device.type == "cuda":
        import torch; torch.cuda.synchronize()
    return time.perf_counter()
first = picture(0)
second = picture(1)
print(json.dumps({"import": imported - started, "manifest": read - imported, "load both models": loaded - read,
                  "first picture": first - loaded, "second picture": second - first}))
"""


def startup_row(manifest: Path, args, device: torch.device) -> None:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", STARTUP, str(manifest), device.type, args.dtype],
                          env=child_env(args), capture_output=True, text=True)
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"start-up probe failed: {done.stderr.strip()}")
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    interpreter = total - sum(phases.values())
    out("| " + " | ".join(f"{v:.2f} s" for v in [interpreter, *phases.values()]) + f" | {total:.1f} s |")


# --- main -----------------------------------------------------------------------------------------------


def machine(device: torch.device, dtype: str) -> str:
    line = f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if device.type == "cuda":
        line += f", GPU {harness.gpu_summary()}"
    if hasattr(os, "getloadavg"):
        line += ", load average " + harness.load_average()
    from glidecli.render.session import dtype_name, resolve_dtype

    return line + f"; dtype {dtype} = {dtype_name(resolve_dtype(dtype, device))}"


def table(title: str, columns: str) -> None:
    out(f"\n## {title}\n")
    harness.print_header(columns.split(", "), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    ap.add_argument("--dtype", default="auto", help="auto, fp32, fp16 or bf16 (default auto: fp16 on a GPU, fp32 on the CPU)")
    ap.add_argument("--batch-sizes", type=harness.int_list, help="in-process batch sizes (default: GPU 1,8,32,64; CPU 1)")
    ap.add_argument("--compile", action="store_true", help="also run the in-process and process rows with --compile")
    ap.add_argument("--compile-only", action="store_true", help="with --compile: only the compiled rows")
    ap.add_argument("--compile-process-counts", type=harness.int_list, help="-n of the compiled whole-process rows (default: --process-counts)")
    ap.add_argument("--compile-batch-sizes", type=harness.int_list, help="batch sizes of the compiled in-process rows (default: --batch-sizes)")
    ap.add_argument("--process-counts", type=harness.int_list, help="-n of the whole-process rows (default: GPU 1,64; CPU 1)")
    ap.add_argument("--sections", default=None, help=f"which of {','.join(SECTIONS)} to run (default: all on a GPU; process on the CPU)")
    ap.add_argument("--only", choices=sorted(SETTINGS), action="append", help="sampling settings (repeatable; default: default on a GPU, both on the CPU)")
    ap.add_argument("--scale", choices=("full", "tiny"), default="full", help="network size: full (the real cost) or tiny (checks the script)")
    ap.add_argument("--work", type=Path, help="where the random checkpoints live (default: a folder in the temp dir, kept)")
    ap.add_argument("--prepare-only", action="store_true", help="write the random checkpoints and manifest, then stop")
    harness.add_threads_option(ap, help_text="torch threads, here and in the child processes (default: torch's choice)")
    args = ap.parse_args()
    harness.set_threads(args.threads)
    args.compile_modes = ([True] if args.compile_only else [False, True]) if args.compile else [False]

    from glidecli.render.session import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.batch_sizes = args.batch_sizes or ([1, 8, 32, 64] if gpu else [1])
    args.process_counts = args.process_counts or ([1, 64] if gpu else [1])
    sections = (args.sections or ("in-process,process,startup" if gpu else "process")).split(",")
    if unknown := set(sections) - set(SECTIONS):
        ap.error(f"unknown sections {', '.join(sorted(unknown))}")
    settings = args.only or (["default"] if gpu else ["default", "reference"])
    args.work = args.work or Path(tempfile.gettempdir()) / "glidecli-pipeline-bench"
    manifest = harness.random_checkpoints(args.work, args.scale)
    if args.prepare_only:
        print(manifest)
        return 0

    out(f"# glide generate, 256x256, {args.scale}-size random weights; {machine(device, args.dtype)}")
    if "in-process" in sections:
        table("In-process (second run of each batch size; the first captures graphs or compiles)",
              "settings, batch, --compile, first run, s/picture, pictures/s, in network calls, compile time, peak memory")
        for setting in settings:
            in_process_rows(manifest, args, device, setting)
    if "process" in sections:
        table("Whole process: `glide generate PROMPT -n N` (start-up, loading, sampling, PNGs)",
              "settings, -n, --compile, wall time, pictures/s, peak memory, notes")
        for setting in settings:
            process_rows(manifest, args, device, setting)
    if "startup" in sections:
        table("Start-up of a fresh process, one picture with the default settings",
              "interpreter, import, manifest, load both models, first picture, second picture, total")
        startup_row(manifest, args, device)
    out("\n# calls per picture (base guided pairs + upsampler): " + ", ".join(f"{s} {calls(*SETTINGS[s])}" for s in settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
