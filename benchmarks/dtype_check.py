#!/usr/bin/env python
"""The evidence for the default dtypes (fp16 on a GPU, bf16 on a CPU with native bf16): how far
fp16 and bf16 pictures land from fp32 ones, whether they still follow their prompts, and how
fast and how close to fp32 each runs the full-size networks.

1. Levels: the small trained shapes model (models/, 32x32, v-prediction) draws --seeds pictures
   with the default sampling on the CPU in fp32 (the reference) and on --device in fp32, fp16 and
   bf16; the table gives the largest difference in 8-bit levels, the share of values more than
   2 levels off, and how many pictures have both colours their prompt asks for.
2. Speed: one network call of the full-size base model (guided pair) and upsampler with random
   weights, per dtype and batch size, eager and replayed as a CUDA graph (on CUDA), in ms, and
   the call's output against fp32's on the same inputs (largest and mean difference, relative
   to the output's RMS).

    python benchmarks/dtype_check.py --device cuda
    python benchmarks/dtype_check.py --device cpu --dtypes fp32,bf16 --batch-sizes 1 --repeats 3 --seeds 32
    python benchmarks/dtype_check.py --device cpu --tiny      # checks the script (tiny networks, no graphs)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys

import numpy as np
import torch

import harness
from glidecli.nets.unet import TextEmbedding
from glidecli.render.accel import CudaGraphs, GraphedNetwork
from glidecli.render.engine import DEFAULT_BASE, Job, RenderOptions, render_generate
from harness import DTYPES

PROMPTS = ["a red circle on a blue background", "a yellow square on a green background"]


def pictures(device: str, dtype: str, count: int) -> np.ndarray:
    session = harness.offline_session(device=device, dtype=dtype)
    base = dataclasses.replace(DEFAULT_BASE, model="shapes")
    jobs = [Job(PROMPTS[i % 2], seed=i, index=i) for i in range(count)]
    done = render_generate(session, jobs, base, None, options=RenderOptions(batch_size=min(count, 8)))
    return np.stack([harness.rgb_pixels(d.image, np.int16) for d in done])


SCENES = [("red", "circle", "blue"), ("yellow", "square", "green")]  # PROMPTS' colours


def levels_table(device: str, count: int) -> None:
    from glidecli.train.shapes import colour_hits

    reference = pictures("cpu", "fp32", count)
    targets = [SCENES[i % 2] for i in range(count)]
    harness.print_header([f"shapes model, {count} pictures, against CPU fp32", "max difference (levels)", "values > 2 levels off",
                          "both colours right"])
    print(f"| cpu fp32 (the reference) | 0 | 0.00% | {colour_hits(reference.astype(np.float64), targets)[0]}/{count} |", flush=True)
    for dtype in DTYPES:
        if device == "cpu" and dtype == "fp32":
            continue
        made = pictures(device, dtype, count)
        diff = np.abs(made - reference)
        hits = colour_hits(made.astype(np.float64), targets)[0]
        print(f"| {device} {dtype} | {diff.max()} | {100 * (diff > 2).mean():.2f}% | {hits}/{count} |", flush=True)


def network(kind: str, device: str, dtype: torch.dtype, tiny: bool) -> torch.nn.Module:
    arch = harness.unet_arch(kind, "tiny" if tiny else "full")
    return harness.random_network(kind, arch, device, dtype).use_channels_last()


def inputs(model: torch.nn.Module, kind: str, n: int, device: str) -> tuple[tuple, dict]:
    """The same random inputs whatever the model's dtype (drawn in fp32 from a fixed seed)."""
    cfg = model.config
    generator = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device)

    x = draw(n, 3, cfg.image_size, cfg.image_size)
    t = torch.full((n,), 500, device=device)
    text = TextEmbedding(draw(n, cfg.time_embed_dim).to(model.dtype), draw(n, cfg.text_ctx, cfg.xf_width).to(model.dtype))
    images = {"low_res": draw(n, 3, 64, 64)} if cfg.super_res else {}
    return (x, t, text), images


def speed_table(device: str, batches: list[int], dtypes: list[str], tiny: bool, repeats: int) -> None:
    print()
    harness.print_header([f"network call ({'tiny' if tiny else 'full-size'}, random weights)", "dtype", "batch", "eager ms", "CUDA graph ms",
                          "against fp32: max, mean (x RMS)"])
    for kind in ("base", "upsample"):
        references: dict[int, torch.Tensor] = {}
        for dtype in ["fp32", *[d for d in dtypes if d != "fp32"]]:
            model = network(kind, device, DTYPES[dtype], tiny)
            for batch in batches:
                n = 2 * batch if kind == "base" else batch  # the base model runs the guided pair
                with torch.no_grad():
                    args, images = inputs(model, kind, n, device)
                    out = model(*args, **images).float().cpu()
                    if dtype == "fp32":
                        references[batch] = out
                    if dtype not in dtypes:
                        continue  # fp32 only as the reference
                    eager = harness.back_to_back_ms(functools.partial(model, *args, **images), device, repeats)
                    graph = "-"
                    if device == "cuda":
                        graphed = GraphedNetwork(model, CudaGraphs())
                        graph = f"{harness.back_to_back_ms(functools.partial(graphed, *args, **images), device, repeats):.1f}"
                reference = references[batch]
                rms = reference.pow(2).mean().sqrt().item()
                diff = (out - reference).abs()
                error = f"{diff.max().item() / rms:.4f}, {diff.mean().item() / rms:.5f}"
                print(f"| {kind}{' (guided pair)' if kind == 'base' else ''} | {dtype} | {batch} | {eager:.1f} | {graph} | {error} |", flush=True)
            del model
            if device == "cuda":
                torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-sizes", type=harness.int_list, default="1,32", help="speed table batch sizes (default 1,32)")
    ap.add_argument("--dtypes", default="fp16,bf16", help="speed table dtypes (default fp16,bf16)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--tiny", action="store_true", help="tiny networks in the speed table (checks the script on a CPU)")
    ap.add_argument("--seeds", type=int, default=8, help="pictures in the levels table (default 8)")
    harness.add_threads_option(ap, help_text="torch.set_num_threads")
    args = ap.parse_args()
    harness.set_threads(args.threads)
    if torch.cuda.is_available():
        print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    levels_table(args.device, args.seeds)
    speed_table(args.device, args.batch_sizes, args.dtypes.split(","), args.tiny, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
