#!/usr/bin/env python
"""How often prompts joined with AND give what each part asks for, on the shapes models in
models/ (32x32, CPU, a few seconds): "a red circle AND a blue background" against each
part alone and against the single prompt that names both, and a colour negated with a
negative weight against the same prompt without it. Colours are read from the pixels
(object = centre, background = border), as the shapes tests read them.

    python benchmarks/composition.py            # 16 seeds
    python benchmarks/composition.py --seeds 64
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import harness
from glidecli.render.engine import DEFAULT_BASE, Job, RenderOptions, Session, Stage, render_generate
from glidecli.train.shapes import scene_colours

# (what is measured, prompt, the object colour wanted or None, the background colour wanted or None)
ROWS = [
    ("both parts, composed", "a red circle AND a blue background", "red", "blue"),
    ("both parts, one prompt", "a red circle on a blue background", "red", "blue"),
    ("the first part alone", "a red circle", "red", "blue"),
    ("the second part alone", "a blue background", "red", "blue"),
    ("the composed pair, weighted 1 : 2", "a red circle :1 AND a blue background :2", "red", "blue"),
]
NEGATED = "a circle on a blue background"  # leaves the circle's colour open; its most frequent colour is then steered from


def pictures(session: Session, prompt: str, seeds: range, scale: float) -> list[np.ndarray]:
    stage = Stage("shapes", DEFAULT_BASE.sampler, scale=scale)
    jobs = [Job(prompt, seed, index) for index, seed in enumerate(seeds)]
    return [harness.rgb_pixels(done.image) for done in render_generate(session, jobs, stage, None, options=RenderOptions(batch_size=len(jobs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--scale", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    session = harness.offline_session()
    seeds = range(args.seeds)
    print(f"shapes model, {DEFAULT_BASE.sampler.name} {DEFAULT_BASE.sampler.steps} steps, scale {args.scale:g}, seeds 0..{args.seeds - 1}\n")
    harness.print_header(["prompt", "what", "red object", "blue background", "both"])
    for what, prompt, colour, background in ROWS:
        found = [scene_colours(p) for p in pictures(session, prompt, seeds, args.scale)]
        red = sum(f[0] == colour for f in found)
        blue = sum(f[1] == background for f in found)
        both = sum(f == (colour, background) for f in found)
        print(f"| `{prompt}` | {what} | {red}/{args.seeds} | {blue}/{args.seeds} | {both}/{args.seeds} |")
    plain = [scene_colours(p)[0] for p in pictures(session, NEGATED, seeds, args.scale)]
    colour = max(set(plain), key=plain.count)
    print()
    harness.print_header(["prompt", "object colours", f"{colour} objects"])
    for prompt in (NEGATED, f"{NEGATED} AND a {colour} circle :-1"):
        found = plain if prompt == NEGATED else [scene_colours(p)[0] for p in pictures(session, prompt, seeds, args.scale)]
        counts = ", ".join(f"{name} {found.count(name)}" for name in sorted(set(found), key=lambda n: (-found.count(n), n)))
        print(f"| `{prompt}` | {counts} | {found.count(colour)}/{args.seeds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
