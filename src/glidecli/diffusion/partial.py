"""Starting the reverse process part-way, for img2img (SDEdit, Meng et al. 2021).

A picture x0 is diffused to the timestep t_S at fraction S (the strength) of the sampler's
grid, x = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) z, and sampled from there. Every sampler
supports this without change: each walks a :class:`~glidecli.diffusion.schedule.Schedule`
from its top index down to clean data, so img2img only needs a schedule whose top is t_S.

The grid below t_S follows the sampler's own rule, so strength 1 gives exactly the grid of
plain generation:

- a step count (``"20"`` for a solver, also ``"logsnr20"`` / ``"time20"``; ``"100"`` for
  ddpm/ddim) is laid out by the same rule over 0..t_S with ceil(S * count) steps: the grid
  keeps its density and the work shrinks with the strength;
- any other respacing (sections ``"10,10,5"``, ``"ddimN"``, ``"fast27"``) keeps its
  timesteps below t_S and adds t_S itself on top.

t_S = round(S * top), where top is the highest timestep of the full grid (999 for ddpm's
counts, 995 for the solvers' log-SNR cap, 997 for fast27).
"""

from __future__ import annotations

import math

from .schedule import space_timesteps
from .solver_steps import solver_spec, solver_timesteps, timesteps_for


def check_strength(strength: float, option: str = "strength") -> float:
    """`strength` as a float, or ValueError unless 0 < strength <= 1."""
    value = float(strength)
    if not (0.0 < value <= 1.0):  # also refuses NaN
        raise ValueError(f"{option} must be in (0, 1] (0 would keep the picture unchanged, 1 is plain generation), got {strength}")
    return value


def start_timestep(full_grid: list[int], strength: float) -> int:
    """The timestep a run at `strength` starts from, on a sampler's full grid."""
    return round(check_strength(strength) * max(full_grid))


def partial_timesteps(sampler: str, schedule_name: str, spec: str, strength: float, steps: int = 1000) -> list[int]:
    """The original timesteps a sampler visits when it starts at fraction `strength` of its
    grid (see the module's docstring); strength 1 gives :func:`timesteps_for` exactly."""
    full = timesteps_for(sampler, schedule_name, spec, steps)
    if check_strength(strength) == 1.0:
        return full
    start = start_timestep(full, strength)
    solver = solver_spec(sampler, spec)
    if solver is not None:
        grid, count = solver
        return solver_timesteps(schedule_name, _scaled(count, strength, start), steps, grid=grid, highest=start)
    text = spec.strip()
    if text.isdigit():
        return space_timesteps(start + 1, str(_scaled(int(text), strength, start)))
    return sorted({t for t in full if t < start} | {start})


def _scaled(count: int, strength: float, start: int) -> int:
    """ceil(strength * count) steps, at most one per timestep in 0..start, and at least two
    (start and 0) unless the start is 0 itself: the grid always spans start..0."""
    return max(min(2, start + 1), min(math.ceil(strength * count - 1e-9), start + 1))
