#!/usr/bin/env python
"""Channels-last (NHWC) against channels-first (NCHW) on this machine: the evidence for how
the U-Nets' convolution weights are stored on each device.

glidecli stores convolution weights channels-last on every device (nets/checkpoint.py), so
activations run NHWC: oneDNN's and cuDNN's fp16 convolutions prefer it. But the norms sit
between the convolutions, and some PyTorch versions' CUDA GroupNorm converts a channels-last
input to NCHW and returns NCHW, so each norm may cost two extra transposes, one of them in
the next convolution. On the H200 the base pair ran at about 26% of the fp16 matmul peak at
batch 32 (benchmarks/README.md). This prints:

- whether GroupNorm32 (fp32 statistics, as the networks run it) keeps a channels-last input
  channels-last on this device and dtype;
- the time of a residual block's input layers (GroupNorm32, SiLU, 3x3 convolution) in
  either layout;
- the time of one whole base network call (the guided pair) in either layout;
- in half precision, GroupNorm32's fp32 casts against group_norm run in that dtype directly:
  the time and the largest difference (evidence for dropping the casts, or not).

    python benchmarks/layout_check.py --device cuda --dtype fp16 --batch-sizes 1,32
    python benchmarks/layout_check.py --device cpu --tiny       # checks the script
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import harness
from glidecli.nets.layers import GroupNorm32

LAYOUTS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}


def block_layers(channels: int, device: torch.device, dtype: torch.dtype, layout) -> nn.Module:
    layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)).to(device)
    layers[2].to(dtype=dtype, memory_format=layout)  # the norm's parameters stay fp32, as loading keeps them
    return layers.eval().requires_grad_(False)


def norm_rows(channels: int, side: int, batches: list[int], device: torch.device, dtype: torch.dtype, repeats: int) -> None:
    """What GroupNorm32's fp32 statistics cost in half precision, and what they change."""
    norm = GroupNorm32(channels).to(device)
    weight, bias = norm.weight.to(dtype), norm.bias.to(dtype)
    print()
    harness.print_header(["batch (pictures)", "GroupNorm32 ms (fp32 casts)", f"group_norm in {dtype} ms", "ratio", "largest difference"])
    for batch in batches:
        x = torch.randn(2 * batch, channels, side, side, device=device, dtype=dtype)

        def direct(x: torch.Tensor = x) -> torch.Tensor:
            return F.group_norm(x, norm.num_groups, weight, bias, norm.eps)

        ours_ms, direct_ms = harness.median_ms(lambda: norm(x), device, repeats), harness.median_ms(direct, device, repeats)
        gap = (norm(x).float() - direct().float()).abs().max().item()
        print(f"| {batch} | {ours_ms:.3f} | {direct_ms:.3f} | {direct_ms / ours_ms:.2f} | {gap:.2e} |", flush=True)


def base_call(model: nn.Module, batch: int, device: torch.device):
    cfg = model.config
    pair = 2 * batch  # classifier-free guidance: conditional and unconditional halves
    tokens = torch.zeros(pair, cfg.text_ctx, dtype=torch.long, device=device)
    mask = torch.ones(pair, cfg.text_ctx, dtype=torch.bool, device=device)
    with torch.no_grad():
        text = model.encode_text(tokens, mask)
    x = torch.randn(pair, 3, cfg.image_size, cfg.image_size, device=device)
    t = torch.full((pair,), 500, device=device)
    return lambda: model(x, t, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    harness.add_dtype_option(ap, None, "default: fp16 on CUDA, fp32 on the CPU")
    ap.add_argument("--batch-sizes", default=None, help="pictures per call (default: 1,32 on CUDA, 1 on the CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls, median (default: 20 CUDA, 3 CPU)")
    ap.add_argument("--tiny", action="store_true", help="a tiny base network (checks the script)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = harness.DTYPES[args.dtype or ("fp16" if cuda else "fp32")]
    batches = harness.int_list(args.batch_sizes or ("1,32" if cuda else "1"))
    repeats = args.repeats or (20 if cuda else 3)

    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"# layouts on {name}, {dtype}, torch {torch.__version__}\n")
    channels, side = (32, 16) if args.tiny else (192, 64)  # the base model's first resolution
    probe = torch.randn(2, channels, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    kept = GroupNorm32(channels).to(device)(probe).is_contiguous(memory_format=torch.channels_last)
    print(f"GroupNorm32 keeps a channels-last input channels-last: {'yes' if kept else 'no (it returns NCHW)'}\n")

    harness.print_header(["what", "batch (pictures)", "NCHW ms", "NHWC ms", "NHWC / NCHW"])
    with torch.no_grad():
        for batch in batches:
            ms = {}
            for label, layout in LAYOUTS.items():
                layers = block_layers(channels, device, dtype, layout)
                x = torch.randn(2 * batch, channels, side, side, device=device, dtype=dtype).contiguous(memory_format=layout)
                ms[label] = harness.median_ms(lambda: layers(x), device, repeats)
            print(f"| GroupNorm32 + SiLU + conv3x3, {channels} ch at {side}x{side} | {batch} | {ms['NCHW']:.3f} | {ms['NHWC']:.3f} |"
                  f" {ms['NHWC'] / ms['NCHW']:.2f} |", flush=True)
        model = harness.random_network("base", harness.unet_arch("base", "tiny" if args.tiny else "full"), device, dtype)  # NCHW; converted below
        for batch in batches:
            ms = {}
            for label, layout in LAYOUTS.items():
                model.to(memory_format=layout)  # 4-d weights only: the convolutions'
                ms[label] = harness.median_ms(base_call(model, batch, device), device, repeats)
            print(f"| base network, guided pair{' (tiny)' if args.tiny else ''} | {batch} | {ms['NCHW']:.2f} | {ms['NHWC']:.2f} |"
                  f" {ms['NHWC'] / ms['NCHW']:.2f} |", flush=True)
        if dtype != torch.float32:
            norm_rows(channels, side, batches, device, dtype, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
