#!/usr/bin/env python
"""Does emphasis move the pictures the way it should? On the shapes models in models/ (CPU,
a few minutes), a prompt that names two colours for one object leaves the model to choose;
weighing one colour word up, `(red:W)`, should raise the share of pictures whose object is
that colour, and weighing it down, `[red]` or `(red:W<1)`, lower it. Measured for GLIDE's
shapes base model (emphasis on its text transformer's sequence) and for the small unCLIP
(emphasis on CLIP's token features, read by the prior and the decoder). Colours are read
from the pixels (object = centre), as the shapes tests read them.

    python benchmarks/prompt_emphasis.py              # 32 seeds
    python benchmarks/prompt_emphasis.py --seeds 64 --unclip-seeds 32
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import harness
from glidecli.render.engine import DEFAULT_BASE, Job, RenderOptions, Session, Stage, render_generate
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, ClipModels, render_unclip
from glidecli.train.shapes import scene_colours

TEMPLATE = "a {first} {second} circle on a black background"  # two colours for one object
WEIGHTS = [("(red:1.6)", "emphasised x1.6"), ("(red)", "emphasised x1.1"), ("red", "plain"), ("[red]", "de-emphasised /1.1"), ("(red:0.6)", "de-emphasised x0.6")]
PAIRS = [("red", "green"), ("red", "blue"), ("red", "yellow")]


def glide_pictures(session: Session, prompt: str, seeds: range, scale: float) -> list[np.ndarray]:
    stage = Stage("shapes", DEFAULT_BASE.sampler, scale=scale)
    jobs = [Job(prompt, seed, index) for index, seed in enumerate(seeds)]
    return [harness.rgb_pixels(done.image) for done in render_generate(session, jobs, stage, None, options=RenderOptions(batch_size=len(jobs)))]


def unclip_pictures(session: Session, prompt: str, seeds: range) -> list[np.ndarray]:
    prior = Stage("shapes-prior", DEFAULT_PRIOR.sampler, scale=4.0)
    decoder = Stage("shapes-decoder", DEFAULT_DECODER.sampler, scale=3.0)
    jobs = [Job(prompt, seed, index) for index, seed in enumerate(seeds)]
    done = render_unclip(session, jobs, prior, decoder, None, clip=ClipModels("shapes-clip", "shapes-prior-stats"), options=RenderOptions(batch_size=len(jobs)))
    return [harness.rgb_pixels(d.image) for d in done]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=32, help="seeds per prompt for GLIDE's shapes model")
    ap.add_argument("--unclip-seeds", type=int, default=16, help="seeds per prompt for the small unCLIP (0: skip it)")
    ap.add_argument("--scale", type=float, default=3.0)
    args = ap.parse_args()
    session = harness.offline_session()
    with torch.no_grad():
        for network, count in (("glide", args.seeds), ("unclip", args.unclip_seeds)):
            if count <= 0:
                continue
            seeds = range(count)
            print(f"\n{network}: share of pictures whose object is red, seeds 0..{count - 1}\n")
            harness.print_header(["red written as", "what", *(f"red vs {second}" for _, second in PAIRS), "all"])
            for written, what in WEIGHTS:
                shares = []
                for first, second in PAIRS:
                    prompt = TEMPLATE.format(first=written.replace("red", first), second=second)
                    harness.log(f"{network}: {prompt}")
                    made = glide_pictures(session, prompt, seeds, args.scale) if network == "glide" else unclip_pictures(session, prompt, seeds)
                    shares.append(sum(scene_colours(p)[0] == first for p in made))
                cells = [f"{share}/{count}" for share in shares]
                print(f"| `{written}` | {what} | {' | '.join(cells)} | {sum(shares)}/{count * len(PAIRS)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
