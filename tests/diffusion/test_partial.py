"""Starting the samplers part-way (img2img): the grids, and every sampler on data whose
answer is known.

For data x0 ~ N(mu, s^2) per pixel and a picture y diffused to x_t = a y + v z (a^2 the
alpha_bar of the start, v^2 = 1 - a^2), the exact denoiser is
E[x0 | x_t] = mu + a s^2 (x_t - a mu) / (a^2 s^2 + v^2). Ancestral (stochastic) sampling
from x_t draws x0 from p(x0 | x_t), whose mean over z is mu + k_sde (y - mu) with
k_sde = a^2 s^2 / (a^2 s^2 + v^2); the probability-flow ODE maps x_t to
mu + s (x_t - a mu) / sqrt(a^2 s^2 + v^2), mean mu + k_ode (y - mu), k_ode = a s / sqrt(...).
A sampler that started at the wrong timestep would land on another k.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glidecli.diffusion.noise import ImageNoise
from glidecli.diffusion.partial import check_strength, partial_timesteps, start_timestep
from glidecli.diffusion.samplers import SAMPLERS, Prediction, needs_noise, sample
from glidecli.diffusion.schedule import Schedule, betas_for
from glidecli.diffusion.solver_steps import timesteps_for

NAME = "squaredcos_cap_v2"
SPECS = {
    "ddpm": ("100", "10,10,5", "fast27"),
    "ddim": ("50", "ddim50", "fast27"),
    "plms": ("20", "logsnr20", "fast27"),
    "dpmpp_2m": ("20", "time20"),
    "dpmpp_2m_sde": ("20", "time20"),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_strength_one_is_the_whole_grid(sampler):
    for spec in SPECS[sampler]:
        assert partial_timesteps(sampler, NAME, spec, 1.0) == timesteps_for(sampler, NAME, spec)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("strength", [0.05, 0.3, 0.5, 0.8])
def test_the_grid_starts_at_the_strength_and_ends_at_zero(sampler, strength):
    for spec in SPECS[sampler]:
        full = timesteps_for(sampler, NAME, spec)
        grid = partial_timesteps(sampler, NAME, spec, strength)
        assert grid == sorted(set(grid)) and grid[0] == 0
        assert grid[-1] == start_timestep(full, strength) == round(strength * full[-1])
        if spec.lstrip("timelogsnr").isdigit():  # counts: the same rule with ceil(S * N) steps
            assert len(grid) == max(2, math.ceil(strength * len(full) - 1e-9))
        else:  # respacings: the full grid below the start, and the start
            assert grid[:-1] == [t for t in full if t < grid[-1]]


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.0001, 2, float("nan")])
def test_strength_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        check_strength(bad)
    with pytest.raises(ValueError):
        partial_timesteps("ddpm", NAME, "100", bad)


MU, S, Y = 0.2, 0.3, -0.6


def _exact_denoiser(schedule: Schedule):
    def denoise(x: torch.Tensor, i: int) -> Prediction:
        ab = schedule.alpha_bar(i)
        a = math.sqrt(ab)
        x0 = MU + a * S**2 * (x - a * MU) / (ab * S**2 + 1 - ab)
        return Prediction(x0, schedule.predict_eps(x, i, x0), None)

    return denoise


STOCHASTIC = {"ddpm", "dpmpp_2m_sde"}


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("strength", [0.3, 0.6])
def test_every_sampler_started_part_way_lands_where_the_exact_process_does(sampler, strength):
    spec = "100" if sampler in ("ddpm", "ddim") else "25"
    grid = partial_timesteps(sampler, NAME, spec, strength)
    schedule = Schedule.from_timesteps(NAME, grid)
    noise = ImageNoise([7])
    y = torch.full((1, 3, 48, 48), Y, dtype=torch.float64)
    top = len(schedule) - 1
    x = schedule.q_sample(y, top, noise.initial(y.shape[1:], dtype=torch.float64))
    out = sample(sampler, _exact_denoiser(schedule), x, schedule, noise=noise if needs_noise(sampler) else None)

    ab = float(np.cumprod(1 - betas_for(NAME))[grid[-1]])
    assert ab == pytest.approx(schedule.alpha_bar(top), rel=1e-12)  # the picture was diffused to the start
    if sampler in STOCHASTIC:
        expected = ab * S**2 / (ab * S**2 + 1 - ab)
    else:
        expected = math.sqrt(ab) * S / math.sqrt(ab * S**2 + 1 - ab)
    measured = float((out.mean() - MU) / (Y - MU))
    print(sampler, strength, f"start t={grid[-1]}", f"k expected {expected:.4f}, measured {measured:.4f}")
    # 6912 pixels: the stochastic mean is known to about 0.01 of (y - mu), the ODE's exactly
    # up to the solver's error.
    assert measured == pytest.approx(expected, abs=0.03)
    if sampler not in STOCHASTIC:  # sample by sample: the flow map of the exact process
        z = (x - math.sqrt(ab) * MU) / math.sqrt(ab * S**2 + 1 - ab)
        assert torch.allclose(out, MU + S * z, atol=0.03)
