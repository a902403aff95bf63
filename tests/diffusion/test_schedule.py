"""Schedules and respacing: reference vectors (when present) and invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from glidecli.diffusion.schedule import (
    Schedule,
    betas_for,
    space_timesteps,
)
from glidecli.nets.config import NOISE_SCHEDULES
from helpers.paths import SHARED

# Shared reference vectors live beside the repository, not in it; a fresh clone skips.
VECTORS = SHARED / "glide" / "diffusion-vectors.json"


@pytest.fixture(scope="module")
def vectors() -> dict:
    if not VECTORS.is_file():
        pytest.skip(f"reference vectors not found at {VECTORS}")
    return json.loads(VECTORS.read_text())


# --- reference vectors ---


def test_respacing_matches_reference(vectors):
    assert vectors["respacing"], "no respacing specs in the vectors"
    for spec, expected in vectors["respacing"].items():
        assert space_timesteps(1000, spec) == expected, spec


@pytest.mark.parametrize("name", NOISE_SCHEDULES)
def test_schedule_values_match_reference(vectors, name):
    table = vectors["schedules"][name]
    index = table["index"]
    schedule = Schedule.create(name)  # unrespaced: respaced index == timestep
    np.testing.assert_allclose(betas_for(name)[index], table["betas"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        schedule.alphas_cumprod[index].numpy(), table["alphas_cumprod"], rtol=1e-12, atol=0
    )


# --- beta schedules ---


def test_linear_betas():
    betas = betas_for("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1] == pytest.approx(0.02, rel=1e-12)
    # Shorter schedules scale up so the total amount of noise stays comparable.
    assert betas_for("linear", 500)[-1] == pytest.approx(0.04, rel=1e-12)


def test_cosine_betas_follow_alpha_bar_and_are_capped():
    betas = betas_for("squaredcos_cap_v2", 1000)
    assert betas.dtype == np.float64
    assert betas.max() == 0.999  # only the last step hits the cap
    assert np.count_nonzero(betas == 0.999) == 1 and betas[-1] == 0.999

    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    alphas_cumprod = np.cumprod(1 - betas)
    for t in (0, 10, 500, 998):
        assert alphas_cumprod[t] == pytest.approx(alpha_bar((t + 1) / 1000) / alpha_bar(0), rel=1e-9)


def test_unknown_schedule_names_the_known_ones():
    with pytest.raises(ValueError, match="linear.*squaredcos_cap_v2"):
        betas_for("cosine")


# --- respacing ---


def test_empty_spec_keeps_every_step():
    assert space_timesteps(1000, "") == list(range(1000))
    assert space_timesteps(1000, "1000") == list(range(1000))


def test_ddim_spec_uses_an_integer_stride():
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    assert space_timesteps(1000, "ddim7") == list(range(0, 1000, 143))


def test_fast27_avoids_the_last_timestep():
    steps = space_timesteps(1000, "fast27")
    assert len(steps) == 27 and steps == sorted(steps)
    assert 999 not in steps and steps[-1] == 997


def test_sections_are_strided_separately():
    steps = space_timesteps(300, "10,15,20")
    assert len(steps) == 45
    assert steps[0] == 0 and steps[9] == 99  # first section covers 0..99, ends included
    assert steps[10] == 100 and steps[24] == 199
    assert steps[25] == 200 and steps[-1] == 299


@pytest.mark.parametrize(
    "spec, message",
    [
        ("abc", "expected a step count"),
        ("0", "at least 1"),
        ("10,0,10", "at least 1"),
        ("-5", "at least 1"),
        ("ddim400", "no integer stride"),
        ("ddimx", "positive integer"),
        ("2000", "cannot take 2000 steps"),
        ("5,5,5,900", "section of only 250"),
        ("fast13", "only fastN preset"),
        ("10,,10", "expected a step count"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        space_timesteps(1000, spec)


# --- the respaced process ---


@pytest.mark.parametrize("name", NOISE_SCHEDULES)
def test_respaced_process_keeps_original_alpha_bar(name):
    full = Schedule.create(name)
    spaced = Schedule.create(name, respacing="27")
    assert len(spaced) == 27 and spaced.timesteps.dtype == torch.long
    assert spaced.timesteps.tolist() == space_timesteps(1000, "27")
    torch.testing.assert_close(
        spaced.alphas_cumprod, full.alphas_cumprod[spaced.timesteps], rtol=1e-10, atol=0
    )
    assert spaced.alphas_cumprod_prev[0] == 1.0
    torch.testing.assert_close(spaced.alphas_cumprod_prev[1:], spaced.alphas_cumprod[:-1])
    # The log posterior variance is 0-variance at i=0, so it borrows entry 1.
    assert spaced.posterior_log_variance_clipped[0] == spaced.posterior_log_variance_clipped[1]
    for table in (spaced.betas, spaced.alphas_cumprod, spaced.posterior_log_variance_clipped):
        assert table.dtype == torch.float64 and table.shape == (27,)


def test_from_timesteps_validates():
    with pytest.raises(ValueError, match="at least one"):
        Schedule.from_timesteps("linear", [])
    with pytest.raises(ValueError, match="repeat"):
        Schedule.from_timesteps("linear", [0, 5, 5])
    with pytest.raises(ValueError, match="0..999"):
        Schedule.from_timesteps("linear", [0, 1000])
    unsorted = Schedule.from_timesteps("linear", [500, 0, 250])
    assert unsorted.timesteps.tolist() == [0, 250, 500]


def test_single_step_schedule_is_finite():
    schedule = Schedule.from_timesteps("squaredcos_cap_v2", [999])
    assert len(schedule) == 1
    assert torch.isfinite(schedule.posterior_log_variance_clipped).all()


def test_conversions_round_trip_and_match_formulas():
    schedule = Schedule.create("squaredcos_cap_v2", respacing="50")
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    i = 30
    ab = float(schedule.alphas_cumprod[i])
    x = schedule.q_sample(x0, i, noise)
    torch.testing.assert_close(x, math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise)
    torch.testing.assert_close(schedule.predict_x0(x, i, noise), x0)
    torch.testing.assert_close(schedule.predict_eps(x, i, x0), noise)
    # The posterior mean of the exact x0 lies between x0 and x_t in the right proportions.
    mean = schedule.posterior_mean(x0, x, i)
    expected = (
        float(schedule.posterior_mean_coef1[i]) * x0 + float(schedule.posterior_mean_coef2[i]) * x
    )
    torch.testing.assert_close(mean, expected)


def test_learned_log_variance_interpolates_between_posterior_and_beta():
    schedule = Schedule.create("linear", respacing="fast27")
    i = 13
    low = torch.full((1, 3, 2, 2), -1.0, dtype=torch.float64)
    high = torch.ones_like(low)
    mid = torch.zeros_like(low)
    lo, hi = float(schedule.posterior_log_variance_clipped[i]), math.log(float(schedule.betas[i]))
    torch.testing.assert_close(schedule.learned_log_variance(low, i), torch.full_like(low, lo))
    torch.testing.assert_close(schedule.learned_log_variance(high, i), torch.full_like(low, hi))
    torch.testing.assert_close(schedule.learned_log_variance(mid, i), torch.full_like(low, (lo + hi) / 2))


def test_float32_inputs_use_float32_coefficients():
    # The reference rounds each float64 table entry to float32 before multiplying.
    schedule = Schedule.create("squaredcos_cap_v2", respacing="100")
    x = torch.linspace(-2, 2, 48).view(1, 3, 4, 4)
    eps = torch.linspace(1, -1, 48).view(1, 3, 4, 4)
    i = 50
    ab = float(schedule.alphas_cumprod[i])
    c1 = torch.tensor(math.sqrt(1 / ab), dtype=torch.float32)
    c2 = torch.tensor(math.sqrt(1 / ab - 1), dtype=torch.float32)
    out = schedule.predict_x0(x, i, eps)
    assert out.dtype == torch.float32
    assert torch.equal(out, c1 * x - c2 * eps)
    # Half inputs are promoted to float32, as in the reference.
    assert schedule.predict_x0(x.half(), i, eps.half()).dtype == torch.float32


def test_model_timesteps_are_original():
    schedule = Schedule.create("linear", respacing="fast27")
    t = schedule.model_timesteps(26, 3)
    assert t.dtype == torch.long and t.tolist() == [997] * 3
    assert schedule.timestep(1) == 22
