#!/usr/bin/env python
"""Whether the shapes unCLIP's super-resolution (models/: shapes-sr, 32 -> 128, trained with
`glide train --kind unclip-sr`) keeps the pictures' colours, measured on the pixels as
benchmarks/unclip_shapes.py measures them (the colours nearest to the centre and the border).

- unclip: the 8 prompts of shapes.EVAL_SCENES x N seeds through prior + decoder (32x32) and,
  with the same seeds, prior + decoder + SR (128x128; the decoder's pictures are the same, as
  every stage of a picture continues its own noise): pictures with both prompted colours right
  at each size, and 128px pictures whose two colours are those of their 32px picture;
- scenes: the 8 scenes drawn at 32x32, enlarged by the SR (N seeds) and by bicubic resizing,
  against the same scenes drawn at 128x128 (mean absolute error in 8-bit levels).

    python benchmarks/unclip_sr_colours.py              # models/weights.toml, 8 seeds: a few minutes on a CPU
    python benchmarks/unclip_sr_colours.py --seeds 2    # quicker
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch

import harness
from glidecli.diffusion.noise import ImageNoise
from glidecli.files.fetch import fetch_entry
from glidecli.files.manifest import load_manifest
from glidecli.nets.checkpoint import load_network
from glidecli.nets.unclip import ImprovedSuperRes
from glidecli.render.engine import Job, RenderOptions, Session
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, DEFAULT_SR, render_unclip, sr_low_res, super_resolve
from glidecli.train.shapes import EVAL_SCENES, draw_scene, scene_colours, shape_caption
from unclip_shapes import CLIP

PRIOR = dataclasses.replace(DEFAULT_PRIOR, model="shapes-prior", scale=4.0)
DECODER = dataclasses.replace(DEFAULT_DECODER, model="shapes-decoder", scale=3.0)
SR = dataclasses.replace(DEFAULT_SR, model="shapes-sr")  # glide unclip's SR sampler: ddpm, 7 steps


def prompt_jobs(seeds: int) -> list[Job]:
    """The 8 scenes' captions, `seeds` seeds each; job index // seeds is the scene."""
    return [Job(shape_caption(*scene), seed, i) for i, (scene, seed) in enumerate((s, k) for s in EVAL_SCENES for k in range(seeds))]


def unclip_colours(session: Session, seeds: int) -> dict[str, int]:
    jobs = prompt_jobs(seeds)
    options = RenderOptions(batch_size=8)
    with torch.no_grad():
        small = [harness.rgb_pixels(done.image) for done in render_unclip(session, jobs, PRIOR, DECODER, None, clip=CLIP, options=options)]
        large = [harness.rgb_pixels(done.image) for done in render_unclip(session, jobs, PRIOR, DECODER, SR, clip=CLIP, options=options)]
    counts = {"pictures": len(jobs), "both_32": 0, "both_128": 0, "same": 0, "size_128": int(large[0].shape[0])}
    for job, a, b in zip(jobs, small, large):
        scene = EVAL_SCENES[job.index // seeds]
        found_a, found_b = scene_colours(a), scene_colours(b)
        counts["both_32"] += found_a == (scene[0], scene[2])
        counts["both_128"] += found_b == (scene[0], scene[2])
        counts["same"] += found_a == found_b
    return counts


def scene_errors(weights: str, seeds: int) -> dict[str, float]:
    """Mean absolute error (0-255) of the SR's and of bicubic enlargements of the scenes drawn at
    32x32, against the scenes drawn at 128x128, and both colours right after the SR."""
    entry = load_manifest(weights).model("shapes-sr")
    sr = load_network("unclip-sr", entry.arch, fetch_entry(entry, progress=False))
    assert isinstance(sr, ImprovedSuperRes)
    size = sr.config.image_size
    small = torch.stack([_tensor(np.asarray(draw_scene(c, s, b, size // 4))) for c, s, b in EVAL_SCENES])
    truth = np.stack([np.asarray(draw_scene(c, s, b, size)) for c, s, b in EVAL_SCENES]).astype(np.float64)
    bicubic = _pixels(sr_low_res(small, size))
    errors, right = [], 0
    with torch.no_grad():
        for seed in range(seeds):
            noise = ImageNoise([seed * len(EVAL_SCENES) + k for k in range(len(EVAL_SCENES))])
            made = _pixels(super_resolve(sr, small, noise, SR.sampler))
            errors.append(np.abs(made - truth).mean())
            right += sum(scene_colours(p) == (c, b) for p, (c, _, b) in zip(made.astype(np.uint8), EVAL_SCENES))
    return {"sr": float(np.mean(errors)), "bicubic": float(np.abs(bicubic - truth).mean()), "right": right, "pictures": seeds * len(EVAL_SCENES)}


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1


def _pixels(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(harness.MODELS))
    ap.add_argument("--seeds", type=int, default=8)
    args = ap.parse_args()
    session = harness.offline_session(args.weights)
    began = time.perf_counter()
    colours = unclip_colours(session, args.seeds)
    scenes = scene_errors(args.weights, args.seeds)
    n = colours["pictures"]
    print(f"## The shapes unCLIP's super-resolution ({args.weights}), {args.seeds} seeds per prompt, CPU fp32\n")
    harness.print_header(["glide unclip, the 8 prompts", "both colours right", "share"])
    print(f"| prior + decoder, 32x32 | {colours['both_32']} / {n} | {colours['both_32'] / n:.0%} |")
    print(f"| prior + decoder + shapes-sr, {colours['size_128']}x{colours['size_128']} | {colours['both_128']} / {n} | {colours['both_128'] / n:.0%} |")
    print(f"\n{colours['same']} / {n} 128px pictures have the two colours of their 32px picture.")
    print(f"\nThe 8 scenes drawn at 32x32, enlarged 4x ({scenes['pictures']} SR pictures: {scenes['right']} with both colours right);"
          " mean absolute error against the scenes drawn at 128x128, 8-bit levels:\n")
    harness.print_header(["enlargement", "mean absolute error"])
    print(f"| shapes-sr (ddpm, 7 steps) | {scenes['sr']:.1f} |")
    print(f"| bicubic | {scenes['bicubic']:.1f} |")
    print(f"\n# {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
