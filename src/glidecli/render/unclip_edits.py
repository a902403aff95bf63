"""Edits of CLIP image embeddings for unCLIP's `vary` and `blend` (render/unclip.py), as plain
functions: the slerp between two pictures' embeddings (the paper's Figure 4), the text diff
toward a new caption (section 3.3), and the decoder's view of a picture whose layout
--keep-layout keeps (sections 3.1-3.3: DDIM inversion, render/pipeline.py's invert_stage)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from ..diffusion.vocabulary import SamplerName
from ..files.images import load_image, open_rgb
from .jobs import BlendJob, Job, Stage, VaryJob
from .session import RenderError
from .sizes import layout_picture_problem

J = TypeVar("J", bound=Job)


@dataclass(frozen=True)
class TextDiff:
    """A text diff: the picture's caption (`away`) and the new one (`toward`). Each job's
    amount (VaryJob) says how far its embedding turns toward their difference."""

    toward: str
    away: str

    def record(self) -> dict[str, str]:
        return {"toward": self.toward, "away": self.away}


def slerp(a: Tensor, b: Tensor, mix: float) -> Tensor:
    """Spherical interpolation of embeddings [D] (or [B, D]), as the paper's Figure 4: the
    direction moves along the great circle from a's to b's at constant angular speed, the
    length moves linearly from |a| to |b| (CLIP embeddings are not normalized)."""
    a64, b64 = a.double(), b.double()
    norm_a, norm_b = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    unit_a, unit_b = a64 / norm_a, b64 / norm_b
    omega = torch.arccos((unit_a * unit_b).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    if bool((sin.abs() < 1e-6).any()):  # (anti)parallel: no unique circle; interpolate linearly
        direction = (1 - mix) * unit_a + mix * unit_b
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    else:
        direction = (torch.sin((1 - mix) * omega) * unit_a + torch.sin(mix * omega) * unit_b) / sin
    result: Tensor = (direction * ((1 - mix) * norm_a + mix * norm_b)).to(a.dtype)
    return result


def text_diff_embedding(image: Tensor, away: Tensor, toward: Tensor, amount: float) -> Tensor:
    """The paper's text diff: the picture's CLIP image embedding [D] turned `amount` of the way
    along the great circle toward the normalised difference of the captions' CLIP text
    embeddings (toward - away). Its length stays the picture's, which the decoder was trained
    on (Karlo's embeddings are not normalised): only the direction moves."""
    difference = (toward - away).double()
    norm = difference.norm()
    if float(norm) < 1e-12:
        raise RenderError("--toward and --away have the same CLIP text embedding: there is no difference to move along")
    return slerp(image, (difference / norm * image.double().norm()).to(image.dtype), amount)


def repeated(embedding: Tensor, jobs: list[Job]) -> Tensor:
    """One picture's embedding [1, D] for every job."""
    return embedding.expand(len(jobs), -1)


def blended(first: Tensor, second: Tensor, jobs: list[Job]) -> Tensor:
    """The embeddings [B, D] between two pictures' at each blend job's mix."""
    return torch.stack([slerp(first, second, _of(job, BlendJob, "render_blend").mix) for job in jobs])


def diffed(image: Tensor, away: Tensor, toward: Tensor, jobs: list[Job]) -> Tensor:
    """The embeddings [B, D] of a picture's [1, D] turned toward a text diff by each job's amount."""
    return torch.stack([text_diff_embedding(image[0], away, toward, _of(job, VaryJob, "render_vary with a text diff").amount) for job in jobs])


def _of(job: Job, kind: type[J], caller: str) -> J:
    if not isinstance(job, kind):
        raise TypeError(f"{caller} takes {kind.__name__}s, got {type(job).__name__}")
    return job


def layout_stage(decoder: Stage) -> Stage:
    """The decoder stage --keep-layout runs: DDIM with eta 0 (the one deterministic, invertible
    sampler), at the stage's steps."""
    return dataclasses.replace(decoder, sampler=dataclasses.replace(decoder.sampler, name=SamplerName.DDIM, eta=0.0))


def decoder_picture(path: Path, side: int) -> Tensor:
    """The picture [1, 3, side, side] in [-1, 1] that --keep-layout inverts: a square picture
    resized to the decoder's size (bicubic); another shape is refused in one line."""
    width, height = open_rgb(path).size
    problem = layout_picture_problem(width, height, side)
    if problem is not None:
        raise RenderError(problem)
    return load_image(path, side, fit="stretch")
