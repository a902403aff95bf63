"""`glide score`: CLIP scores of existing pictures for a prompt (the judge of --best-of)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..files.manifest import load_manifest
from ..files.roles import Role
from . import options as opt


def score(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Pictures to score (any size; centre-cropped to a square).", show_default=False)],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The text to score them against.", show_default=False)],
    rank_model: opt.RankModel = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per picture.")] = False,
    device: opt.Device = "auto",
    weights: opt.Weights = None,
    offline: opt.Offline = False,
) -> None:
    """Print the CLIP score of each IMAGE for --prompt: 100 x the cosine similarity of the
    picture's and the prompt's embeddings (higher: closer), one line per picture."""
    from ..files.images import load_image
    from ..render.ranking import load_ranker
    from ..render.session import Session

    pictures = [load_image(path, None) for path in images]  # every file readable before any model loads
    manifest = load_manifest(weights)
    session = Session(manifest, device=device, dtype="fp32", offline=offline or None)
    ranker = load_ranker(session, rank_model or manifest.roles()[Role.RANK])
    for path, picture in zip(images, pictures):
        value = float(ranker.score(picture, [prompt])[0])
        if json_output:
            typer.echo(json.dumps({"path": str(path), "prompt": prompt, "rank_model": ranker.name, "score": round(value, 4)}, ensure_ascii=False))
        else:
            typer.echo(f"{value:8.4f}  {path}")
