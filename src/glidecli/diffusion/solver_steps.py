"""The timesteps a sampler visits: the reference's respacing for DDPM and DDIM, and for the
multistep solvers a grid of their own (uniform in time or in log-SNR; benchmarks/README.md
has the evidence for each default)."""

from __future__ import annotations

import re

import numpy as np

from .schedule import betas_for, space_timesteps
from .vocabulary import SAMPLER_NAMES, SOLVERS, SamplerName

DEFAULT_LAMBDA_MIN = -5.1


GRIDS = ("time", "logsnr")


def solver_timesteps(
    name: str,
    count: int,
    steps: int = 1000,
    lambda_min: float | None = DEFAULT_LAMBDA_MIN,
    grid: str = "time",
    highest: int | None = None,
) -> list[int]:
    """Timesteps for the multistep solvers (PLMS, DPM-Solver++): ``count`` of them from 0
    up to ``t_top``, both ends included. ``grid`` "time" spaces them evenly in t
    ("linspace"/"trailing"); "logsnr" evenly in lambda, i.e. the integer timesteps nearest
    to evenly spaced lambda values, nudged apart where several round to the same one.

    ``t_top`` is the largest timestep whose log-SNR is at least ``lambda_min`` (None: the
    last one). The default -5.1 is DPM-Solver's clipping for i-DDPM/GLIDE models: the
    cosine schedule's last step jumps from lambda -6.5 (t=998) to -9.9 (t=999), where
    x0 = (x - sigma eps) / alpha amplifies eps errors ~20000 times; the cap gives
    t_top = 995 for the cosine schedule and keeps 999 for the linear one (lambda -5.06).
    Starting from pure noise at t_top is still accurate: alpha there is below 0.01.
    Ends included: the top, because the sampler starts from noise; 0, because the last
    network call then sees an almost clean image and the final step just takes its x0.
    ``highest`` lowers the top to that timestep (img2img starts part-way, see partial.py).
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    alphas_cumprod = np.cumprod(1.0 - betas_for(name, steps))
    log_snr = 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))
    if lambda_min is None:
        top = steps - 1
    else:
        eligible = np.nonzero(log_snr >= lambda_min)[0]
        if eligible.size == 0:
            raise ValueError(f"no timestep of {name!r} has log-SNR >= {lambda_min}")
        top = int(eligible.max())
    if highest is not None:
        top = min(top, int(highest))
    if grid not in GRIDS:
        raise ValueError(f"unknown timestep grid {grid!r}; choose from {', '.join(GRIDS)}")
    if count > top + 1:
        raise ValueError(f"cannot place {count} distinct timesteps in 0..{top}")
    if count == 1:
        return [top]
    if grid == "time":
        return [int(t) for t in np.round(np.linspace(0.0, top, count))]
    targets = np.linspace(log_snr[0], log_snr[top], count)
    nearest = np.abs(log_snr[None, : top + 1] - targets[:, None]).argmin(axis=1)
    timesteps = sorted(int(t) for t in nearest)
    for k in range(1, count):  # the dense low-noise end can round several values to one t
        timesteps[k] = max(timesteps[k], timesteps[k - 1] + 1)
    timesteps[-1] = top  # ... and the nudges must not pass the top
    for k in range(count - 2, -1, -1):
        timesteps[k] = min(timesteps[k], timesteps[k + 1] - 1)
    return timesteps


# The grid a bare count gives each solver (benchmarks/README.md has the evidence). DPM-Solver++
# steps in lambda and on GLIDE's schedules converges far faster on a lambda-uniform grid:
# on the time-uniform one the whole low-noise range, where detail forms, falls into the last
# step or two. PLMS steps in t, and at strong guidance is unstable on the lambda grid.
DEFAULT_GRID = {SamplerName.PLMS: "time", SamplerName.DPMPP_2M: "logsnr", SamplerName.DPMPP_2M_SDE: "logsnr"}
_SOLVER_SPEC = re.compile(r"(time|logsnr)?(\d+)")


def solver_spec(sampler: str, spec: str) -> tuple[str, int] | None:
    """(grid, count) for a solver's step spec: "20" (the solver's default grid), "logsnr20"
    or "time20"; None when ``spec`` is not of that form (e.g. "fast27") or ``sampler`` is
    not a solver."""
    match = _SOLVER_SPEC.fullmatch(spec.strip())
    if sampler not in SOLVERS or match is None:
        return None
    return match.group(1) or DEFAULT_GRID[SamplerName(sampler)], int(match.group(2))


def timesteps_for(sampler: str, schedule_name: str, spec: str, steps: int = 1000) -> list[int]:
    """The original timesteps a sampler should visit for a step ``spec``.

    A solver's count, optionally prefixed by its grid ("20", "logsnr20", "time20"), means
    :func:`solver_timesteps` (a bare count: the solver's :data:`DEFAULT_GRID`); anything else (all specs for DDPM/DDIM, and explicit ones
    such as ``"fast27"`` or sections for solvers) follows
    :func:`~glidecli.schedule.space_timesteps`.
    """
    if sampler not in SAMPLER_NAMES:
        raise ValueError(f"unknown sampler {sampler!r}; known samplers: {', '.join(SAMPLER_NAMES)}")
    solver = solver_spec(sampler, spec)
    if solver is not None:
        grid, count = solver
        return solver_timesteps(schedule_name, count, steps, grid=grid)
    if sampler.startswith(SamplerName.DPMPP_2M):
        # Its step-ratio extrapolation is unstable on uneven respacings such as fast27's
        # (199 -> 200); PLMS follows them (on fast27 it is far closer to the ODE than DDIM).
        raise ValueError(f"sampler {sampler} takes a number of steps ('20', 'logsnr20' or 'time20'), not {spec!r}")
    return space_timesteps(steps, spec.strip())
