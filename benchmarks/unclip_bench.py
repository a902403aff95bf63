#!/usr/bin/env python
"""Cost of each unCLIP (Karlo v1.0 alpha) stage per sampling step, beside GLIDE's stages.

Like bench.py (whose helpers it uses): networks with random weights, one row per stage and
batch size with the time of one sampling step's network call, its FLOPs (FlopCounterMode),
the achieved rate and its share of the matmul peak measured in the same run, and seconds per
image at the commands' default step counts. A second table gives the FLOPs per image and step
of every stage at FULL size, counted on the meta device (no compute, any machine).

Stages (one "call" is what one sampling step, or one encoding, runs):
  clip-text   ViT-L/14 text tower on prompt + empty prompt (2B), once per batch
  clip-image  ViT-L/14 image tower on B pictures (glide vary/blend), once per batch
  prior       the prior's guided pair: one call on 2B embeddings, 25 steps
  decoder     the decoder's guided pair: one call on 2B images at 64x64, 25 steps
  sr          one super-resolution U-Net on B images at 256x256, 7 steps (6 + 1 by its twin)
  glide-base, glide-upsample   GLIDE's base guided pair (20 steps) and upsampler (15), as bench.py

`--graphs` adds, for the prior, the decoder and the SR U-Net, a row per batch size with the same
call replayed as a CUDA graph (render/accel.GraphedNetwork, as `glide unclip` samples on CUDA)
and the largest difference from the eager output (0: bit for bit). On the CPU there are no
graphs: a stand-in backend that re-runs the call checks the wrapper only, its time is eager's.

    python benchmarks/unclip_bench.py --reduced          # CPU: reduced widths, a few minutes
    python benchmarks/unclip_bench.py --device cuda --dtype bf16 --batch-sizes 1,8,32
    python benchmarks/unclip_bench.py --device cuda --dtype fp16 --batch-sizes 1,8 --graphs --stages prior,decoder,sr
    python benchmarks/unclip_bench.py --tiny --graphs --stages prior,decoder,sr   # CPU, seconds: checks the script

`--memory` gives the peak GPU memory of `glide unclip` for each `--offload` choice (fp16, batch 1):
predicted from the full-size layouts on any machine, and on a GPU also measured with random
full-size weights (written once to --weights-dir, 7.4 GB) with the seconds per picture
(offload_memory.py).

    python benchmarks/unclip_bench.py --memory                      # the prediction, seconds on a CPU
    python benchmarks/unclip_bench.py --memory --device cuda --dtype fp16 --weights-dir /tmp/karlo-random
    python benchmarks/unclip_bench.py --memory --tiny               # CPU: the measured path on tiny networks
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

import bench
import harness
import offload_memory
from glidecli.nets.clip_vit import clip_text, image_embedding
from glidecli.nets.prior import ClipText
from glidecli.nets.unclip_config import OpenClipConfig, PriorConfig, karlo_decoder_config, karlo_sr_config
from glidecli.render.accel import CudaGraphs, GraphedNetwork
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, DEFAULT_SR

UNCLIP_STAGES = ("clip-text", "clip-image", "prior", "decoder", "sr")
GLIDE_STAGES = ("glide-base", "glide-upsample")
STEPS = {
    "clip-text": 1,
    "clip-image": 1,
    "prior": len(DEFAULT_PRIOR.sampler.schedule("squaredcos_cap_v2")),
    "decoder": len(DEFAULT_DECODER.sampler.schedule("squaredcos_cap_v2")),
    "sr": len(DEFAULT_SR.sampler.schedule("squaredcos_cap_v2")),
    "glide-base": bench.DEFAULT_STEPS["base"],
    "glide-upsample": bench.DEFAULT_STEPS["upsample"],
}
KIND = {"clip-text": "openclip", "clip-image": "openclip", "prior": "unclip-prior", "decoder": "unclip-decoder", "sr": "unclip-sr"}
GUIDED = {"prior", "decoder", "clip-text", "glide-base"}  # one call on 2B
GRAPHED = ("prior", "decoder", "sr")  # the stages `--graphs` also replays


def configs(reduced: bool, tiny: bool = False) -> dict:
    full = {"openclip": OpenClipConfig(), "unclip-prior": PriorConfig(), "unclip-decoder": karlo_decoder_config(), "unclip-sr": karlo_sr_config()}
    if tiny:  # a dry run of the script on a CPU: seconds in all
        return {
            "openclip": dataclasses.replace(full["openclip"], vision_width=64, vision_layers=2, text_width=64, text_heads=2, text_layers=2, embed_dim=64),
            "unclip-prior": dataclasses.replace(full["unclip-prior"], xf_width=64, xf_layers=2, xf_heads=4, clip_dim=64),
            "unclip-decoder": dataclasses.replace(full["unclip-decoder"], model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                                  attention_resolutions=(32,), xf_width=64, clip_dim=64),
            "unclip-sr": dataclasses.replace(full["unclip-sr"], image_size=64, model_channels=32, channel_mult=(1, 2), num_res_blocks=1),
        }
    if not reduced:
        return full
    # Same structure, narrower and shallower: seconds per call on a small CPU.
    return {
        "openclip": dataclasses.replace(full["openclip"], vision_width=256, vision_layers=6, text_width=256, text_heads=4, text_layers=6, embed_dim=256),
        "unclip-prior": dataclasses.replace(full["unclip-prior"], xf_width=512, xf_layers=6, xf_heads=8, clip_dim=256),
        "unclip-decoder": dataclasses.replace(full["unclip-decoder"], model_channels=64, xf_width=256, clip_dim=256),
        "unclip-sr": dataclasses.replace(full["unclip-sr"], model_channels=64),
    }


def build(kind: str, cfg, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A random-weight network; the CLIP ViT keeps no norms in fp32 and gets its causal text mask."""
    model = harness.random_network(kind, cfg, device, dtype, fp32_norms=kind != "openclip")
    if kind == "openclip":
        model.attn_mask = torch.full((77, 77), float("-inf"), device=device).triu_(1)
    return model


def make_step(stage: str, net: torch.nn.Module, batch: int, device: str, graphs=None):
    """A zero-argument callable running one step's (or one encoding's) network work; with
    `graphs` (a graph backend) the prior's, decoder's or SR's call goes through GraphedNetwork."""
    if stage in GRAPHED:
        network, args, kwargs = network_inputs(stage, net, batch, device)
        if graphs is not None:
            network = GraphedNetwork(network, graphs, name=stage)
        return lambda: network(*args, **kwargs)
    g = torch.Generator().manual_seed(batch)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    if stage == "clip-text":
        tokens = torch.randint(1, 49406, (2 * batch, 77), generator=g).to(device)
        mask = torch.ones(2 * batch, 77, dtype=torch.bool, device=device)
        return lambda: clip_text(net, tokens, mask)
    if stage == "clip-image":
        pixels = randn(batch, 3, net.config.image_size, net.config.image_size)
        return lambda: image_embedding(net, pixels)
    raise ValueError(f"unknown stage {stage}")


def network_inputs(stage: str, net: torch.nn.Module, batch: int, device: str):
    """(network, args, kwargs) of one sampling step's call of the prior, decoder or SR."""
    g = torch.Generator().manual_seed(batch)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    t = torch.full((2 * batch,), 500, dtype=torch.long, device=device)
    if stage == "prior":
        cfg = net.config
        text = ClipText(randn(2 * batch, cfg.clip_dim), randn(2 * batch, cfg.text_ctx, cfg.clip_dim),
                        torch.ones(2 * batch, cfg.text_ctx, dtype=torch.bool, device=device))
        x = randn(2 * batch, cfg.clip_dim)
        return net, (x, t, text), {}
    if stage == "decoder":
        cfg = net.config
        with torch.no_grad():
            cond = net.encode_clip(randn(2 * batch, cfg.clip_dim), randn(2 * batch, cfg.text_ctx, cfg.clip_dim),
                                   torch.ones(2 * batch, cfg.text_ctx, dtype=torch.bool, device=device), randn(2 * batch, cfg.clip_dim))
        x = randn(2 * batch, 3, cfg.image_size, cfg.image_size)
        return net, (x, t, cond), {}
    # sr: one U-Net (both have the same cost) on B images, low_res already at full size
    cfg = net.config
    x = randn(batch, 3, cfg.image_size, cfg.image_size)
    low = randn(batch, 3, cfg.image_size, cfg.image_size)
    return net.model_first_steps, (x, t[:batch]), {"low_res": low}


def flops_of(step) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        step()
    return counter.get_total_flops()


def full_size_flops() -> list[tuple[str, float, int]]:
    """(stage, GFLOP per image per call, calls per image) at full size, on meta tensors."""
    rows = []
    full = configs(reduced=False)
    for stage in UNCLIP_STAGES:
        net = build(KIND[stage], full[KIND[stage]], "meta", torch.float32)
        rows.append((stage, flops_of(make_step(stage, net, 1, "meta")) / 1e9, STEPS[stage]))
    for stage in GLIDE_STAGES:
        kind = stage.split("-", 1)[1]
        nets = bench.build_stage(kind, "meta", torch.float32)
        rows.append((stage, bench.count_flops(kind, nets, 1)[0] / 1e9, STEPS[stage]))
    return rows


def measure(stage: str, device: str, dtype: torch.dtype, batches, size: str, repeats: int, peak: float, graphs: bool = False) -> list[dict]:
    """Rows of one stage per batch size: the eager call, and with `graphs` (prior, decoder,
    SR) the same call through GraphedNetwork with its largest difference from eager."""
    harness.log(f"[{device}] building {stage} ...")
    backend = None
    if graphs and stage in GRAPHED:
        backend = CudaGraphs() if device == "cuda" else harness.ReplayingBackend()  # one pool per stage, as a session has
    if stage in GLIDE_STAGES:
        kind = stage.split("-", 1)[1]
        nets = bench.build_stage(kind, device, dtype)
        meta = bench.build_stage(kind, "meta", dtype)

        def steps_for(b: int, graphs: Any = None) -> Any:
            return bench.make_step(kind, nets, b, device)

        def flops_for(b: int) -> Any:
            return bench.count_flops(kind, meta, b)[0]
    else:
        cfg = configs(size == "reduced", size == "tiny")[KIND[stage]]
        net = build(KIND[stage], cfg, device, dtype)
        meta = build(KIND[stage], cfg, "meta", dtype)

        def steps_for(b: int, graphs: Any = None) -> Any:
            return make_step(stage, net, b, device, graphs)

        def flops_for(b: int) -> Any:
            return flops_of(make_step(stage, meta, b, "meta"))
    rows = []
    for index, batch in enumerate(batches):
        flops = flops_for(batch)
        eager = steps_for(batch)
        calls = [("eager", eager)]
        if backend is not None:
            calls.append(("graph" if device == "cuda" else "graph (CPU stand-in)", steps_for(batch, backend)))
        for how, step in calls:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            warmups = 2 if device == "cuda" else int(index == 0 or how != "eager")  # a graph's first call captures it
            times, _ = harness.time_calls(step, device, warmups, repeats, 30.0 if device == "cpu" else float("inf"))
            med = statistics.median(times)
            diff = None
            if how != "eager":
                with torch.no_grad():
                    diff = (step().float() - eager().float()).abs().max().item()
            rows.append(dict(stage=stage, call=how, batch=batch, med=med, gflop=flops / 1e9, rate=flops / med / 1e9,
                             share=flops / med / 1e9 / peak, steps=STEPS[stage], s_img=STEPS[stage] * med / batch,
                             mem=harness.peak_memory_gib(device), size="full" if stage in GLIDE_STAGES else size, diff=diff))
            harness.log(f"[{device}] {stage} {how} B={batch}: {med:.4f} s/call, {flops / med / 1e9:.0f} GFLOP/s")
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    harness.add_dtype_option(ap, "fp32")
    ap.add_argument("--batch-sizes", type=harness.int_list, default="1", help="images per batch, comma-separated (default 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reduced", action="store_true", help="time reduced-width unCLIP networks (GLIDE's stay full size)")
    ap.add_argument("--tiny", action="store_true", help="time tiny unCLIP networks: a quick check of the script on a CPU")
    ap.add_argument("--graphs", action="store_true", help="also time the prior, decoder and SR calls replayed as CUDA graphs")
    ap.add_argument("--stages", default=",".join(UNCLIP_STAGES + GLIDE_STAGES))
    ap.add_argument("--flops-only", action="store_true", help="only the full-size FLOP table (meta device)")
    harness.add_threads_option(ap, help_text="torch.set_num_threads for CPU runs (1 is steadiest on a shared machine)")
    ap.add_argument("--memory", action="store_true", help="peak memory per --offload choice: predicted, and measured on a GPU")
    ap.add_argument("--weights-dir", default="/tmp/glidecli-karlo-random", help="where --memory writes its random weights")
    return ap.parse_args()


def print_flops_table() -> None:
    print("## Full size: GFLOP per image per call (meta device)\n")
    harness.print_header(["stage", "GFLOP/image/call", "calls/image", "GFLOP/image"])
    totals = {"unclip": 0.0, "glide": 0.0}
    for stage, gflop, calls in full_size_flops():
        print(f"| {stage} | {gflop:.1f} | {calls} | {gflop * calls:.0f} |")
        if stage != "clip-image":
            totals["glide" if stage.startswith("glide") else "unclip"] += gflop * calls
    print(f"\n# per 256x256 image: glide unclip {totals['unclip']:.0f} GFLOP (CLIP text, prior, decoder, SR), "
          f"glide generate {totals['glide']:.0f} GFLOP (base, upsampler); the guided stages count both halves.")


def print_times_table(args: argparse.Namespace, began: float) -> None:
    dtype = harness.DTYPES[args.dtype]
    header = harness.machine_description([args.device])
    peak = harness.matmul_peak(args.device, dtype, 3 if args.device == "cpu" else 10)
    header.append(f"{args.device} {args.dtype} matmul peak: {peak:.0f} GFLOP/s")
    size = "tiny" if args.tiny else "reduced" if args.reduced else "full"
    rows = []
    for stage in args.stages.split(","):
        rows += measure(stage, args.device, dtype, args.batch_sizes, size, args.repeats, peak, args.graphs)
    print()
    print("\n".join("# " + line for line in header))
    harness.print_header(["stage", "size", "call", "images/batch", "s/call", "GFLOP/call", "GFLOP/s", "% of peak", "calls/image",
                          "s/image", "peak mem GiB", "max |graph - eager|"])
    for r in rows:
        diff = "-" if r["diff"] is None else f"{r['diff']:.3g}"
        print(f"| {r['stage']} | {r['size']} | {r['call']} | {r['batch']} | {r['med']:.4g} | {r['gflop']:.1f} | {r['rate']:.0f} "
              f"| {100 * r['share']:.0f}% | {r['steps']} | {r['s_img']:.4g} | {r['mem']:.2f} | {diff} |")
    print(f"\n# s/image = calls x s/call / images; guided stages (prior, decoder, glide-base, clip-text) run 2B in one call."
          f" Total {time.perf_counter() - began:.0f} s.")


def main() -> None:
    args = parse_args()
    harness.set_threads(args.threads)
    began = time.perf_counter()
    if args.memory:
        memory(args)
        return
    print_flops_table()
    if not args.flops_only:
        print_times_table(args, began)


def memory(args) -> None:
    offload_memory.print_prediction(torch.float16)
    if args.device == "cuda" or args.tiny:
        size = "tiny" if args.tiny else "full"
        weights = offload_memory.write_random_unclip(f"{args.weights_dir}-{size}", configs(False, tiny=args.tiny), harness.DTYPES[args.dtype])
        rows = offload_memory.measure_offload(weights, args.device, args.dtype)
        offload_memory.print_measured(rows, args.device, args.dtype)
    else:
        print("\n# measured rows: on a GPU (--device cuda); --tiny runs them on tiny networks to check the script")


if __name__ == "__main__":
    main()
