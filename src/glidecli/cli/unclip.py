"""`glide unclip`, `glide vary` and `glide blend`: pictures with unCLIP (Karlo v1.0 alpha).

unCLIP draws from a CLIP image embedding: the prior makes one from the prompt (`unclip`), or
it comes from a picture (`vary`) or from between two pictures (`blend`). The decoder paints
64x64 from it; the super-resolution U-Nets make 256x256 (`--size 64` stops before them).
--best-of N ranks N decoder pictures per picture by a CLIP score for the prompt (render/ranking.py)
and super-resolves the winner only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..request.commands import BlendRequest, UnclipRequest, VaryRequest
from . import options as opt
from .run import RunOptions, collect_prompts, render_request


@opt.rendering_command(UnclipRequest)
def unclip(
    prompt: opt.Prompt = None, prompts_file: opt.PromptsFile = None, values: Any = opt.REQUEST, opts: RunOptions = opt.RUN_OPTIONS
) -> None:
    """Draw PROMPT with unCLIP: the prior turns its CLIP text embedding into a CLIP image
    embedding, the decoder paints 64x64 from it, super-resolution makes 256x256.

    Defaults are the reference's "fast" setting: prior ddpm 25 steps at guidance 4, decoder
    ddpm 25 steps at guidance 8, super-resolution ddpm 7 steps (--sr-steps, --sr-sampler).
    Image i of each prompt uses seed + i, whatever --batch-size is. --best-of N keeps the
    best of N decoder pictures by a CLIP score (compared at the decoder's 64x64); only the
    winner is super-resolved.
    """
    render_request(UnclipRequest, {**values, "prompts": collect_prompts(prompt, prompts_file)}, opts)


@opt.rendering_command(VaryRequest)
def vary(
    image: Annotated[Path | None, typer.Argument(metavar="IMAGE", help="A picture (any format Pillow reads).", show_default=False)] = None,
    values: Any = opt.REQUEST,
    opts: RunOptions = opt.RUN_OPTIONS,
) -> None:
    """Variations of IMAGE: its CLIP image embedding drives the decoder, then super-resolution.

    -n 4 gives four different variations (seeds S..S+3). The decoder's text is empty unless
    --prompt gives one. The PNGs record the source's path and sha256. --best-of N (with
    --prompt) keeps the decoder picture CLIP scores highest for the prompt.

    --toward TEXT edits the picture toward a new caption (a text diff: the embedding turns
    toward the captions' CLIP text difference by --amount; --away is the old caption, by default
    the prompt the PNG records). --keep-layout decodes from the picture's DDIM inversion, so its
    composition stays.
    """
    render_request(VaryRequest, {**values, "image": image}, opts)


@opt.rendering_command(BlendRequest)
def blend(
    image_a: Annotated[Path | None, typer.Argument(metavar="IMAGE_A", help="The picture at --mix 0.", show_default=False)] = None,
    image_b: Annotated[Path | None, typer.Argument(metavar="IMAGE_B", help="The picture at --mix 1.", show_default=False)] = None,
    values: Any = opt.REQUEST,
    opts: RunOptions = opt.RUN_OPTIONS,
) -> None:
    """Blend IMAGE_A and IMAGE_B: the spherical interpolation of their CLIP image embeddings
    drives the decoder, as in the unCLIP paper's Figure 4.

    --mix 0.5 (default) gives the halfway picture; --frames N gives N pictures from A (mix 0)
    to B (mix 1), all with the same seed, so only the embedding changes. With -n, sequence
    (or picture) i uses seed + i. --best-of N (with --prompt and --mix) keeps the decoder
    picture CLIP scores highest for the prompt. --keep-layout decodes every picture from the
    DDIM inversion of IMAGE_A, so the frames keep its composition.
    """
    render_request(BlendRequest, {**values, "image_a": image_a, "image_b": image_b}, opts)
