#!/usr/bin/env python
"""Text diffs and --keep-layout (the unCLIP paper's sections 3.1-3.3) on the small unCLIP of
models/ (shapes-clip, shapes-prior, shapes-decoder), counted over seeds on the pixels, as
benchmarks/unclip_shapes.py counts: the colours nearest to the centre (the object) and to the
border (the background), and the object's mask (pixels nearer the centre's colour).

- sources: `glide unclip "a red circle on a blue background"` with seeds 0..N-1;
- text diffs from that caption toward a green circle (object colour), a red square (shape) and a
  yellow background, at amounts 0.25, 0.5 and 0.75, decoded from fresh noise (seed 100 + k) and with
  --keep-layout: how many pictures have the new colour, and how many keep the source's object
  in place (mask IoU >= 0.5 with the source's);
- inversion: --keep-layout at amount 0 (the picture's own embedding) against the source, mean
  absolute error in 8-bit levels, for 0 and 3 refinements, beside fresh-noise variations;
- blend: each source to a drawn "green square on a yellow background" in 4 frames, with and
  without --keep-layout: mean mask IoU of neighbouring frames.

    python benchmarks/unclip_text_diff.py              # models/weights.toml, 3 seeds: ~5 minutes on 2 idle cores
    python benchmarks/unclip_text_diff.py --seeds 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import harness
from glidecli.render.engine import Job, RenderOptions, Session
from glidecli.render.unclip import (
    BlendJob,
    TextDiff,
    VaryJob,
    render_blend,
    render_unclip,
    render_vary,
)
from glidecli.train.shapes import draw_scene, scene_colours
from unclip_shapes import CLIP, DECODER, PRIOR, iou, object_mask

SOURCE = "a red circle on a blue background"
AMOUNTS = (0.25, 0.5, 0.75)
# (name, new caption, what the edit should give: (object colour, shape, background), None = unchanged)
EDITS = (
    ("object colour", "a green circle on a blue background", ("green", None, None)),
    ("shape", "a red square on a blue background", (None, "square", None)),
    ("background", "a red circle on a yellow background", (None, None, "yellow")),
)


def shape_of(mask: np.ndarray) -> str:
    """circle, square or triangle by how much of its bounding box the object fills (a disc
    pi/4 = 0.79, a square 1, a triangle 1/2)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return "-"
    fill = rows.size / ((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"


def sources(session: Session, seeds: int, folder: Path) -> list[Path]:
    paths = []
    with torch.no_grad():
        for done in render_unclip(session, [Job(SOURCE, k, k) for k in range(seeds)], PRIOR, DECODER, None, clip=CLIP, options=RenderOptions(batch_size=8)):
            paths.append(folder / f"source-{done.job.seed}.png")
            done.image.save(paths[-1])
    return paths


def edit_counts(session: Session, paths: list[Path], caption: str, wanted: tuple[str | None, str | None, str | None], keep: bool) -> tuple[list[int], list[int]]:
    """Per amount: pictures with the wanted change, and pictures keeping the source's object in place."""
    changed, kept = [0] * len(AMOUNTS), [0] * len(AMOUNTS)
    for k, path in enumerate(paths):
        reference = object_mask(harness.rgb_pixels(Image.open(path)))
        jobs = [VaryJob("", 100 + k, i, amount=a) for i, a in enumerate(AMOUNTS)]
        with torch.no_grad():
            done = list(render_vary(session, jobs, path, DECODER, None, clip=CLIP, text_diff=TextDiff(caption, SOURCE), keep_layout=keep,
                                    options=RenderOptions(batch_size=len(jobs))))
        for i, picture in enumerate(done):
            pixels = harness.rgb_pixels(picture.image)
            mask = object_mask(pixels)
            found = (*scene_colours(pixels), shape_of(mask))
            colour, shape, background = wanted
            changed[i] += (colour is None or found[0] == colour) and (shape is None or found[2] == shape) and (background is None or found[1] == background)
            kept[i] += iou(mask, reference) >= 0.5
    return changed, kept


def inversion_errors(session: Session, paths: list[Path]) -> dict[str, float]:
    """Mean absolute error (8-bit levels) to the source: --keep-layout at amount 0 by
    refinements, and a fresh-noise variation."""
    errors: dict[str, list[float]] = {}
    for k, path in enumerate(paths):
        source = harness.rgb_pixels(Image.open(path))
        runs = {f"--keep-layout, {r} refinements": dict(keep_layout=True, layout_refine=r) for r in (0, 3)}
        runs["fresh noise (plain vary)"] = {}
        for name, options in runs.items():
            with torch.no_grad():
                (done,) = list(render_vary(session, [Job("", 100 + k, 0)], path, DECODER, None, clip=CLIP, **options))
            errors.setdefault(name, []).append(float(np.abs(harness.rgb_pixels(done.image) - source).mean()))
    return {name: float(np.mean(values)) for name, values in errors.items()}


def blend_ious(session: Session, paths: list[Path], folder: Path, keep: bool, frames: int = 4) -> float:
    """Mean mask IoU of neighbouring frames, blending each source to a drawn other scene."""
    other = folder / "other.png"
    draw_scene("green", "square", "yellow", 32).save(other)
    values = []
    for k, path in enumerate(paths):
        jobs = [BlendJob("", 100 + k, i, mix=i / (frames - 1)) for i in range(frames)]
        with torch.no_grad():
            done = list(render_blend(session, jobs, path, other, DECODER, None, clip=CLIP, keep_layout=keep, options=RenderOptions(batch_size=frames)))
        masks = [object_mask(harness.rgb_pixels(d.image)) for d in done]
        values += [iou(a, b) for a, b in zip(masks, masks[1:])]
    return float(np.mean(values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(harness.MODELS))
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    session = harness.offline_session(args.weights)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = sources(session, args.seeds, folder)
        n = len(paths)
        # Printed as measured (the parts are slow on a busy CPU): the inversion first, then each edit.
        print(f"## Text diffs from {SOURCE!r} on the shapes unCLIP ({args.weights}), {n} seeds, CPU fp32\n")
        print(f"Amount 0 against the source, mean absolute error in 8-bit levels ({n} pictures):\n")
        harness.print_header(["decoded", "error"], flush=True)
        for name, value in inversion_errors(session, paths).items():
            print(f"| {name} | {value:.2f} |", flush=True)
        print(f"\nEach cell: pictures with the edit's change / pictures whose object keeps the source's place (mask IoU >= 0.5), of {n}\n")
        harness.print_header(["edit", "--keep-layout", *(f"amount {a:g}" for a in AMOUNTS)], flush=True)
        for name, caption, wanted in EDITS:
            for keep in (False, True):
                changed, kept = edit_counts(session, paths, caption, wanted, keep)
                cells = " | ".join(f"{c} / {p}" for c, p in zip(changed, kept))
                print(f"| {name} | {'yes' if keep else 'no'} | {cells} |", flush=True)
            if name == EDITS[0][0]:
                blends = {keep: blend_ious(session, paths, folder, keep) for keep in (False, True)}
                print(f"\n(blend to a green square on yellow, 4 frames: neighbouring frames' mask IoU {blends[False]:.2f} without"
                      f" --keep-layout, {blends[True]:.2f} with)\n", flush=True)
    print(f"\n# {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
