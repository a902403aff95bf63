"""Images per second at 1, 2, ... ranks under torchrun: rendering with `glide generate` and
training with `glide train`, each rank one thread (torchrun's default) on the device given.

    python benchmarks/scaling.py                         # CPU, ranks 1,2, the small shapes model
    python benchmarks/scaling.py --device cuda --ranks 1,2,4,8 --images 256 --train-steps 200

Rendering uses the `shapes` model of models/ (32x32, 20 dpmpp_2m_sde steps, batch 1), training
a fresh `micro` network on a generated shapes data set. Times are whole commands, start-up and
model loading included, so small jobs understate the scaling; the rendering summary's own
images/s (rank 0's one-line summary: from after start-up to the last rank done) is shown too.
Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import REPO_ROOT as ROOT


def torchrun(ranks: int, args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--standalone", "-m", "glidecli", *args]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    parser.add_argument("--images", type=int, default=32, help="pictures to render")
    parser.add_argument("--train-steps", type=int, default=40, help="training steps (batch --train-batch)")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()
    counts = [int(n) for n in options.ranks.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        prompts = work / "prompts.txt"
        prompts.write_text("a red circle on a blue background\na green square on a yellow background\n")
        data = work / "data"
        subprocess.run([sys.executable, "-m", "glidecli", "dataset", "shapes", str(data), "-n", "64", "--size", "20"],
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True, capture_output=True)
        for n in counts:
            render = ["generate", "--prompts-file", str(prompts), "-n", str(options.images // 2), "--seed", "1",
                      "--weights", str(harness.MODELS), "--model", "shapes", "--size", "32",
                      "--device", options.device, "--out", str(work / f"render-{n}"), "--json", "-q"]
            seconds, out = torchrun(n, render)
            summary = [json.loads(line)["summary"] for line in out.splitlines() if line.startswith('{"summary"')]
            inner = summary[0]["images_per_second"] if summary else None
            train = ["train", str(data), "--preset", "micro", "--model", "m", "--batch-size", str(options.train_batch),
                     "--steps", str(options.train_steps), "--save-every", "0", "--no-samples", "--device", options.device,
                     "--out", str(work / f"train-{n}"), "--quiet"]
            train_seconds, _ = torchrun(n, train)
            rows.append((n, options.images / seconds, inner, options.train_steps * options.train_batch / train_seconds))
    base = rows[0]
    print(f"{options.images} pictures (shapes, 32x32, 20 steps); training micro, batch {options.train_batch}, {options.train_steps} steps; device {options.device}")
    print()
    harness.print_header(["ranks", "render images/s (whole command)", "render images/s (rank 0's summary)", "train images/s (whole command)",
                          "speed-up render / train"])
    for n, render_rate, inner, train_rate in rows:
        inner_text = f"{inner:.2f}" if inner else "-"
        print(f"| {n} | {render_rate:.2f} | {inner_text} | {train_rate:.1f} | {render_rate / base[1]:.2f}x / {train_rate / base[3]:.2f}x |")


if __name__ == "__main__":
    main()
