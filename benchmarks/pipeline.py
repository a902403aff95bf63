#!/usr/bin/env python
"""Time `glide generate` end to end: prompt to 256x256 PNG, as a user runs it.

The official checkpoints cannot be downloaded here, so the script writes full-size base and
upsampler checkpoints with random weights (they cost exactly what the real ones cost to load
and run) and a manifest for them, once, into --work. It then runs the real command in a
fresh process, `glide generate PROMPT --weights WORK/weights.toml ...`, and times it, once with
glidecli's default sampling and once with the reference notebook's (--reference). It prints
one markdown table: settings, network calls, wall time, and the process's peak memory.

    python benchmarks/pipeline.py                     # defaults, then the reference's settings
    python benchmarks/pipeline.py --only default      # just glidecli's defaults (about 3 min on 2 cores)
    python benchmarks/pipeline.py --threads 1 --work /tmp/glide-bench
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from glidecli.render.engine import DEFAULT_BASE, DEFAULT_UPSAMPLE, REFERENCE_BASE, REFERENCE_UPSAMPLE, Stage



def _arguments(base: Stage, upsample: Stage) -> list[str]:
    return ["--sampler", base.sampler.name, "--steps", base.sampler.steps,
            "--upsample-sampler", upsample.sampler.name, "--upsample-steps", upsample.sampler.steps]


def _calls(base: Stage, upsample: Stage) -> tuple[int, int]:
    return len(base.sampler.schedule("squaredcos_cap_v2")), len(upsample.sampler.schedule("linear"))


SETTINGS = {
    # name: (extra glide arguments, base network calls, upsampler network calls)
    "default": ([], *_calls(DEFAULT_BASE, DEFAULT_UPSAMPLE)),
    "reference": (_arguments(REFERENCE_BASE, REFERENCE_UPSAMPLE), *_calls(REFERENCE_BASE, REFERENCE_UPSAMPLE)),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(work: Path) -> Path:
    """Random full-size base and upsampler checkpoints plus a manifest (kept for reuse)."""
    from glidecli.nets.checkpoint import build_network, random_init_, save_network
    from glidecli.nets.config import unet_defaults
    from glidecli.train.dataset import build_caption_tokenizer

    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "weights.toml"
    if manifest.is_file():
        return manifest
    for kind in ("base", "upsample"):
        log(f"writing a random full-size {kind} checkpoint to {work} ...")
        network = random_init_(build_network(kind, unet_defaults(kind)), seed=0)
        save_network(network, work / f"{kind}.safetensors")
        del network
    # The prompt's tokens cost nothing measurable; any byte-level BPE will do.
    build_caption_tokenizer(["a corgi wearing a red hat", "a watercolor of a lighthouse"], work / "tokenizer.json")
    manifest.write_text(
        "version = 1\n\n"
        '[models.base]\nkind = "base"\npath = "base.safetensors"\ntokenizer = "bench"\n\n'
        '[models.upsample]\nkind = "upsample"\npath = "upsample.safetensors"\ntokenizer = "bench"\n\n'
        '[tokenizers.bench]\npath = "tokenizer.json"\n'
    )
    return manifest


def run_glide(manifest: Path, extra: list[str], threads: int, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one `glide generate` process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "glidecli", "generate", "a corgi wearing a red hat", "--weights", str(manifest),
               "--seed", "0", "--device", "cpu", "--quiet", "--overwrite", "--out", str(out / "corgi.png"), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"glide generate failed ({done.returncode}): {done.stderr.strip()}")
    peak_kib = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return wall, peak_kib / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="where the random checkpoints live (default: a folder in the temp dir, kept)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP threads of the glide process (default: all cores)")
    ap.add_argument("--only", choices=sorted(SETTINGS), action="append", help="run only these settings (repeatable)")
    args = ap.parse_args()

    work = args.work or Path(tempfile.gettempdir()) / "glidecli-pipeline-bench"
    manifest = prepare(work)
    rows = []
    for name in args.only or list(SETTINGS):
        extra, base_calls, upsample_calls = SETTINGS[name]
        log(f"running glide generate ({name}) ...")
        wall, peak = run_glide(manifest, extra, args.threads, work)
        rows.append((name, " ".join(extra) or "(none)", base_calls, upsample_calls, wall, peak))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# glide generate, 256x256, batch 1, fp32, {args.threads} thread(s); {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} cores; load average after the runs: {load}")
    print("| settings | extra arguments | base calls (guided pairs) | upsampler calls | wall time | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, extra, base_calls, upsample_calls, wall, peak in rows:
        print(f"| {name} | `{extra}` | {base_calls} | {upsample_calls} | {wall:.0f} s ({wall / 60:.1f} min) | {peak:.1f} GiB |")
    print("# wall time: the whole process (start-up, loading both checkpoints, text encoding, sampling, PNG).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
