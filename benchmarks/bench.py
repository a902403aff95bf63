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
import os
import platform
import resource
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from glidecli.diffusion.guidance import clip_gradient, guided_model_fn
from glidecli.nets.checkpoint import ArchConfig, build_network, fp32_parameter_names, random_init_
from glidecli.nets.clip import NoisedClip, normalize
from glidecli.nets.config import ClipConfig, unet_defaults
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
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_BATCHES = {"cpu": (1, 2, 4), "cuda": (1, 8, 32, 64)}
GUIDANCE_SCALE = 3.0  # any value other than 1 runs the guided pair; the cost does not depend on it


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def machine_description(devices: list[str]) -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"CPU: {cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}, "
        f"Python {platform.python_version()}",
    ]
    if "cuda" in devices:
        p = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
                     f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, TF32 conv {torch.backends.cudnn.allow_tf32}")
    if hasattr(os, "getloadavg"):
        lines.append("load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
                     + f" (on {os.cpu_count()} cores: anything above ~0 means other processes share the CPU)")
    return lines


def matmul_peak(device: str, dtype: torch.dtype, tries: int) -> float:
    """Best GFLOP/s of torch.mm on large square matrices (the ceiling the networks can reach)."""
    n = 4096 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def build(kind: str, device: str, dtype: torch.dtype, arch: ArchConfig | None = None) -> torch.nn.Module:
    """A network with random weights, full size unless `arch` says otherwise; normalization
    parameters stay float32 (as loading does)."""
    with torch.device(device):
        model = build_network(kind, arch if arch else unet_defaults(kind))
    if device != "meta":
        random_init_(model, seed=0)
    keep = fp32_parameter_names(model)
    for name, param in model.named_parameters():
        param.data = param.data.to(torch.float32 if name in keep else dtype)
    return model.eval().requires_grad_(False)


def build_stage(stage: str, device: str, dtype: torch.dtype) -> dict:
    nets = {"unet": build(KIND[stage], device, dtype)}
    if stage == "clip":
        cfg = ClipConfig()
        nets["clip"] = NoisedClip(build("clip-image", device, dtype, cfg), build("clip-text", device, dtype, cfg))
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


def memory_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def time_calls(step, device: str, warmups: int, repeats: int, max_seconds: float) -> tuple[list, list]:
    """Wall and process CPU seconds of each timed call, after `warmups` untimed ones."""
    times: list[float] = []
    cpu_times: list[float] = []
    with torch.no_grad():  # as the samplers run
        for i in range(warmups + repeats):
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            sync(device)
            if i >= warmups:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
                if sum(times) >= max_seconds:
                    break
    return times, cpu_times


def run_stage(stage: str, device: str, dtype: torch.dtype, batches, repeats: int, max_seconds: float,
              steps: int, peak: float) -> list[dict]:
    log(f"[{device}] building {stage} ...")
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
            times, cpu_times = time_calls(step, device, warmups, repeats, max_seconds)
        except torch.cuda.OutOfMemoryError:
            log(f"[{device}] {stage} B={batch}: out of memory, skipped")
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
                         s_img=steps * med / batch, mem=memory_gib(device), by_op=by_op, busy=busy))
        log(f"[{device}] {stage} B={batch}: {med:.3f} s/call (n={len(times)}), {flops / med / 1e9:.0f} GFLOP/s")
    del nets, meta_nets
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu, cuda, or cpu,cuda (default: cpu, plus cuda when present)")
    ap.add_argument("--dtype", default="fp32", choices=DTYPES, help="network weights/activations (norms stay fp32)")
    ap.add_argument("--batch-sizes", help="images per batch, comma-separated (default: 1,2,4 on CPU, 1,8,32,64 on GPU)")
    ap.add_argument("--repeats", type=int, help="timed calls per batch size, median reported (default: 3 CPU, 10 GPU)")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="stop repeating a batch size once its timed calls took this long (default 30; n column)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--base-steps", type=int, help="sampling steps of base/clip/inpaint (default: the commands' defaults, "
                    + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items() if k != "upsample") + ")")
    ap.add_argument("--upsample-steps", type=int, default=DEFAULT_STEPS["upsample"], help="sampling steps of the upsampler (default %(default)s)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU runs")
    ap.add_argument("--quick", action="store_true", help="batch 1 (8 on GPU), 1 repeat")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = args.device.split(",")
    if "cuda" in devices and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device available")
    stages = args.stages.split(",")
    if unknown := set(stages) - set(STAGES):
        ap.error(f"unknown stages: {', '.join(sorted(unknown))}")
    dtype = DTYPES[args.dtype]
    began = time.perf_counter()

    header = machine_description(devices)
    rows, peaks = [], {}
    for device in devices:
        if args.quick:
            batches = (1,) if device == "cpu" else (8,)
        else:
            batches = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else DEFAULT_BATCHES[device]
        repeats = 1 if args.quick else args.repeats or (3 if device == "cpu" else 10)
        max_seconds = args.max_seconds if device == "cpu" else float("inf")
        log(f"[{device}] measuring the matmul peak ...")
        tries = 3 if device == "cpu" else 10
        peak_dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else []) + ([dtype] if dtype != torch.float32 else [])
        measured = {d: matmul_peak(device, d, tries) for d in dict.fromkeys(peak_dtypes)}
        header.append(f"{device} matmul peak (torch.mm {4096 if device == 'cpu' else 8192}^2, best of {tries}): "
                      + ", ".join(f"{str(d).replace('torch.', '')} {v:.0f} GFLOP/s" for d, v in measured.items()))
        for stage in stages:
            steps = args.upsample_steps if stage == "upsample" else args.base_steps or DEFAULT_STEPS[stage]
            rows += run_stage(stage, device, dtype, batches, repeats, max_seconds, steps, measured[dtype])
        if device == "cpu":  # the CPU may be shared: say whether its speed moved during the run
            again = matmul_peak(device, dtype, tries)
            header.append(f"cpu {args.dtype} matmul peak re-measured at the end: {again:.0f} GFLOP/s; load average now "
                          + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
        peaks[device] = measured[dtype]

    print("\n".join("# " + line for line in header))
    cols = ["stage", "device", "dtype", "images/batch", "net batch", "n", "s/call (median)", "s/call (min)",
            "GFLOP/call", "GFLOP/s", "% of peak", "s/image", "images/s", "peak mem GiB", "CPU busy"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
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


if __name__ == "__main__":
    main()
