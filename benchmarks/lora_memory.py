#!/usr/bin/env python
"""LoRA training (`glide train --lora`) against a full fine-tune: trainable parameters, the
memory the weights, gradients, AdamW's moments and the EMA take, checkpoint and result sizes
(counted exactly on GLIDE's and Karlo's full-size networks built on the meta device, and on the
shapes models), and the step time of both on the shapes models on this CPU (the loop's own
train_step, timed after a warm-up step). unCLIP's prior and decoder fine-tune only as
adapters, so their full-training step is timed on a fresh network of the same settings (the
`tiny` preset the shapes prior and decoder were trained from).

    python benchmarks/lora_memory.py              # counts, and 6 timed steps each on the CPU
    python benchmarks/lora_memory.py --steps 0    # counts only
"""

from __future__ import annotations

import argparse
import os
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


GLIDE_CHOICES = ((4, "attention"), (16, "attention"), (16, "attention,convs"))
PRIOR_CHOICES = ((4, "attention"), (16, "attention"))  # a transformer: no convolutions


def counts(name: str, network: torch.nn.Module, choices: tuple[tuple[int, str], ...] = GLIDE_CHOICES) -> None:
    """One row per adapter choice: fp32 training state (weights + gradients + AdamW's two moments + EMA)."""
    full = sum(p.numel() for p in network.parameters())
    # A full fine-tune: weights, gradients, two moments and the EMA copy of every parameter.
    print(harness.md_row([name, "full fine-tune", f"{full / 1e6:.2f} M", "100%", f"{20 * full / MiB:.0f}", f"{16 * full / MiB:.0f}", f"{4 * full / MiB:.1f}"]))
    for rank, targets in choices:
        lora = lora_parameters(network, rank, targets)
        state = 4 * full + 16 * lora  # the frozen weights once, then gradients, moments and EMA of the adapter alone
        print(harness.md_row([name, f"LoRA r={rank} {targets}", f"{lora / 1e6:.3f} M", f"{100 * lora / full:.2f}%",
                              f"{state / MiB:.0f}", f"{16 * lora / MiB:.2f}", f"{4 * lora / MiB:.2f}"]))


ATTENTION_R4 = {"rank": 4, "alpha": 4.0, "dropout": 0.0, "targets": list(target_names("attention"))}
# What each timed row trains: (label, ModelSource's fields but the name).
TIMED: tuple[tuple[str, dict], ...] = (
    ("shapes: full fine-tune", dict(kind="base", entry="shapes")),
    ("shapes: LoRA r=4 attention", dict(kind="base", entry="shapes", lora=ATTENTION_R4)),
    ("shapes-prior: full training (fresh, same settings)", dict(kind="unclip-prior", preset="tiny", clip="shapes-clip")),
    ("shapes-prior: LoRA r=4 attention", dict(kind="unclip-prior", entry="shapes-prior", clip="shapes-clip", lora=ATTENTION_R4)),
    ("shapes-decoder: full training (fresh, same settings)",
     dict(kind="unclip-decoder", preset="tiny", clip="shapes-clip", arch_changes={"prediction": "v"})),
    ("shapes-decoder: LoRA r=4 attention", dict(kind="unclip-decoder", entry="shapes-decoder", clip="shapes-clip", lora=ATTENTION_R4)),
)


def step_seconds(data: Path, work: Path, settings: dict, steps: int) -> float:
    """The median wall time of the loop's train_step (batch 8, fp32, CPU)."""
    source = ModelSource(name="timed", **settings)
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
    for name, choices in (("shapes-prior", PRIOR_CHOICES), ("shapes-decoder", GLIDE_CHOICES)):
        entry = load_manifest(harness.MODELS).model(name)
        counts(name, build_on_meta(entry.kind, entry.arch), choices)
    for name, choices in (("karlo-prior", PRIOR_CHOICES), ("karlo-decoder", GLIDE_CHOICES)):
        entry = load_manifest().model(name)  # the packaged manifest's settings; no weights read
        counts(name, build_on_meta(entry.kind, entry.arch), choices)
    if args.steps <= 0:
        return 0
    with tempfile.TemporaryDirectory() as work:
        os.environ["GLIDE_CACHE"] = str(Path(work) / "cache")  # the CLIP's embeddings of the data set
        data = Path(work) / "data"
        list(write_shapes(data, 32, size=32, seed=1))
        times = [(label, step_seconds(data, Path(work) / f"run{k}", settings, args.steps)) for k, (label, settings) in enumerate(TIMED)]
    print(f"\nStep time on the shapes models (batch 8, fp32, CPU, median of {args.steps} steps):\n")
    harness.print_header(["trains", "s/step"])
    for label, seconds in times:
        print(harness.md_row([label, f"{seconds:.3f}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
