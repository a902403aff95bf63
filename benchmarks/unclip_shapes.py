#!/usr/bin/env python
"""What the small unCLIP trained on the shapes data set does (models/: shapes-clip,
shapes-prior, shapes-decoder; issue 21), measured on the pixels as tests/render/test_small_model.py
measures GLIDE's shapes model: the colours nearest to the centre (the object) and to the border
(the background) of each picture.

- unclip: the 8 prompts of shapes.EVAL_SCENES x 16 seeds, prior + decoder (guidance 4 and 3),
  beside GLIDE's `shapes` model on the same prompts and seeds;
- vary: each scene drawn, then 16 variations: colours kept, and the object's area overlap;
- blend: scene A to scene B in 5 frames: the share of frames whose colours are A's, then B's;
- CLIP: top-1 retrieval of held-out pictures' captions among all captions, against chance.

    python benchmarks/unclip_shapes.py                 # models/weights.toml, about 3 minutes on a CPU
    python benchmarks/unclip_shapes.py --seeds 4       # quicker
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
from glidecli.files.manifest import load_manifest
from glidecli.nets.tokenizer import ClipTokenizer
from glidecli.render.engine import Job, RenderOptions, Session, Stage, render_generate
from glidecli.render.pipeline import SamplerChoice
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, BlendJob, ClipModels, render_blend, render_unclip, render_vary
from glidecli.train.clip_recipe import top1_retrieval
from glidecli.train.dataset import scan_dataset
from glidecli.train.shapes import EVAL_SCENES, draw_scene, scene_colours, shape_caption, write_shapes

CLIP = ClipModels("shapes-clip", "shapes-prior-stats")
PRIOR = Stage("shapes-prior", DEFAULT_PRIOR.sampler, scale=4.0)
DECODER = Stage("shapes-decoder", DEFAULT_DECODER.sampler, scale=3.0)


def object_mask(picture: np.ndarray) -> np.ndarray:
    """Pixels nearer the centre's colour than the border's: the object."""
    size = picture.shape[0]
    lo, hi, band = size * 3 // 8, size * 5 // 8, max(1, size // 8)
    centre = picture[lo:hi, lo:hi].reshape(-1, 3).mean(axis=0)
    ring = np.ones(picture.shape[:2], dtype=bool)
    ring[band:-band, band:-band] = False
    border = picture[ring].mean(axis=0)
    return np.linalg.norm(picture - centre, axis=2) < np.linalg.norm(picture - border, axis=2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (0 for two empty ones)."""
    return float((a & b).sum() / max(1, (a | b).sum()))


def prompt_jobs(seeds: int) -> list[Job]:
    """The 8 scenes' captions, `seeds` seeds each; job index // seeds is the scene."""
    return [Job(shape_caption(*scene), seed, i) for i, (scene, seed) in enumerate((s, k) for s in EVAL_SCENES for k in range(seeds))]


def colour_counts(jobs: list[Job], rendered, seeds: int) -> dict[str, int]:
    """Pictures with both of their prompt's colours, and colours right in all."""
    both = colours = 0
    with torch.no_grad():
        for job, done in zip(jobs, rendered):
            scene = EVAL_SCENES[job.index // seeds]
            found = scene_colours(harness.rgb_pixels(done.image))
            hits = (found[0] == scene[0]) + (found[1] == scene[2])
            both += hits == 2
            colours += hits
    return {"pictures": len(jobs), "both": both, "colours": colours}


def unclip_counts(session: Session, seeds: int) -> dict[str, int]:
    jobs = prompt_jobs(seeds)
    return colour_counts(jobs, render_unclip(session, jobs, PRIOR, DECODER, None, clip=CLIP, options=RenderOptions(batch_size=8)), seeds)


def glide_counts(session: Session, seeds: int) -> dict[str, int]:
    jobs = prompt_jobs(seeds)
    stage = Stage("shapes", SamplerChoice("dpmpp_2m_sde", "20"), scale=3.0)  # glide generate's defaults
    return colour_counts(jobs, render_generate(session, jobs, stage, None, options=RenderOptions(batch_size=8)), seeds)


def vary_counts(session: Session, seeds: int, folder: Path) -> dict[str, float]:
    kept = shape = total = 0
    for k, scene in enumerate(EVAL_SCENES):
        source = folder / f"scene-{k}.png"
        draw_scene(scene[0], scene[1], scene[2], 32).save(source)
        reference = object_mask(harness.rgb_pixels(Image.open(source)))
        jobs = [Job("", seed, i) for i, seed in enumerate(range(seeds))]
        with torch.no_grad():
            for done in render_vary(session, jobs, source, DECODER, None, clip=CLIP, options=RenderOptions(batch_size=8)):
                picture = harness.rgb_pixels(done.image)
                kept += scene_colours(picture) == (scene[0], scene[2])
                mask = object_mask(picture)
                shape += (mask & reference).sum() / max(1, (mask | reference).sum()) > 0.5
                total += 1
    return {"pictures": total, "colours_kept": kept, "shape_kept": shape}


def blend_counts(session: Session, folder: Path, frames: int = 5, pairs: int = 4, seed: int = 0) -> list[list[str]]:
    """Per pair, per frame: 'A' if the frame shows A's colours, 'B' for B's, '-' otherwise."""
    rows = []
    for k in range(pairs):
        a, b = EVAL_SCENES[k], EVAL_SCENES[(k + 3) % len(EVAL_SCENES)]
        paths = []
        for name, scene in (("a", a), ("b", b)):
            paths.append(folder / f"blend-{k}-{name}.png")
            draw_scene(scene[0], scene[1], scene[2], 32).save(paths[-1])
        jobs = [BlendJob("", seed, i, mix=i / (frames - 1)) for i in range(frames)]
        row = []
        with torch.no_grad():
            for done in render_blend(session, jobs, paths[0], paths[1], DECODER, None, clip=CLIP, options=RenderOptions(batch_size=frames)):
                found = scene_colours(harness.rgb_pixels(done.image))
                row.append("A" if found == (a[0], a[2]) else "B" if found == (b[0], b[2]) else "-")
        rows.append(row)
    return rows


def clip_retrieval(manifest, folder: Path) -> tuple[float, float, int]:
    from glidecli.files.fetch import fetch_entry
    from glidecli.nets.checkpoint import load_network

    held_out = folder / "held-out"
    list(write_shapes(held_out, 256, size=64, seed=12345))  # the training set used seed 1
    entry = manifest.model("shapes-clip")
    model = load_network("openclip", entry.arch, fetch_entry(entry, progress=False))
    dataset = scan_dataset(held_out)
    return top1_retrieval(model, dataset, ClipTokenizer(entry.arch.text_ctx), entry.arch, torch.device("cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(harness.MODELS))
    ap.add_argument("--seeds", type=int, default=16)
    args = ap.parse_args()
    manifest = load_manifest(args.weights)
    session = harness.offline_session(args.weights)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        unclip = unclip_counts(session, args.seeds)
        glide = glide_counts(session, args.seeds)
        vary = vary_counts(session, args.seeds, folder)
        blends = blend_counts(session, folder)
        accuracy, chance, captions = clip_retrieval(manifest, folder)
    print(f"## The shapes unCLIP ({args.weights}), {args.seeds} seeds per prompt, CPU fp32\n")
    harness.print_header(["pictures of the 8 prompts", "both colours right", "colours right"])
    for name, c in (("glide unclip (shapes-prior + shapes-decoder)", unclip), ("glide generate (GLIDE's shapes)", glide)):
        print(f"| {name} | {c['both']} / {c['pictures']} | {c['colours']} / {2 * c['pictures']} |")
    print(f"\nvary: {vary['colours_kept']} / {vary['pictures']} keep both colours, {vary['shape_kept']} / {vary['pictures']} the object's area (IoU > 0.5)")
    print("blend, 5 frames from A to B (A: A's colours, B: B's, -: neither): " + ", ".join("".join(r) for r in blends))
    print(f"shapes-clip: top-1 retrieval of 256 held-out pictures' captions among {captions}: {accuracy:.1%} (chance {chance:.1%})")
    print(f"\n# {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
