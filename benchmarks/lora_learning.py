#!/usr/bin/env python
"""What the small LoRA adapter of models/ (`shapes-zorb`) teaches the shapes model: a new
word. "a zorb" means a yellow triangle on a purple background; the base model never saw the
word. Over seeds, this counts the pictures whose object is yellow and background purple for
"a zorb", with the adapter and without, and checks that the adapter leaves the model's other
prompts drawn (their colours read from the pixels as the shapes tests read them).

    python benchmarks/lora_learning.py                 # 16 seeds, 20 steps, the new word and 3 usual prompts
    python benchmarks/lora_learning.py --seeds 32 --all  # the 8 usual prompts of the shapes evaluation
    python benchmarks/lora_learning.py --make-data DIR # the data set the adapter was trained on
"""

from __future__ import annotations

import argparse
import functools
import random
from pathlib import Path

import harness
from glidecli.files.manifest import load_manifest
from glidecli.render.session import Reporter
from glidecli.request.commands import GenerateRequest
from glidecli.request.planner import plan_request
from glidecli.train.dataset import atomic_write, make_folder
from glidecli.train.shapes import EVAL_SCENES, draw_scene, scene_colours, shape_caption, shape_scene

WORD, SCENE = "a zorb", ("yellow", "triangle", "purple")
ADAPTER = "shapes-zorb"


def make_data(out: Path, count: int = 384, seed: int = 7, size: int = 32) -> None:
    """Half the pictures are zorbs (captioned "a zorb", of random size and place), half the
    usual random scenes with their captions, so the model keeps what it knew."""
    make_folder(out)
    rng = random.Random(seed)
    for index in range(count):
        if index % 2 == 0:
            image, caption = draw_scene(*SCENE, size=size, rng=rng), WORD
        else:
            image, caption = shape_scene(rng, size)
        path = out / f"{index:05d}.png"
        atomic_write(path, functools.partial(image.save, format="PNG"))
        atomic_write(path.with_suffix(".txt"), functools.partial(_write_caption, caption=caption))
    print(f"wrote {count} pictures to {out}")


def _write_caption(path: Path, caption: str) -> None:
    Path(path).write_text(caption + "\n", encoding="utf-8")


def found_colours(session, prompt: str, seeds: range, lora: tuple[str, ...], steps: str) -> list[tuple[str, str]]:
    request = GenerateRequest(prompts=(prompt,), model="shapes", size=32, steps=steps, seed=seeds.start, num=len(seeds), lora=lora, batch_size=len(seeds))
    plan = plan_request(request, session.manifest)
    return [scene_colours(harness.rgb_pixels(done.image)) for done in plan.run(session, plan.jobs, Reporter())]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--all", action="store_true", help="all 8 usual prompts (default: the first 3)")
    ap.add_argument("--steps", default="20")
    ap.add_argument("--make-data", type=Path, metavar="DIR")
    args = ap.parse_args()
    if args.make_data:
        make_data(args.make_data)
        return 0
    session = harness.offline_session()
    entry = load_manifest(harness.MODELS).model(ADAPTER)
    base_size = load_manifest(harness.MODELS).model("shapes").size or 0
    adapter_size = (entry.source.path / "adapter_model.safetensors").stat().st_size  # type: ignore[union-attr]
    print(f"adapter {ADAPTER}: {adapter_size / 1024:.0f} KiB, {100 * adapter_size / base_size:.1f}% of the shapes model's file\n")
    seeds = range(args.seeds)
    harness.print_header(["prompt", "wanted", "base model", f"with {ADAPTER}"])
    usual = EVAL_SCENES if args.all else EVAL_SCENES[:3]
    rows = [(WORD, SCENE), *[(shape_caption(*scene), scene) for scene in usual]]
    totals = [0, 0]
    for prompt, (colour, _, background) in rows:
        counts = []
        for lora in ((), (ADAPTER,)):
            found = found_colours(session, prompt, seeds, lora, args.steps)
            counts.append(sum(f == (colour, background) for f in found))
        if prompt != WORD:
            totals = [totals[0] + counts[0], totals[1] + counts[1]]
        print(f"| `{prompt}` | {colour} on {background} | {counts[0]}/{args.seeds} | {counts[1]}/{args.seeds} |")
    print(f"| the {len(usual)} usual prompts | both colours | {totals[0]}/{len(usual) * args.seeds} | {totals[1]}/{len(usual) * args.seeds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
