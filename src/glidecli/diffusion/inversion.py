"""DDIM inversion: the noise x_T from which deterministic DDIM (eta 0) draws a given picture.

The unCLIP paper (Ramesh et al. 2022, sections 3.1-3.3) inverts its decoder this way to keep a
picture's layout while its CLIP image embedding is edited: invert with the picture's own
embedding, then decode the edited embedding from the same x_T.

One DDIM step at index i maps x_t (alpha_bar = ab) to x_prev (alpha_bar = ab_prev):

    x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps,   x = sqrt(ab) x0 + sqrt(1 - ab) eps

with (x0, eps) = denoise(x, i). Going up, x is unknown and eps depends on it. Given eps,
x0 = (x_prev - sqrt(1 - ab_prev) eps) / sqrt(ab_prev) and x = sqrt(ab) x0 + sqrt(1 - ab) eps.
The usual inversion takes eps = denoise(x_prev, i).eps: the network's answer one step early,
exact only as steps shrink. `refine` more evaluations iterate towards the fixed point, where
the DDIM step from x gives x_prev exactly; each costs one more network call per step. The
iteration solves the step's equation for x through the prediction that changes least with x:
eps where the picture dominates (alpha_bar >= 1/2; x0 follows x one for one there), x0 where the
noise does (eps follows x there). On a Gaussian toy model either form alone contracts by at most
0.12 per iteration on its side of alpha_bar = 1/2, while eps's alone contracts by only 0.999 at
the cosine schedule's top step, and x0's cannot be solved at the bottom one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .samplers import Callback, Denoiser, StepInfo
from .schedule import Schedule, coefficient


@torch.no_grad()
def invert_ddim(
    denoise: Denoiser,
    x0: Tensor,
    schedule: Schedule,
    *,
    refine: int = 0,
    callback: Callback | None = None,
) -> Tensor:
    """The x at the schedule's top index whose DDIM (eta 0) sampling with `denoise` gives `x0`.

    Walks i = 0 ... N-1 (the reverse of sample_ddim), one denoiser call per step plus `refine`
    fixed-point refinements of each step. `callback` hears each step, as a sampler's does."""
    if refine < 0:
        raise ValueError(f"refine must be non-negative, got {refine}")
    total = len(schedule)
    x = x0
    for i in range(total):
        ab = coefficient(schedule.alpha_bar(i), x)
        ab_prev = coefficient(schedule.alpha_bar_prev(i), x)
        x, clean = _invert_step(denoise, x, i, ab, ab_prev, refine)
        if callback is not None:
            callback(StepInfo(i + 1, total, x, clean))
    return x


def _invert_step(denoise: Denoiser, x_prev: Tensor, i: int, ab: Tensor, ab_prev: Tensor, refine: int) -> tuple[Tensor, Tensor]:
    """(x, its clean estimate) one step above `x_prev`. A refinement whose residual (the DDIM
    step from the current x, minus x_prev) grew switches to the other form: the one that
    contracts depends on the network (a random one's x0 follows x everywhere)."""
    through_eps = float(ab) >= 0.5
    guess, clean = x_prev, x_prev  # the picture one level down: the usual first guess of x
    previous = float("inf")
    for k in range(refine + 1):
        pred = denoise(guess, i)
        if k > 0:
            residual = float((torch.sqrt(ab_prev) * pred.x0 + torch.sqrt(1 - ab_prev) * pred.eps - x_prev).abs().max())
            through_eps = through_eps != (residual > previous)
            previous = residual
        if k == 0 or through_eps:  # solve through eps (the usual inversion's first step)
            clean = (x_prev - torch.sqrt(1 - ab_prev) * pred.eps) / torch.sqrt(ab_prev)
            guess = torch.sqrt(ab) * clean + torch.sqrt(1 - ab) * pred.eps
        else:  # through x0: x_prev = sqrt(ab_prev) x0 + sqrt((1 - ab_prev) / (1 - ab)) (x - sqrt(ab) x0)
            clean = pred.x0
            guess = torch.sqrt((1 - ab) / (1 - ab_prev)) * (x_prev - torch.sqrt(ab_prev) * clean) + torch.sqrt(ab) * clean
    return guess, clean
