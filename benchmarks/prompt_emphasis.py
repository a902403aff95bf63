#!/usr/bin/env python
"""Does emphasis move the pictures the way it should? On the shapes models in models/ (CPU),
a prompt that names two colours for one object leaves the model to choose; weighing the
word `red` up, `(red:1.5)`, should raise the share of pictures whose object is red, and
weighing it down, `(red:0.5)`, lower it. Measured for GLIDE's shapes base model (emphasis
on its text transformer's sequence) and for the small unCLIP (emphasis on CLIP's token
features, read by the prior and the decoder), with red written first and second. Colours
are read from the pixels (object = centre), as the shapes tests read them; the last column
is how far the pictures moved from the plain prompt's, seed for seed (mean |difference| of
the 0-255 pixel values), so "no change in colour" and "no change at all" tell apart.

    python benchmarks/prompt_emphasis.py              # 12 seeds, 10 steps: a few minutes on 2 idle cores
    python benchmarks/prompt_emphasis.py --seeds 32 --steps 20
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import harness
from glidecli.render.engine import Job, RenderOptions, Session, Stage, render_generate
from glidecli.render.pipeline import SamplerChoice
from glidecli.render.unclip import DEFAULT_PRIOR, ClipModels, render_unclip
from glidecli.train.shapes import scene_colours

TEMPLATES = ("a {red} green circle on a black background", "a green {red} circle on a black background")
WEIGHTS = [("(red:0)", "weighed x0"), ("(red:0.5)", "de-emphasised x0.5"), ("red", "plain"), ("(red:1.5)", "emphasised x1.5"), ("(red:3)", "emphasised x3")]


def glide_pictures(session: Session, prompt: str, seeds: range, sampler: SamplerChoice, scale: float) -> list[np.ndarray]:
    stage = Stage("shapes", sampler, scale=scale)
    jobs = [Job(prompt, seed, index) for index, seed in enumerate(seeds)]
    return [harness.rgb_pixels(done.image) for done in render_generate(session, jobs, stage, None, options=RenderOptions(batch_size=len(jobs)))]


def unclip_pictures(session: Session, prompt: str, seeds: range, sampler: SamplerChoice, scale: float) -> list[np.ndarray]:
    prior = Stage("shapes-prior", SamplerChoice(DEFAULT_PRIOR.sampler.name, sampler.steps), scale=4.0)
    decoder = Stage("shapes-decoder", sampler, scale=scale)
    jobs = [Job(prompt, seed, index) for index, seed in enumerate(seeds)]
    done = render_unclip(session, jobs, prior, decoder, None, clip=ClipModels("shapes-clip", "shapes-prior-stats"), options=RenderOptions(batch_size=len(jobs)))
    return [harness.rgb_pixels(d.image) for d in done]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=12, help="seeds per prompt")
    ap.add_argument("--steps", default="10", help="sampling steps (dpmpp_2m) of the base model or decoder, and of the prior")
    ap.add_argument("--scale", type=float, default=3.0, help="guidance of the base model or decoder")
    ap.add_argument("--networks", default="glide,unclip", help="which of glide, unclip")
    args = ap.parse_args()
    session = harness.offline_session()
    sampler = SamplerChoice("dpmpp_2m", args.steps)
    seeds = range(args.seeds)
    for network in args.networks.split(","):
        draw = glide_pictures if network == "glide" else unclip_pictures
        print(f"\n{network}: pictures whose object is red, of {args.seeds} (seeds 0..{args.seeds - 1}), dpmpp_2m {args.steps} steps, scale {args.scale:g}\n")
        harness.print_header(["red written as", "what", *(f"`{t.format(red='red')}`" for t in TEMPLATES), "mean abs change vs plain"])
        with torch.no_grad():
            plain = {t: draw(session, t.format(red="red"), seeds, sampler, args.scale) for t in TEMPLATES}
            for written, what in WEIGHTS:
                cells, moved = [], []
                for template in TEMPLATES:
                    harness.log(f"{network}: {template.format(red=written)}")
                    made = plain[template] if written == "red" else draw(session, template.format(red=written), seeds, sampler, args.scale)
                    cells.append(f"{sum(scene_colours(p)[0] == 'red' for p in made)}/{args.seeds}")
                    moved += [float(np.abs(a - b).mean()) for a, b in zip(made, plain[template])]
                print(f"| `{written}` | {what} | {' | '.join(cells)} | {np.mean(moved):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
