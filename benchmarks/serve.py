#!/usr/bin/env python
"""Time N one-picture requests to a warm `glide serve` against N separate `glide generate`
processes, and the server's own share of each request (HTTP, queue, PNG encoding) beside
the render.

Both sides make the same pictures (same prompt, settings and seeds). The server runs in a
subprocess on a free loopback port, as a user starts it; its first request loads the
models and is reported apart. For each warm request the job reports the seconds spent in
the render (sampling); the rest of the request's wall time, seen by the client, is the
server's overhead.

    python benchmarks/serve.py                                  # the shapes models in models/, CPU
    python benchmarks/serve.py --models full --device cuda      # full-size random GLIDE weights, 256px
    python benchmarks/serve.py --models full --device cpu -n 2 --steps 5 --upsample-steps 5   # full size on a CPU, short
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import harness
from harness import log

PROMPT = "a red circle on a blue background"


def manifest_and_models(args) -> tuple[Path, dict[str, str]]:
    if args.models == "shapes":
        return harness.MODELS, {"model": "shapes", "upsample-model": "shapes-upsample"}
    # full-size random base and upsampler checkpoints, written once
    return harness.random_checkpoints(args.work, "full"), {"model": "base", "upsample-model": "upsample"}


def options(args, models: dict[str, str]) -> dict[str, str]:
    chosen = dict(models)
    if args.steps:
        chosen["steps"] = args.steps
    if args.upsample_steps:
        chosen["upsample-steps"] = args.upsample_steps
    return chosen


def env(args) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GLIDE_DEVICE": args.device}


def start_server(manifest: Path, out: Path, args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "glidecli", "serve", "--port", "0", "--weights", str(manifest), "--out", str(out),
               "--device", args.device, "--dtype", args.dtype]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env(args))
    line = process.stderr.readline()
    if not line.startswith("glide serve: http://"):
        raise SystemExit(f"glide serve did not start: {line}{process.stderr.read()}")
    return process, line.split()[2].rstrip("/")


def request(base: str, body: dict) -> tuple[float, dict]:
    """POST a job, follow its events to the end, read its status: (wall seconds, status)."""
    started = time.perf_counter()
    post = urllib.request.Request(f"{base}/glide/v1/jobs", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post) as answer:
        job = json.loads(answer.read())
    with urllib.request.urlopen(f"{base}/glide/v1/jobs/{job['id']}/events") as events:
        for _ in events:  # the stream ends with the job
            pass
    with urllib.request.urlopen(f"{base}/glide/v1/jobs/{job['id']}") as answer:
        status = json.loads(answer.read())
    wall = time.perf_counter() - started
    if status["state"] != "done":
        raise SystemExit(f"job {status['state']}: {status.get('error')}")
    return wall, status


def cli_process(manifest: Path, out: Path, args, chosen: dict[str, str], seed: int) -> float:
    flags = [item for key, value in chosen.items() for item in (f"--{key}", value)]
    command = [sys.executable, "-m", "glidecli", "generate", PROMPT, "--weights", str(manifest), "--seed", str(seed), "--quiet",
               "--out", str(out), "--device", args.device, "--dtype", args.dtype, *flags]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env(args))
    if done.returncode != 0:
        raise SystemExit(f"glide generate failed: {done.stderr.strip()}")
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5, help="requests (and processes) to time (default 5)")
    ap.add_argument("--models", choices=("shapes", "full"), default="shapes", help="the shapes models in models/, or full-size random GLIDE weights")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--steps", help="base steps (default: generate's)")
    ap.add_argument("--upsample-steps", help="upsampler steps (default: generate's)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "glidecli-bench", help="where full-size random weights are kept")
    args = ap.parse_args()

    manifest, models = manifest_and_models(args)
    chosen = options(args, models)
    folder = Path(tempfile.mkdtemp(prefix="glide-serve-bench-"))
    log(f"starting glide serve ({args.models} models, {args.device}) ...")
    process, base = start_server(manifest, folder / "served", args)
    try:
        first, _ = request(base, {"command": "generate", "prompt": PROMPT, "seed": 0, **chosen})
        walls, renders, writes = [], [], []
        for seed in range(1, args.n + 1):
            wall, status = request(base, {"command": "generate", "prompt": PROMPT, "seed": seed, **chosen})
            walls.append(wall)
            renders.append(status["seconds"]["render"])
            writes.append(status["seconds"]["write"])
    finally:
        process.terminate()
        process.wait(30)
    log(f"running {args.n} glide generate processes ...")
    processes = [cli_process(manifest, folder / "cli", args, chosen, seed) for seed in range(1, args.n + 1)]

    served = sorted((folder / "served").glob("*.png"))[1:]
    made = sorted((folder / "cli").glob("*.png"))
    same = len(served) == len(made) and all(a.read_bytes() == b.read_bytes() for a, b in zip(served, made))
    print(f"\n{args.n} one-picture requests, {args.models} models, {platform.processor() or platform.machine()} {args.device}, "
          f"settings {json.dumps(chosen)}; pictures byte-identical: {'yes' if same else 'NO'}\n")
    harness.print_header(["way", "seconds for all", "seconds per picture", "speed-up"])
    total_server, total_cli = sum(walls), sum(processes)
    print(f"| {args.n} separate `glide generate` processes | {total_cli:.2f} | {total_cli / args.n:.3f} | 1.0x |")
    print(f"| warm `glide serve`, {args.n} requests | {total_server:.2f} | {total_server / args.n:.3f} | {total_cli / total_server:.1f}x |")
    print(f"| (its first request, loading the models) | {first:.2f} | | |")
    render, wall, write = statistics.mean(renders), statistics.mean(walls), statistics.mean(writes)
    overhead = wall - render
    print()
    harness.print_header(["per warm request", "ms"])
    print(f"| wall time seen by the client | {wall * 1000:.1f} |")
    print(f"| render (sampling, in the job) | {render * 1000:.1f} |")
    print(f"| server overhead (HTTP, queue, events, PNG) | {overhead * 1000:.1f} ({100 * overhead / render:.1f}% of the render) |")
    print(f"| of which PNG encoding and writing | {write * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
