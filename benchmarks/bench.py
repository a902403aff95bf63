#!/usr/bin/env python
"""Speed of glidecli's networks per sampling step, against this machine's measured matmul peak.

Networks are built at full size with random weights (same cost as the real checkpoints, no
download). For every stage and batch size it reports the time of one sampling step's network
call(s), the FLOPs of that call, the achieved FLOP rate and its share of the matmul peak
measured in the same run, seconds per image for the default step counts, and peak memory.

Stages (one "call" is what one sampling step runs):
  base      base model, classifier-free guided: ONE network call on 2B images (cond + uncond)
  upsample  64->256 upsampler, conditional only (as GLIDE samples it): one call on B images
  clip      CLIP-guided base step: conditional base call on B + noised-CLIP gradient on B
  inpaint   base-inpaint model, classifier-free guided pair (2B), with source and mask

    python benchmarks/bench.py                      # CPU (+ GPU when present), all stages
    python benchmarks/bench.py --quick              # batch 1, 1 repeat: a few minutes on CPU
    python benchmarks/bench.py --device cuda --dtype bf16 --batch-sizes 1,8,32,64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import harness
from glidecli.diffusion.guidance import clip_gradient, guided_model_fn
from glidecli.nets.clip import NoisedClip, normalize
from glidecli.nets.config import ClipConfig
from glidecli.render.engine import DEFAULT_BASE, DEFAULT_INPAINT_BASE, DEFAULT_UPSAMPLE
from glidecli.render.pipeline import SamplerChoice

STAGES = ("base", "upsample", "clip", "inpaint")
# Sampling steps per image: the defaults of the commands that run each stage (render.py).
DEFAULT_STEPS = {
    "base": len(DEFAULT_BASE.sampler.schedule("squaredcos_cap_v2")),
    "upsample": len(DEFAULT_UPSAMPLE.sampler.schedule("linear")),
    "clip": 100,  # glide clip-guide: ddpm, 100 steps
    "inpaint": len(DEFAULT_INPAINT_BASE.sampler.schedule("squaredcos_cap_v2")),
}
KIND = {"base": "base", "upsample": "upsample", "clip": "base", "inpaint": "base-inpaint"}
DEFAULT_BATCHES = {"cpu": (1, 2, 4), "cuda": (1, 8, 32, 64)}
GUIDANCE_SCALE = 3.0  # any value other than 1 runs the guided pair; the cost does not depend on it


def build_stage(stage: str, device: str, dtype: torch.dtype) -> dict:
    nets = {"unet": harness.random_network(KIND[stage], device=device, dtype=dtype)}
    if stage == "clip":
        cfg = ClipConfig()
        nets["clip"] = NoisedClip(harness.random_network("clip-image", cfg, device, dtype),
                                  harness.random_network("clip-text", cfg, device, dtype))
    return nets


def make_step(stage: str, nets: dict, batch: int, device: str, counting: bool = False):
    """A zero-argument callable running one sampling step's network work for `batch` images."""
    unet = nets["unet"]
    cfg = unet.config
    g = torch.Generator().manual_seed(batch)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    tokens = torch.randint(0, cfg.n_vocab, (batch, cfg.text_ctx), generator=g).to(device)
    mask = torch.ones(batch, cfg.text_ctx, dtype=torch.bool, device=device)
    with torch.no_grad():  # the text is encoded once per batch, outside the sampling loop
        text = unet.encode_text(tokens, mask)
        uncond = unet.encode_text(torch.zeros_like(tokens), mask & (torch.arange(cfg.text_ctx, device=device) < 2))
    x = randn(batch, 3, cfg.image_size, cfg.image_size)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    if stage == "base":
        fn = guided_model_fn(unet, text, uncond_text=uncond, scale=GUIDANCE_SCALE)
    elif stage == "inpaint":
        keep = (randn(batch, 1, cfg.image_size, cfg.image_size) > 0).float()
        source = randn(batch, 3, cfg.image_size, cfg.image_size)
        fn = guided_model_fn(unet, text, uncond_text=uncond, scale=GUIDANCE_SCALE,
                             inpaint_image=source * keep, inpaint_mask=keep)
    elif stage == "upsample":
        fn = guided_model_fn(unet, text, low_res=randn(batch, 3, 64, 64))
    else:  # clip: conditional base call + the CLIP gradient the sampler adds
        fn = guided_model_fn(unet, text)
        clip = nets["clip"]
        text_emb = normalize(randn(batch, clip.image_encoder.config.embed_dim))
        schedule = SamplerChoice().schedule(cfg.noise_schedule, cfg.diffusion_steps)
        grad = clip_gradient(clip, text_emb, 1.0, schedule)

        def counted_grad(x, i):
            # FlopCounterMode cannot follow torch.autograd.grad (its module hooks raise); the same
            # FLOPs as similarity_grad: forward + input-gradient backward (weights need no grad).
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (clip.image_embeddings(x, t) * text_emb).sum().backward()
            return x.grad

        if counting:
            grad = counted_grad
        return lambda: (fn(x, t), grad(x, 50))
    return lambda: fn(x, t)


def count_flops(stage: str, meta_nets: dict, batch: int) -> tuple[float, dict]:
    """FLOPs of one step, counted on `meta` tensors (no compute) by torch's FlopCounterMode."""
    step = make_step(stage, meta_nets, batch, "meta", counting=True)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        step()
    by_op = {str(k).replace("aten.", ""): v for k, v in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), by_op


def run_stage(stage: str, device: str, dtype: torch.dtype, batches, repeats: int, max_seconds: float,
              steps: int, peak: float) -> list[dict]:
    harness.log(f"[{device}] building {stage} ...")
    nets = build_stage(stage, device, dtype)
    meta_nets = build_stage(stage, "meta", dtype)
    rows = []
    for index, batch in enumerate(batches):
        step = make_step(stage, nets, batch, device)
        flops, by_op = count_flops(stage, meta_nets, batch)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        # CPU: one warm-up per stage (the calls are seconds long); GPU: two per batch size.
        warmups = 2 if device == "cuda" else int(index == 0)
        try:
            times, cpu_times = harness.time_calls(step, device, warmups, repeats, max_seconds)
        except torch.cuda.OutOfMemoryError:
            harness.log(f"[{device}] {stage} B={batch}: out of memory, skipped")
            del step
            torch.cuda.empty_cache()
            continue
        med = statistics.median(times)
        # Process CPU time over (wall time x threads): near 100% when this process had the cores
        # to itself; far lower means other processes were running and the times are inflated.
        busy = statistics.median(cpu_times) / (med * torch.get_num_threads())
        net_batch = batch * (2 if stage in ("base", "inpaint") else 1)
        rows.append(dict(stage=stage, device=device, batch=batch, net_batch=net_batch, n=len(times), med=med,
                         min=min(times), gflop=flops / 1e9, rate=flops / med / 1e9, share=flops / med / 1e9 / peak,
                         s_img=steps * med / batch, mem=harness.peak_memory_gib(device), by_op=by_op, busy=busy))
        harness.log(f"[{device}] {stage} B={batch}: {med:.3f} s/call (n={len(times)}), {flops / med / 1e9:.0f} GFLOP/s")
    del nets, meta_nets
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def parse_args() -> tuple[argparse.Namespace, list[str], list[str]]:
    """The options, the devices and the stages."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu, cuda, or cpu,cuda (default: cpu, plus cuda when present)")
    harness.add_dtype_option(ap, "fp32", "network weights/activations (norms stay fp32)")
    ap.add_argument("--batch-sizes", help="images per batch, comma-separated (default: 1,2,4 on CPU, 1,8,32,64 on GPU)")
    ap.add_argument("--repeats", type=int, help="timed calls per batch size, median reported (default: 3 CPU, 10 GPU)")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="stop repeating a batch size once its timed calls took this long (default 30; n column)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--base-steps", type=int, help="sampling steps of base/clip/inpaint (default: the commands' defaults, "
                    + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items() if k != "upsample") + ")")
    ap.add_argument("--upsample-steps", type=int, default=DEFAULT_STEPS["upsample"], help="sampling steps of the upsampler (default %(default)s)")
    harness.add_threads_option(ap, help_text="torch.set_num_threads for the CPU runs")
    ap.add_argument("--quick", action="store_true", help="batch 1 (8 on GPU), 1 repeat")
    args = ap.parse_args()

    harness.set_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = args.device.split(",")
    if "cuda" in devices and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device available")
    stages = args.stages.split(",")
    if unknown := set(stages) - set(STAGES):
        ap.error(f"unknown stages: {', '.join(sorted(unknown))}")
    return args, devices, stages


def measure_device(device: str, args: argparse.Namespace, stages: list[str], header: list[str]) -> list[dict]:
    """Every stage's rows on one device; adds the matmul peaks to `header`."""
    dtype = harness.DTYPES[args.dtype]
    if args.quick:
        batches = (1,) if device == "cpu" else (8,)
    else:
        batches = tuple(harness.int_list(args.batch_sizes)) if args.batch_sizes else DEFAULT_BATCHES[device]
    repeats = 1 if args.quick else args.repeats or (3 if device == "cpu" else 10)
    max_seconds = args.max_seconds if device == "cpu" else float("inf")
    harness.log(f"[{device}] measuring the matmul peak ...")
    tries = 3 if device == "cpu" else 10
    peak_dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else []) + ([dtype] if dtype != torch.float32 else [])
    measured = {d: harness.matmul_peak(device, d, tries) for d in dict.fromkeys(peak_dtypes)}
    header.append(f"{device} matmul peak (torch.mm {harness.matmul_side(device)}^2, best of {tries}): "
                  + ", ".join(f"{str(d).replace('torch.', '')} {v:.0f} GFLOP/s" for d, v in measured.items()))
    rows = []
    for stage in stages:
        steps = args.upsample_steps if stage == "upsample" else args.base_steps or DEFAULT_STEPS[stage]
        rows += run_stage(stage, device, dtype, batches, repeats, max_seconds, steps, measured[dtype])
    if device == "cpu":  # the CPU may be shared: say whether its speed moved during the run
        again = harness.matmul_peak(device, dtype, tries)
        header.append(f"cpu {args.dtype} matmul peak re-measured at the end: {again:.0f} GFLOP/s; load average now "
                      + harness.load_average())
    return rows


def print_report(header: list[str], rows: list[dict], args: argparse.Namespace, began: float) -> None:
    print("\n".join("# " + line for line in header))
    harness.print_header(["stage", "device", "dtype", "images/batch", "net batch", "n", "s/call (median)", "s/call (min)",
                          "GFLOP/call", "GFLOP/s", "% of peak", "s/image", "images/s", "peak mem GiB", "CPU busy"])
    for r in rows:
        print(f"| {r['stage']} | {r['device']} | {args.dtype} | {r['batch']} | {r['net_batch']} | {r['n']} "
              f"| {r['med']:.4g} | {r['min']:.4g} | {r['gflop']:.1f} | {r['rate']:.0f} | {100 * r['share']:.0f}% "
              f"| {r['s_img']:.4g} | {1 / r['s_img']:.3g} | {r['mem']:.2f} "
              + (f"| {100 * r['busy']:.0f}% |" if r["device"] == "cpu" else "| |"))
    first = {r["stage"]: r for r in reversed(rows)}
    print("\n# FLOPs are counted by torch.utils.flop_counter.FlopCounterMode: matmuls (mm/addmm/bmm), convolutions"
          " (and their backward for the CLIP gradient) and attention (SDPA, counted as its two matmuls);"
          " GroupNorm, SiLU, adds, concatenations and resampling count 0. Per image and step: " + "; ".join(
              f"{s} {sum(r['by_op'].values()) / r['batch'] / 1e9:.1f} (conv "
              f"{sum(v for k, v in r['by_op'].items() if k.startswith('conv')) / r['batch'] / 1e9:.1f})"
              for s, r in first.items()) + " GFLOP. The text encoder runs once per batch and is not counted.")
    steps_used = {k: args.upsample_steps if k == "upsample" else args.base_steps or v for k, v in DEFAULT_STEPS.items()}
    print(f"# s/image = steps x s/call / images (steps: {', '.join(f'{k} {v}' for k, v in steps_used.items())}); % of peak = GFLOP/s at the median over the {args.dtype} matmul peak above.")
    print("# peak mem: CPU = process peak RSS (ru_maxrss, monotonic over the run, so it includes earlier rows);"
          " GPU = torch.cuda.max_memory_allocated per batch size. CPU busy = process CPU time / (wall x threads):"
          " well under 100% means other processes shared the cores (on a shared machine compare with --threads 1).")
    print(f"# total benchmark time {time.perf_counter() - began:.0f} s")


def main() -> None:
    args, devices, stages = parse_args()
    began = time.perf_counter()
    header = harness.machine_description(devices)
    rows = []
    for device in devices:
        rows += measure_device(device, args, stages, header)
    print_report(header, rows, args, began)


if __name__ == "__main__":
    main()
