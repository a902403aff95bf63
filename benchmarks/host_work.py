#!/usr/bin/env python
"""Time the host-side work of rendering a batch of 256x256 pictures, per batch size:

- drawing the noise of the default sampling (base 64x64, dpmpp_2m_sde 20 steps: the starting
  noise plus each step's fresh noise; upsampler dpmpp_2m 15 steps: its starting 256x256 noise),
  with diffusion/noise.ImageNoise, one generator per picture, copied to --device as sampling
  does;
- converting the finished batch to PIL pictures: one picture at a time, as before
  (on a GPU a float32 copy to the host and a wait per picture), against
  files/images.batch_to_pil (on a GPU rounded to 8 bits there and copied once; on the CPU
  picture by picture, in place);
- writing the PNGs (pngfile.write_png: settings chunks, temporary file, fsync, rename) with
  files/writer.BackgroundWriter on 1 thread against its default pool.

No network is run: these are the costs that add to the network calls' time. The table then
relates them to the wall time per picture measured on an H200 (benchmarks/README.md).

    python benchmarks/host_work.py                       # batch 1, 8, 32, 64 on the CPU
    python benchmarks/host_work.py --device cuda         # the noise copies and the conversion on the GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

import harness
from glidecli.diffusion.noise import ImageNoise
from glidecli.diffusion.samplers import Prediction, sample
from glidecli.files.images import batch_to_pil
from glidecli.files.pngfile import write_png
from glidecli.files.writer import BackgroundWriter, default_threads
from glidecli.render.engine import DEFAULT_BASE, DEFAULT_UPSAMPLE

# Seconds per 256x256 picture with the default sampling on the H200 (benchmarks/README.md,
# "Measured on an NVIDIA H200", pipeline.py in-process rows, fp16, graphs on).
H200_SECONDS_PER_PICTURE = {1: 0.544, 8: 0.295, 32: 0.265, 64: 0.259}
BASE_SIZE, SIZE = 64, 256
META = {  # what the engine records in each PNG, about this long
    "prompt": harness.PROMPT, "seed": 1000, "index": 0, "size": SIZE,
    "model": "base", "sampler": "dpmpp_2m_sde", "steps": "20", "scale": 3.0, "upsample_model": "upsample",
    "upsample_sampler": "dpmpp_2m", "upsample_steps": "15", "upsample_temp": 0.997,
    "device": "cuda", "dtype": "fp16", "glidecli_version": "0.1.0", "command": "generate",
}


def noise_draws(stage, noise_schedule: str) -> int:
    """How many times a stage's sampler draws fresh noise: its own loop, counted."""
    draws = []

    def count(like):
        draws.append(1)
        return torch.zeros_like(like)

    schedule = stage.sampler.schedule(noise_schedule)

    def denoise(x: torch.Tensor, i: int) -> Prediction:
        return Prediction(torch.zeros_like(x), x, None)

    noise = count if stage.sampler.name == "dpmpp_2m_sde" else None
    sample(stage.sampler.name, denoise, torch.zeros(1, 1), schedule, noise=noise)
    return len(draws)


BUSY: list[float] = []  # the writer pool's CPU time over its wall time, run by run


def timed(function, repeats: int, device: torch.device, busy: bool = False) -> float:
    """Median wall milliseconds of `function()` over `repeats` runs, after one warm-up."""
    times, cpu_times = harness.time_calls(function, device, warmups=1, repeats=repeats)
    if busy:
        BUSY.extend(cpu / wall for cpu, wall in zip(cpu_times, times))
    return 1000 * statistics.median(times)


def draw_noise(batch: int, base_draws: int, device: torch.device) -> None:
    noise = ImageNoise(range(1000, 1000 + batch))
    x = noise.initial((3, BASE_SIZE, BASE_SIZE), device)
    for _ in range(base_draws):
        x = noise(x)
    noise.initial((3, SIZE, SIZE), device)


def per_picture_before(images: torch.Tensor) -> list[Image.Image]:
    """The conversion as it was: each picture copied to the host in float32, then rounded."""
    pictures = []
    for image in images:
        scaled = ((image.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
        pictures.append(Image.fromarray(scaled.to(torch.uint8).permute(1, 2, 0).numpy(), "RGB"))
    return pictures


def picture_batch(batch: int, device: torch.device) -> torch.Tensor:
    """Pictures that compress like renders: smooth shapes (bicubic from 8x8) plus grain."""
    generator = torch.Generator().manual_seed(batch)
    coarse = torch.rand(batch, 3, 8, 8, generator=generator) * 2 - 1
    smooth = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    grain = torch.randn(batch, 3, SIZE, SIZE, generator=generator) * 0.03
    return (smooth + grain).clamp(-1, 1).to(device)


def overwrite_png(picture: Image.Image, path: Path, meta: dict) -> Path:
    return write_png(picture, path, meta, overwrite=True)  # each repeat writes the same names again


def write_all(pictures: list[Image.Image], folder: Path, threads: int) -> None:
    writer = BackgroundWriter(threads=threads)
    reported = []
    try:
        for index, picture in enumerate(pictures):
            meta = {**META, "index": index, "seed": 1000 + index}
            writer.submit(overwrite_png, picture, folder / f"{index:05d}.png", meta, report=reported.append)
        writer.close()
    finally:
        writer.finish()
    assert len(reported) == len(pictures)


def batch_row(batch: int, args: argparse.Namespace, device: torch.device, base_draws: int, work: Path) -> tuple[str, list[int]]:
    """One batch size's table row, and the sizes of the PNG files it wrote."""
    images = picture_batch(batch, device)
    noise = timed(lambda: draw_noise(batch, base_draws, device), args.repeats, device)
    before = timed(lambda: per_picture_before(images), args.repeats, device)
    now = timed(lambda: batch_to_pil(images), args.repeats, device)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(per_picture_before(images), batch_to_pil(images)))
    pictures = batch_to_pil(images)
    folder = work / f"batch-{batch}"
    folder.mkdir(exist_ok=True)
    one = timed(lambda: write_all(pictures, folder, 1), args.repeats, device)
    pool = timed(lambda: write_all(pictures, folder, args.threads), args.repeats, device, busy=True)
    sizes = [p.stat().st_size for p in folder.glob("*.png")]
    total_before, total_now = noise + before + one, noise + now + pool
    wall = H200_SECONDS_PER_PICTURE.get(batch)
    share = f"{total_before / batch / 10 / wall:.1f}% -> {total_now / batch / 10 / wall:.1f}%" if wall else "-"

    def cell(ms: float) -> str:
        return f"{ms:.1f} ms ({ms / batch:.2f}/picture)"

    row = (f"| {batch} | {cell(noise)} | {cell(before)} | {cell(now)} | {cell(one)} | {cell(pool)} "
           f"| {cell(total_before)} | {cell(total_now)} | {share} |")
    return row, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=harness.int_list, default="1,8,32,64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=default_threads(), help="the writer's pool (default: min(4, cores))")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch's CPU threads (default 1: on a shared machine, more make every small op wait for a busy core)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the PNGs (default: a temporary one)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.torch_threads)
    base_draws = noise_draws(DEFAULT_BASE, "squaredcos_cap_v2")
    upsample_draws = noise_draws(DEFAULT_UPSAMPLE, "linear")
    work = args.work or Path(tempfile.mkdtemp(prefix="glidecli-host-work-"))
    work.mkdir(parents=True, exist_ok=True)

    print(f"machine: {harness.cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), Pillow {PIL.__version__}, numpy {np.__version__}, "
          f"device {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}")
    print(f"noise per picture: base 1 + {base_draws} draws of 3x{BASE_SIZE}x{BASE_SIZE}, upsampler 1 + {upsample_draws} of 3x{SIZE}x{SIZE}; "
          f"PNGs in {work}; median of {args.repeats} runs")
    print()
    harness.print_header(["batch", "noise", "to PIL, per picture (before)", "to PIL, batch_to_pil", "PNGs, 1 thread",
                          f"PNGs, {args.threads} threads", "host work before", "host work now",
                          "share of H200 wall time, before -> now"])
    sizes = []
    for batch in args.batch_sizes:
        row, written = batch_row(batch, args, device, base_draws, work)
        sizes += written
        print(row, flush=True)
    print()
    print(f"PNG files {statistics.mean(sizes) / 1024:.0f} KiB on average. The pool's writes kept {statistics.median(BUSY):.2f} cores "
          f"busy (CPU time over wall time, median; below {args.threads} when other work held the cores). "
          f"Load average {os.getloadavg()[0]:.2f} at the end.")
    print("Share of H200 wall time: host work per picture here over the H200's wall time per picture "
          + ", ".join(f"{H200_SECONDS_PER_PICTURE[b]} s at batch {b}" for b in args.batch_sizes if b in H200_SECONDS_PER_PICTURE)
          + " (pipeline.py, default sampling, fp16, graphs). It counts everything as if it added to the"
          " wall time; in `glide` the PNGs of all batches but the last are written while the next batch samples.")


if __name__ == "__main__":
    sys.exit(main())
