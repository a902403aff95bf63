#!/usr/bin/env python
"""Does --keep-layout keep the layout (the unCLIP paper's sections 3.1-3.3)? Measured where the
answer is not given away: off-centre pictures, and a decoder whose object's place the CLIP
image embedding does not fix (models/shapes-decoder-spread, trained on `glide dataset shapes
--spread 0.25`; models/shapes-decoder drew every object near the centre, so its fresh-noise
variations landed where the original was anyway: benchmarks/unclip_text_diff.py).

- sources: "a red circle on a blue background", its centre at least --min-offset of the side
  from the picture's (drawn by draw_scene with --spread, or with `--sources decoded` drawn by
  the spread decoder itself from the prior's embedding, seeds 0.. kept while off-centre);
- vary: each source's embedding turned toward "a green circle on a blue background" (or
  --toward) at amounts 0 (the picture's own embedding: plain `glide vary`), 0.25, 0.5 and 0.75,
  from fresh noise (seed 100 + k; ddpm as `glide vary`) and with --keep-layout: how many
  pictures keep the source's object in place (mask IoU >= 0.5), the mean IoU with the source's
  object and with its background (a figure-ground swap), the colours, the error to the source;
- blend: each source to an off-centre green square on blue, and on yellow, 4 frames, with and
  without --keep-layout: mean mask IoU of neighbouring frames, and of each frame with the source.

The object's mask is read from the pixels without assuming where it is: the background is the
commonest colour of the 8 (nearest to each pixel), the object the commonest of the others, and
the mask the pixels nearer the object's mean colour than the background's.

    python benchmarks/unclip_layout.py                       # models/weights.toml, 16 seeds: ~6 minutes on 2 busy cores
    python benchmarks/unclip_layout.py --sources decoded
    python benchmarks/unclip_layout.py --no-blend --toward "a red circle on a yellow background"
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import harness
from glidecli.nets.clip_vit import image_embedding, preprocess_image
from glidecli.nets.kinds import ModelKind
from glidecli.render.engine import Job, RenderOptions, Session, Stage
from glidecli.render.unclip import (
    DEFAULT_DECODER,
    BlendJob,
    TextDiff,
    VaryJob,
    render_blend,
    render_unclip,
    render_vary,
)
from glidecli.train.shapes import SHAPE_COLOURS, draw_scene
from unclip_shapes import CLIP, PRIOR, iou

SOURCE = "a red circle on a blue background"
TOWARD = "a green circle on a blue background"
AMOUNTS = (0.0, 0.25, 0.5, 0.75)
# Blends' other pictures: the object's colour and shape change (the background stays), or all three.
BLEND_TARGETS = (("green", "square", "blue"), ("green", "square", "yellow"))
SIDE = 32  # the shapes decoders' size
NAMES = list(SHAPE_COLOURS)
PALETTE = np.array([SHAPE_COLOURS[name] for name in NAMES], dtype=np.float64)


def read_scene(picture: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(the object's mask, its colour, the background's colour) of a picture [H, W, 3], wherever
    the object is."""
    labels = ((picture[:, :, None, :] - PALETTE) ** 2).sum(-1).argmin(-1)
    counts = np.bincount(labels.ravel(), minlength=len(NAMES))
    background = int(counts.argmax())
    counts[background] = 0
    if counts.sum() == 0:
        return np.zeros(labels.shape, dtype=bool), "-", NAMES[background]
    colour = int(counts.argmax())
    inside, outside = picture[labels == colour].mean(axis=0), picture[labels == background].mean(axis=0)
    mask = np.linalg.norm(picture - inside, axis=2) < np.linalg.norm(picture - outside, axis=2)
    return mask, NAMES[colour], NAMES[background]


def offset(mask: np.ndarray) -> float:
    """The distance of the mask's centroid from the picture's centre, as a share of the side."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return 0.0
    side = mask.shape[0]
    return float(np.hypot((rows.mean() + 0.5) / side - 0.5, (cols.mean() + 0.5) / side - 0.5))


def pixels_of(path: Path) -> np.ndarray:
    return harness.rgb_pixels(Image.open(path))


def drawn_sources(count: int, spread: float, min_offset: float, folder: Path) -> list[Path]:
    """Red circles on blue from draw_scene's random place and size, kept while off-centre."""
    paths: list[Path] = []
    seed = 0
    while len(paths) < count:
        picture = draw_scene("red", "circle", "blue", SIDE, random.Random(1000 + seed), spread)
        seed += 1
        if offset(read_scene(harness.rgb_pixels(picture))[0]) >= min_offset:
            paths.append(folder / f"source-{len(paths)}.png")
            picture.save(paths[-1])
    return paths


def decoded_sources(session: Session, decoder: Stage, count: int, min_offset: float, folder: Path) -> list[Path]:
    """`glide unclip SOURCE` with the decoder, seeds 0.., kept while off-centre and red on blue."""
    paths: list[Path] = []
    first = 0
    while len(paths) < count:
        jobs = [Job(SOURCE, seed, seed) for seed in range(first, first + 8)]
        first += 8
        with torch.no_grad():
            for done in render_unclip(session, jobs, PRIOR, decoder, None, clip=CLIP, options=RenderOptions(batch_size=8)):
                mask, colour, background = read_scene(harness.rgb_pixels(done.image))
                if len(paths) < count and (colour, background) == ("red", "blue") and offset(mask) >= min_offset:
                    paths.append(folder / f"source-{len(paths)}.png")
                    done.image.save(paths[-1])
    return paths


def place_cosines(session: Session, spread: float, count: int = 16) -> tuple[float, float, float]:
    """How much the CLIP image embedding says about the place: the cosine of a centred red circle
    on blue to red circles at `count` random places and sizes (min, max), and to a centred green one."""
    clip = session.network(CLIP.clip, ModelKind.OPENCLIP)

    def unit(picture: Image.Image) -> torch.Tensor:
        with torch.no_grad():
            embedding = image_embedding(clip, preprocess_image(picture, clip.config)[None])[0]
        return embedding / embedding.norm()

    centred = unit(draw_scene("red", "circle", "blue", SIDE))
    moved = [float(centred @ unit(draw_scene("red", "circle", "blue", SIDE, random.Random(7000 + k), spread))) for k in range(count)]
    return min(moved), max(moved), float(centred @ unit(draw_scene("green", "circle", "blue", SIDE)))


def vary_rows(
    session: Session, decoder: Stage, paths: list[Path], keep: bool, amounts: tuple[float, ...] = AMOUNTS, toward: str = TOWARD
) -> list[dict[str, float]]:
    """Per amount: IoU >= 0.5 with the source's mask (count), mean IoU (with the source's object,
    and with its background: a figure-ground swap), green and red objects,
    blue and yellow backgrounds, and the mean absolute error to the source (8-bit levels)."""
    rows = [dict(kept=0.0, iou=0.0, swapped=0.0, green=0.0, red=0.0, blue=0.0, yellow=0.0, error=0.0) for _ in amounts]
    for k, path in enumerate(paths):
        source = pixels_of(path)
        reference = read_scene(source)[0]
        jobs = [VaryJob("", 100 + k, i, amount=a) for i, a in enumerate(amounts)]
        with torch.no_grad():
            done = list(render_vary(session, jobs, path, decoder, None, clip=CLIP, text_diff=TextDiff(toward, SOURCE), keep_layout=keep,
                                    options=RenderOptions(batch_size=len(jobs))))
        for row, picture in zip(rows, done):
            pixels = harness.rgb_pixels(picture.image)
            mask, colour, background = read_scene(pixels)
            overlap = iou(mask, reference)
            row["kept"] += overlap >= 0.5
            row["iou"] += overlap / len(paths)
            row["swapped"] += iou(mask, ~reference) / len(paths)  # the object drawn where the source's background was
            row["green"] += colour == "green"
            row["red"] += colour == "red"
            row["blue"] += background == "blue"
            row["yellow"] += background == "yellow"
            row["error"] += float(np.abs(pixels - source).mean()) / len(paths)
    return rows


def blend_figures(
    session: Session, decoder: Stage, paths: list[Path], folder: Path, target: tuple[str, str, str], keep: bool, frames: int = 4
) -> tuple[float, list[float], list[float]]:
    """Blending each source to an off-centre `target` scene (colour, shape, background): the
    mean mask IoU of neighbouring frames, and per frame the mean IoU with the source's mask and
    the mean share of the picture that the mask covers (the source's object: about a fifth)."""
    neighbours: list[float] = []
    with_source, share = np.zeros(frames), np.zeros(frames)
    for k, path in enumerate(paths):
        other = folder / f"other-{'-'.join(target)}-{k}.png"
        draw_scene(*target, SIDE, random.Random(5000 + k), 0.25).save(other)
        jobs = [BlendJob("", 100 + k, i, mix=i / (frames - 1)) for i in range(frames)]
        with torch.no_grad():
            done = list(render_blend(session, jobs, path, other, decoder, None, clip=CLIP, keep_layout=keep, options=RenderOptions(batch_size=frames)))
        masks = [read_scene(harness.rgb_pixels(d.image))[0] for d in done]
        neighbours += [iou(a, b) for a, b in zip(masks, masks[1:])]
        reference = read_scene(pixels_of(path))[0]
        with_source += np.array([iou(m, reference) for m in masks]) / len(paths)
        share += np.array([m.mean() for m in masks]) / len(paths)
    return float(np.mean(neighbours)), [float(v) for v in with_source], [float(v) for v in share]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(harness.MODELS))
    ap.add_argument("--decoder", default="shapes-decoder-spread")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--sources", choices=("drawn", "decoded"), default="drawn")
    ap.add_argument("--spread", type=float, default=0.25, help="drawn sources: draw_scene's spread")
    ap.add_argument("--min-offset", type=float, default=0.12, help="sources' object centre at least this far from the centre (share of the side)")
    ap.add_argument("--amounts", default=",".join(f"{a:g}" for a in AMOUNTS), help="the text diff's amounts, comma-separated")
    ap.add_argument("--toward", default=TOWARD, help="the text diff's new caption")
    ap.add_argument("--scale", type=float, default=3.0, help="the decoder's guidance scale")
    ap.add_argument("--no-blend", action="store_true")
    harness.add_threads_option(ap)
    args = ap.parse_args()
    amounts = tuple(float(a) for a in args.amounts.split(","))
    harness.set_threads(args.threads)
    session = harness.offline_session(Path(args.weights))
    decoder = Stage(args.decoder, DEFAULT_DECODER.sampler, scale=args.scale)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.sources == "drawn":
            paths = drawn_sources(args.seeds, args.spread, args.min_offset, folder)
        else:
            paths = decoded_sources(session, decoder, args.seeds, args.min_offset, folder)
        n = len(paths)
        offsets = [offset(read_scene(pixels_of(p))[0]) for p in paths]
        print(f"## --keep-layout on {args.decoder} ({args.weights}), {n} {args.sources} sources, CPU fp32\n")
        print(f"Sources: {SOURCE!r}, object centre {min(offsets):.2f}-{max(offsets):.2f} of the side from the centre (mean {np.mean(offsets):.2f}).")
        low, high, green = place_cosines(session, args.spread)
        print(f"CLIP ({CLIP.clip}): a centred red circle's image embedding has a cosine of {low:.2f}-{high:.2f} to red circles at 16"
              f" random places and sizes (spread {args.spread:g}), {green:.2f} to a green one.")
        print(f"Text diff toward {args.toward!r}; decoder guidance {args.scale:g}, 25 steps; fresh noise: ddpm, seed 100 + k.\n")
        harness.print_header(["amount", "--keep-layout", f"IoU >= 0.5 (of {n})", "mean IoU", "IoU with the source's background", "object green", "object red",
                              "background blue", "background yellow", "error to source (levels)"], flush=True)
        for keep in (False, True):
            for amount, row in zip(amounts, vary_rows(session, decoder, paths, keep, amounts, args.toward)):
                print(f"| {amount:g} | {'yes' if keep else 'no'} | {row['kept']:.0f} | {row['iou']:.2f} | {row['swapped']:.2f} | {row['green']:.0f} | {row['red']:.0f}"
                      f" | {row['blue']:.0f} | {row['yellow']:.0f} | {row['error']:.1f} |", flush=True)
        if not args.no_blend:
            print("\nBlend to an off-centre scene (its own place, seed 5000 + k), 4 frames (mix 0, 1/3, 2/3, 1), one seed per source:\n")
            harness.print_header(["to", "--keep-layout", "neighbouring frames' IoU", "IoU with the source, frame 1..4", "mask's share of the picture, frame 1..4"], flush=True)
            for target in BLEND_TARGETS:
                for keep in (False, True):
                    neighbours, with_source, share = blend_figures(session, decoder, paths, folder, target, keep)
                    print(f"| {' '.join(target)} | {'yes' if keep else 'no'} | {neighbours:.2f} | {' / '.join(f'{v:.2f}' for v in with_source)}"
                          f" | {' / '.join(f'{v:.2f}' for v in share)} |", flush=True)
    print(f"\n# {time.perf_counter() - began:.0f} s, load average {harness.load_average()}")


if __name__ == "__main__":
    sys.exit(main())
