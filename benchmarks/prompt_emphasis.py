#!/usr/bin/env python
"""Does emphasis move the pictures the way it should? On the shapes models in models/ (CPU),
weighing the word `red` up, `(red:1.5)`, should raise the share of pictures whose object is
red, and weighing it down, `(red:0.5)`, lower it. Measured for GLIDE's shapes base model
(emphasis on its text transformer's sequence), for `shapes-seq` (the same model fine-tuned
without the pooled text embedding: its text reaches the U-Net only through the sequence, as in
Stable Diffusion), for `shapes-words` (no pooled embedding and no text layers: each position
holds its own word alone) and for the small unCLIP (emphasis on CLIP's token features, read by
the prior and the decoder). Colours are read from the pixels (object = centre), as the shapes
tests read them; the last column is how far the pictures moved from the plain prompt's, seed
for seed (mean |difference| of the 0-255 pixel values), so "no change in colour" and "no
change at all" tell apart.

Two more tables, for the GLIDE models: where they read the colour from (the pooled embedding
or the token sequence, and which positions of it: the conditional embedding of "a red circle
on a black background" with parts taken from "a green circle on a black background"'s), and
emphasis with and without A1111's restoring of the sequence's mean.

    python benchmarks/prompt_emphasis.py              # 32 seeds, 10 steps, one thread: about 40 minutes on a shared CPU
    python benchmarks/prompt_emphasis.py --networks shapes-words --seeds 16
    python benchmarks/prompt_emphasis.py --weights run/weights.toml --networks my-model --no-diagnosis
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

import harness
from glidecli.nets.unet import TextEmbedding
from glidecli.render import emphasis
from glidecli.render.engine import Job, RenderOptions, Session, Stage, render_generate
from glidecli.render.pipeline import SamplerChoice
from glidecli.render.prompt_syntax import Emphasis, read_prompt
from glidecli.render.unclip import DEFAULT_PRIOR, render_unclip
from glidecli.train.shapes import scene_colours
from unclip_shapes import CLIP as SHAPES_CLIP

TEMPLATES = (
    "a {red} circle on a black background", "a {red} green circle on a black background", "a green {red} circle on a black background", "a {red}",
)
WEIGHTS = [
    ("(red:0)", "weighed x0"), ("(red:0.5)", "de-emphasised x0.5"), ("(red:0.8)", "de-emphasised x0.8"), ("red", "plain"),
    ("(red:1.5)", "emphasised x1.5"), ("(red:2)", "emphasised x2"), ("(red:3)", "emphasised x3"),
]
UNCLIP = "unclip"
RED, GREEN = "a red circle on a black background", "a green circle on a black background"


def glide_pictures(
    session: Session, model: str, prompt: str, seeds: range, sampler: SamplerChoice, scale: float, method: Emphasis = Emphasis.A1111
) -> list[np.ndarray]:
    stage = Stage(model, sampler, scale=scale)
    jobs = [Job(prompt, seed, index, emphasis=method) for index, seed in enumerate(seeds)]
    return [harness.rgb_pixels(done.image) for done in render_generate(session, jobs, stage, None, options=RenderOptions(batch_size=len(jobs)))]


def unclip_pictures(
    session: Session, prompt: str, seeds: range, sampler: SamplerChoice, scale: float, method: Emphasis = Emphasis.A1111
) -> list[np.ndarray]:
    prior = Stage("shapes-prior", SamplerChoice(DEFAULT_PRIOR.sampler.name, sampler.steps), scale=4.0)
    decoder = Stage("shapes-decoder", sampler, scale=scale)
    jobs = [Job(prompt, seed, index, emphasis=method) for index, seed in enumerate(seeds)]
    done = render_unclip(session, jobs, prior, decoder, None, clip=SHAPES_CLIP, options=RenderOptions(batch_size=len(jobs)))
    return [harness.rgb_pixels(d.image) for d in done]


Draw = Callable[[str], list[np.ndarray]]


def red_objects(pictures: list[np.ndarray]) -> int:
    return sum(scene_colours(p)[0] == "red" for p in pictures)


def weight_table(network: str, draw: Draw, seeds: int) -> None:
    """Red objects of `seeds` pictures for each template and weight of `red`."""
    harness.print_header(["red written as", "what", *(f"`{t.format(red='red')}`" for t in TEMPLATES), "mean abs change vs plain"])
    plain = {t: draw(t.format(red="red")) for t in TEMPLATES}
    for written, what in WEIGHTS:
        cells, moved = [], []
        for template in TEMPLATES:
            harness.log(f"{network}: {template.format(red=written)}")
            made = plain[template] if written == "red" else draw(template.format(red=written))
            cells.append(f"{red_objects(made)}/{seeds}")
            moved += [float(np.abs(a - b).mean()) for a, b in zip(made, plain[template])]
        print(f"| `{written}` | {what} | {' | '.join(cells)} | {np.mean(moved):.1f} |", flush=True)


@contextlib.contextmanager
def text_replaced(session: Session, model: str, change: Callable[[TextEmbedding, TextEmbedding], TextEmbedding]) -> Iterator[None]:
    """While open, the conditional embedding of RED is change(RED's, GREEN's); the other rows
    (the unconditional half) are the model's own."""
    network = session.unet(model, "base")
    tokenizer = session.tokenizer(network.config.text_ctx, model)
    encode = network.encode_text
    red, green = tokenizer.batch([RED]), tokenizer.batch([GREEN])
    with torch.no_grad():
        replaced = change(encode(red.tokens, red.mask), encode(green.tokens, green.mask))

    def encode_text(tokens: torch.Tensor, mask: torch.Tensor) -> TextEmbedding:
        own = encode(tokens, mask)
        rows = (tokens == red.tokens.to(tokens.device)).all(dim=1)
        return TextEmbedding(torch.where(rows[:, None], replaced.pooled, own.pooled), torch.where(rows[:, None, None], replaced.tokens, own.tokens), own.mask)

    network.encode_text = encode_text  # type: ignore[method-assign]
    try:
        yield
    finally:
        del network.encode_text


def positions(chosen: Callable[[int], bool]) -> Callable[[TextEmbedding, TextEmbedding], TextEmbedding]:
    """RED's embedding with the sequence positions `chosen` taken from GREEN's."""
    def change(red: TextEmbedding, green: TextEmbedding) -> TextEmbedding:
        picked = torch.tensor([chosen(i) for i in range(red.tokens.shape[1])])[None, :, None]
        return red._replace(tokens=torch.where(picked, green.tokens, red.tokens))
    return change


WORDS = len(RED.split())  # the small tokenizer reads each word of RED as one token; the rest is padding
SWAPS: list[tuple[str, Callable[[TextEmbedding, TextEmbedding], TextEmbedding]]] = [
    ("as it is", lambda red, green: red),
    ("the pooled embedding from `green`", lambda red, green: red._replace(pooled=green.pooled)),
    ("the whole sequence from `green`", lambda red, green: red._replace(tokens=green.tokens)),
    ("position 1 (`red` itself) from `green`", positions(lambda i: i == 1)),
    (f"the word positions 0-{WORDS - 1} from `green`", positions(lambda i: i < WORDS)),
    (f"the padding positions {WORDS}- from `green`", positions(lambda i: i >= WORDS)),
    ("all positions but 1 from `green`", positions(lambda i: i != 1)),
]


def where_colour_is_read(session: Session, models: list[str], draw: Callable[[str, str], list[np.ndarray]], seeds: int) -> None:
    harness.print_header(["conditional embedding of `a red circle on a black background`", *(f"{m}: red / green objects" for m in models)])
    for what, change in SWAPS:
        cells = []
        for model in models:
            harness.log(f"{model}: {what}")
            if not session.unet(model, "base").config.xf_pooled and "pooled" in what:
                cells.append("(no pooled path)")
                continue
            with text_replaced(session, model, change):
                found = [scene_colours(p)[0] for p in draw(model, RED)]
            cells.append(f"{found.count('red')} / {found.count('green')} of {seeds}")
        print(f"| {what} | {' | '.join(cells)} |", flush=True)


def scale_only(sequence: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Emphasis without A1111's restoring of the mean: each position times its weight."""
    return sequence * weights.to(sequence.device, sequence.dtype)[..., None]


def restore_table(session: Session, models: list[str], draw: Callable[[str, str], list[np.ndarray]], seeds: int) -> None:
    """Red objects with A1111's emphasis as glide applies it (mean restored) and with the
    weights alone, and the factor the restoring multiplies the whole sequence by."""
    harness.print_header(["model", "prompt", "A1111's (mean restored)", "weights alone", "factor of the restoring"])
    for model in models:
        network = session.unet(model, "base")
        tokenizer = session.tokenizer(network.config.text_ctx, model)
        for template in ("a {red}", "a {red} circle on a black background"):
            for written, _ in WEIGHTS:
                prompt = template.format(red=written)
                restored = red_objects(draw(model, prompt))
                with contextlib.ExitStack() as stack:
                    stack.callback(setattr, emphasis, "emphasize", emphasis.emphasize)
                    emphasis.emphasize = scale_only
                    alone = red_objects(draw(model, prompt))
                batch, weights = emphasis.glide_batch(tokenizer, [read_prompt(prompt)])
                with torch.no_grad():
                    sequence = network.encode_text(batch.tokens, batch.mask).tokens
                factor = 1.0 if weights is None else float(sequence.mean() / scale_only(sequence, weights).mean())
                print(f"| {model} | `{prompt}` | {restored}/{seeds} | {alone}/{seeds} | {factor:.2f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=32, help="seeds per prompt")
    ap.add_argument("--steps", default="10", help="sampling steps (dpmpp_2m) of the base model or decoder, and of the prior")
    ap.add_argument("--scale", type=float, default=3.0, help="guidance of the base model or decoder")
    ap.add_argument("--networks", default="shapes,shapes-seq,shapes-words,unclip",
                    help="GLIDE base models of --weights, and `unclip` (shapes-prior and shapes-decoder)")
    ap.add_argument("--weights", type=Path, default=harness.MODELS, help="the manifest (default: models/weights.toml)")
    ap.add_argument("--emphasis", default="a1111,comfy", help="the ways weights act (--emphasis), a weights table for each")
    ap.add_argument("--no-diagnosis", action="store_true", help="only the weights table (not where colour is read, nor the restoring)")
    harness.add_threads_option(ap, default=1, help_text="torch.set_num_threads (default 1: more threads on shared cores only wait for each other)")
    args = ap.parse_args()
    harness.set_threads(args.threads)
    session = harness.offline_session(args.weights)
    networks = args.networks.split(",")
    glide_models = [network for network in networks if network != UNCLIP]
    sampler = SamplerChoice("dpmpp_2m", args.steps)
    seeds = range(args.seeds)

    def glide_draw(model: str, prompt: str) -> list[np.ndarray]:
        return glide_pictures(session, model, prompt, seeds, sampler, args.scale)

    settings = f"of {args.seeds} (seeds 0..{args.seeds - 1}), dpmpp_2m {args.steps} steps, scale {args.scale:g}"
    with torch.no_grad():
        for network in networks:
            for method in map(Emphasis, args.emphasis.split(",")):
                print(f"\n{network}, --emphasis {method}: pictures whose object is red, {settings}\n")
                draw: Draw = (
                    (lambda p, e=method: unclip_pictures(session, p, seeds, sampler, args.scale, e)) if network == UNCLIP
                    else (lambda p, m=network, e=method: glide_pictures(session, m, p, seeds, sampler, args.scale, e))
                )
                weight_table(network, draw, args.seeds)
        if glide_models and not args.no_diagnosis:
            print(f"\nWhere the GLIDE models read the colour: objects drawn, {settings}\n")
            where_colour_is_read(session, glide_models, glide_draw, args.seeds)
            print(f"\nA1111's emphasis with and without restoring the mean: red objects, {settings}\n")
            restore_table(session, glide_models, glide_draw, args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
