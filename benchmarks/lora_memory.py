#!/usr/bin/env python
"""LoRA training (`glide train --lora`) against a full fine-tune: trainable parameters, the
memory the weights, gradients, AdamW's moments and the EMA take, checkpoint and result sizes
(counted exactly on GLIDE's full-size networks built on the meta device, and on the shapes
model), and the step time of both on the shapes model on this CPU (the loop's own
train_step, timed after a warm-up step).

    python benchmarks/lora_memory.py              # counts, and 6 timed steps each on the CPU
    python benchmarks/lora_memory.py --steps 0    # counts only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import harness
from glidecli.files.manifest import load_manifest
from glidecli.nets.checkpoint import build_on_meta
from glidecli.nets.lora import matching_paths
from glidecli.train.loop import Trainer
from glidecli.train.lora_recipe import target_names
from glidecli.train.settings import Hyper, ModelSource, RunPlan
from glidecli.train.shapes import write_shapes

MiB = 2**20


def lora_parameters(network: torch.nn.Module, rank: int, targets: str) -> int:
    """The parameters of a rank-`rank` adapter on the layers `targets` names (lora_A + lora_B)."""
    total = 0
    for path in matching_paths(network, target_names(targets)):
        weight = network.get_submodule(path).weight
        out_channels, in_channels, *kernel = weight.shape
        total += rank * in_channels * int(torch.tensor(kernel).prod()) + out_channels * rank
    return total


def counts(name: str, network: torch.nn.Module) -> None:
    """One row per adapter choice: fp32 training state (weights + gradients + AdamW's two moments + EMA)."""
    full = sum(p.numel() for p in network.parameters())
    # A full fine-tune: weights, gradients, two moments and the EMA copy of every parameter.
    print(harness.md_row([name, "full fine-tune", f"{full / 1e6:.2f} M", "100%", f"{20 * full / MiB:.0f}", f"{16 * full / MiB:.0f}", f"{4 * full / MiB:.1f}"]))
    for rank, targets in ((4, "attention"), (16, "attention"), (16, "attention,convs")):
        lora = lora_parameters(network, rank, targets)
        state = 4 * full + 16 * lora  # the frozen weights once, then gradients, moments and EMA of the adapter alone
        print(harness.md_row([name, f"LoRA r={rank} {targets}", f"{lora / 1e6:.3f} M", f"{100 * lora / full:.2f}%",
                              f"{state / MiB:.0f}", f"{16 * lora / MiB:.2f}", f"{4 * lora / MiB:.2f}"]))


def step_seconds(data: Path, work: Path, lora: dict | None, steps: int) -> float:
    """The median wall time of the loop's train_step on the shapes model (batch 8, fp32, CPU)."""
    source = ModelSource(name="timed", kind="base", entry="shapes", lora=lora)
    trainer = Trainer(data, work, source, Hyper(batch_size=8, lr=1e-4), RunPlan(steps=steps + 1, samples=False),
                      manifest=load_manifest(harness.MODELS), device="cpu")
    trainer.train_step(0)  # warm-up
    times = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        trainer.train_step(step)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per run on the shapes model (0: counts only)")
    harness.add_threads_option(ap)
    args = ap.parse_args()
    harness.set_threads(args.threads)
    print("\n".join(harness.machine_description(["cpu"])) + "\n")
    print("Training state in fp32 (weights + gradients + AdamW moments + EMA; activations not counted), MiB:\n")
    harness.print_header(["model", "trains", "trainable", "share", "training state", "checkpoint", "result"])
    shapes = load_manifest(harness.MODELS).model("shapes")
    counts("shapes (32 px)", build_on_meta(shapes.kind, shapes.arch))
    for kind in ("base", "upsample"):
        counts(f"GLIDE {kind}", build_on_meta(kind, harness.unet_arch(kind)))
    if args.steps <= 0:
        return 0
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "data"
        list(write_shapes(data, 32, size=32, seed=1))
        full = step_seconds(data, Path(work) / "full", None, args.steps)
        lora = step_seconds(data, Path(work) / "lora", {"rank": 4, "alpha": 4.0, "dropout": 0.0, "targets": list(target_names("attention"))}, args.steps)
    print(f"\nStep time on the shapes model (batch 8, fp32, CPU, median of {args.steps} steps):\n")
    harness.print_header(["trains", "s/step"])
    print(harness.md_row(["full fine-tune", f"{full:.3f}"]))
    print(harness.md_row(["LoRA r=4 attention", f"{lora:.3f}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
