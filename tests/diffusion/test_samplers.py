"""Samplers, the model wrapper, thresholding and per-image noise.

Reference single steps are checked against the shared vectors (skipped when absent).
Convergence is checked analytically: for data x0 ~ N(mu, s^2 I) the exact noise
predictor is E[eps | x_t] = sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2), and
the probability-flow ODE maps x_T = alpha_T mu + v_T z to exactly mu + s z, so the
deterministic samplers can be compared sample by sample with the exact answer.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from glidecli.diffusion.noise import MAX_SEED, ImageNoise
from glidecli.diffusion.samplers import (
    SAMPLERS,
    Prediction,
    StepInfo,
    denoiser_from_model,
    dynamic_threshold,
    needs_noise,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from glidecli.diffusion.schedule import Schedule, betas_for, space_timesteps
from glidecli.diffusion.solver_steps import solver_timesteps, timesteps_for
from glidecli.diffusion.vocabulary import SOLVERS
from helpers.paths import SHARED

VECTORS = SHARED / "glide" / "diffusion-vectors.json"
SCHEDULES = ("squaredcos_cap_v2", "linear")


@pytest.fixture(scope="module")
def vectors() -> dict:
    if not VECTORS.is_file():
        pytest.skip(f"reference vectors not found at {VECTORS}")
    return json.loads(VECTORS.read_text())


# --- reference single steps ---


def _first_step(sampler, denoise, x, schedule, **options) -> StepInfo:
    steps: list[StepInfo] = []
    sampler(denoise, x, schedule, callback=steps.append, **options)
    return steps[0]


def _single_step_results(case: dict, dtype: torch.dtype) -> dict:
    """Run one step at the case's index with every sampler that has a reference value."""
    full = Schedule.create(case["schedule"], 1000, case["respacing"])
    i = case["t_index"]
    assert full.timestep(i) == case["t_original"]
    # Respaced tables at index i depend only on the kept timesteps up to t_i, so cutting
    # the schedule there makes index i its top and the sampler's first step. (At i = 0 the
    # cut schedule has one step whose log variance differs, but no noise is added there.)
    schedule = Schedule.from_timesteps(case["schedule"], full.timesteps[: i + 1].tolist())
    assert schedule.alphas_cumprod[i] == full.alphas_cumprod[i]
    if i > 0:
        assert schedule.posterior_log_variance_clipped[i] == full.posterior_log_variance_clipped[i]

    def tensor(key, channels=3):
        return torch.tensor(case[key], dtype=dtype).view(1, channels, 4, 4)

    x, output, noise = tensor("x_t"), tensor("model_output", 6), tensor("noise")
    seen = []

    def model(x_in, t):
        seen.append(t.tolist())
        return output

    pred = denoiser_from_model(model, full, clip=True)(x, i)
    assert seen == [[case["t_original"]]]  # the network sees the original timestep
    denoise = denoiser_from_model(model, schedule, clip=True)

    return {
        "pred_xstart": pred.x0,
        "mean": full.posterior_mean(pred.x0, x, i),
        "log_variance": full.learned_log_variance(pred.var_interp, i),
        "ddpm_sample": _first_step(sample_ddpm, denoise, x, schedule, noise=lambda like: noise).x,
        "ddim_eta0_sample": _first_step(sample_ddim, denoise, x, schedule).x,
        "ddim_eta1_sample": _first_step(
            sample_ddim, denoise, x, schedule, noise=lambda like: noise, eta=1.0
        ).x,
    }


def _assert_matches(actual: torch.Tensor, expected: list, label: str) -> None:
    reference = torch.tensor(expected, dtype=torch.float64)
    # The reference ran in float32: relative 1e-5, plus an absolute floor at 1e-6 of the
    # largest value for entries that come out of a cancellation.
    atol = 1e-6 * float(reference.abs().max())
    torch.testing.assert_close(
        actual.double().flatten(), reference, rtol=1e-5, atol=atol, msg=lambda m: f"{label}: {m}"
    )


def test_single_steps_match_reference_float32(vectors):
    """float32 inputs, as in the reference: every output within float32 precision."""
    assert vectors["steps"]
    for case in vectors["steps"]:
        results = _single_step_results(case, torch.float32)
        for key, value in results.items():
            assert value.dtype == torch.float32
            _assert_matches(value, case[key], f"{case['schedule']} {case['respacing']} i={case['t_index']} {key}")


def test_single_steps_match_reference_float64(vectors):
    """float64 inputs use float64 coefficients, so they match the float32 reference only to
    its own precision. DDIM is left out: the reference computes 1 - alpha_bar_prev in
    float32, which loses ~1e-4 relative near t = 0 (float32 inputs reproduce that)."""
    for case in vectors["steps"]:
        results = _single_step_results(case, torch.float64)
        for key in ("pred_xstart", "mean", "log_variance", "ddpm_sample"):
            assert results[key].dtype == torch.float64
            _assert_matches(results[key], case[key], f"{case['schedule']} i={case['t_index']} {key}")


# --- analytic convergence on Gaussian data ---

DATA_STD = 0.3
DIMS = 4


def _data_mean() -> torch.Tensor:
    # Means in [-0.3, 0.3] with std 0.3: about 95% of the data lies inside [-1, 1].
    return torch.linspace(-0.3, 0.3, DIMS, dtype=torch.float64)


def _gaussian_model(name: str):
    """The exact eps predictor for N(mu, s^2 I) data, as a *network*: it is indexed by the
    original timestep, so a wrong respaced-to-original mapping would break convergence."""
    alphas_cumprod = np.cumprod(1.0 - betas_for(name))
    alpha = torch.from_numpy(np.sqrt(alphas_cumprod))
    sigma = torch.from_numpy(np.sqrt(1 - alphas_cumprod))
    marginal_variance = torch.from_numpy(alphas_cumprod * DATA_STD**2 + 1 - alphas_cumprod)
    mu = _data_mean()

    def model(x, t):
        a, s, v = (table[t].view(-1, 1) for table in (alpha, sigma, marginal_variance))
        return s * (x - a * mu) / v

    return model


def _run_gaussian(name, sampler, count, batch, seed=0, **options):
    """Sample with ``count`` steps; return (output, exact transport of the same start).

    Solvers use :func:`solver_timesteps`, DDPM/DDIM the reference respacing of ``count``.
    The start is drawn from the exact marginal at the top timestep (not pure noise) so
    that only discretisation error remains; clipping is off (the data is Gaussian).
    """
    timesteps = solver_timesteps(name, count) if sampler in SOLVERS else space_timesteps(1000, str(count))
    return _run_on_timesteps(name, sampler, timesteps, batch, seed, **options)


def _run_on_timesteps(name, sampler, timesteps, batch, seed=0, **options):
    schedule = Schedule.from_timesteps(name, timesteps)
    denoise = denoiser_from_model(_gaussian_model(name), schedule, clip=False)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, DIMS, generator=generator, dtype=torch.float64)
    mu = _data_mean()
    ab = schedule.alpha_bar(len(schedule) - 1)
    x = math.sqrt(ab) * mu + math.sqrt(ab * DATA_STD**2 + 1 - ab) * z
    noise = lambda like: torch.randn(like.shape, generator=generator, dtype=like.dtype)  # noqa: E731
    if sampler == "ddpm":
        out = sample_ddpm(denoise, x, schedule, noise, **options)
    elif sampler == "ddim":
        out = sample_ddim(denoise, x, schedule, noise, **options)
    elif sampler == "dpmpp_2m_sde":
        out = sample_dpmpp_2m(denoise, x, schedule, noise, **options)
    else:
        out = SAMPLERS[sampler](denoise, x, schedule, **options)
    return out, mu + DATA_STD * z


def _sample_error(out, exact) -> float:
    """RMS distance to the exact ODE solution, in units of the data std."""
    return float(((out - exact) / DATA_STD).pow(2).mean().sqrt())


def _distribution_error(out, reference) -> float:
    """Largest per-dimension |mean difference| + |std difference|, in data-std units."""
    mean_error = (out.mean(0) - reference.mean(0)).abs()
    std_error = (out.std(0) - reference.std(0)).abs()
    return float((mean_error + std_error).max()) / DATA_STD


DETERMINISTIC_COUNTS = (10, 20, 50, 100, 250)
# Error bounds at 250 steps (sample-wise RMS, data-std units). DDIM is first order; the
# multistep solvers are far more accurate.
FINAL_BOUND = {"ddim": 0.03, "plms": 1e-3, "dpmpp_2m": 2e-3}


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("sampler", ["ddim", "plms", "dpmpp_2m"])
def test_deterministic_samplers_converge(name, sampler):
    errors, distribution = [], []
    for count in DETERMINISTIC_COUNTS:
        out, exact = _run_gaussian(name, sampler, count, batch=4096)
        errors.append(_sample_error(out, exact))
        distribution.append(_distribution_error(out, exact))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < FINAL_BOUND[sampler], errors
    assert all(a > b for a, b in zip(distribution, distribution[1:])), distribution
    assert distribution[-1] < 1.5 * FINAL_BOUND[sampler], distribution
    # And the result is the data distribution itself, up to sampling noise (standard
    # errors ~0.016 for the mean and ~0.011 for the std, in data-std units).
    out, _ = _run_gaussian(name, sampler, 250, batch=4096, seed=1)
    assert float((out.mean(0) - _data_mean()).abs().max()) / DATA_STD < 0.06
    assert float((out.std(0) / DATA_STD - 1).abs().max()) < 0.05


@pytest.mark.parametrize("name", SCHEDULES)
def test_ddpm_converges(name):
    mean_errors, std_errors = [], []
    for count in (10, 50, 250):
        out, _ = _run_gaussian(name, "ddpm", count, batch=16384)
        mean_errors.append(float((out.mean(0) - _data_mean()).abs().max()) / DATA_STD)
        std_errors.append(float((out.std(0) / DATA_STD - 1).abs().max()))
    # The std bias shrinks with the step count; the mean stays within sampling noise
    # (per-dimension standard error 1/sqrt(16384) ~ 0.008 in these units).
    # (At 250 steps: ~0.03 cosine, ~0.05 linear; 0.30 / 0.46 at 10 steps.)
    assert std_errors[0] > std_errors[1] > std_errors[2], std_errors
    assert std_errors[-1] < 0.2 * std_errors[0] and std_errors[-1] < 0.08, std_errors
    assert max(mean_errors) < 0.04, mean_errors


@pytest.mark.parametrize("name", SCHEDULES)
def test_ddim_eta1_equals_ddpm_with_posterior_variance(name):
    # With the posterior variance, DDIM at eta = 1 is the same process as ancestral
    # sampling; fed the same noise stream they agree to rounding.
    ddpm, _ = _run_gaussian(name, "ddpm", 50, batch=256, seed=3)
    ddim, _ = _run_gaussian(name, "ddim", 50, batch=256, seed=3, eta=1.0)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_dpmpp_2m_beats_ddim_at_20_steps(name):
    """Both on the same solver_timesteps grid, and DDIM also on the reference respacing."""
    grid = solver_timesteps(name, 20)
    dpm, exact = _run_on_timesteps(name, "dpmpp_2m", grid, batch=4096)
    ddim, _ = _run_on_timesteps(name, "ddim", grid, batch=4096)
    ddim_respaced, _ = _run_on_timesteps(name, "ddim", space_timesteps(1000, "20"), batch=4096)
    assert _distribution_error(dpm, exact) < _distribution_error(ddim, exact)
    assert _distribution_error(dpm, exact) < _distribution_error(ddim_respaced, exact)
    assert _sample_error(dpm, exact) < 0.75 * _sample_error(ddim, exact)


@pytest.mark.parametrize("name", SCHEDULES)
def test_dpmpp_2m_first_order_into_lowest_timestep(name):
    """The documented choice: a first-order step into t = 0 makes 2M at least as good as
    DDIM at every count; extrapolating across that long step is worse at 20 steps."""
    for count in (10, 15, 20, 30, 50):
        grid = solver_timesteps(name, count)
        dpm, exact = _run_on_timesteps(name, "dpmpp_2m", grid, batch=1024)
        ddim, _ = _run_on_timesteps(name, "ddim", grid, batch=1024)
        assert _sample_error(dpm, exact) < _sample_error(ddim, exact), count
    grid = solver_timesteps(name, 20)
    lowered, exact = _run_on_timesteps(name, "dpmpp_2m", grid, batch=1024)
    extrapolated, _ = _run_on_timesteps(name, "dpmpp_2m", grid, batch=1024, lower_order_final=False)
    assert _sample_error(lowered, exact) < _sample_error(extrapolated, exact)


def _moment_errors(out) -> tuple[float, float]:
    """(largest |mean - mu|, largest |std / s - 1|) over the dimensions, in data-std units."""
    mean_error = float((out.mean(0) - _data_mean()).abs().max()) / DATA_STD
    return mean_error, float((out.std(0) / DATA_STD - 1).abs().max())


@pytest.mark.parametrize("name", SCHEDULES)
def test_dpmpp_2m_sde_samples_the_data_distribution(name):
    """The stochastic solver is not a transport of its start noise: check the moments.
    (Standard errors at 16384 samples: ~0.008 for the mean, ~0.006 for the std.)"""
    std_errors = {}
    for count in (10, 50, 250):
        out, _ = _run_on_timesteps(name, "dpmpp_2m_sde", solver_timesteps(name, count, grid="logsnr"), batch=16384)
        mean_error, std_errors[count] = _moment_errors(out)
        assert mean_error < 0.04, (count, mean_error)
    assert std_errors[10] < 0.08 and std_errors[50] < 0.03 and std_errors[250] < 0.03, std_errors


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_log_snr_grid_is_the_better_one_for_dpm_solver(name):
    """Why DEFAULT_GRID gives DPM-Solver++ the log-SNR grid: at few steps it is several
    times closer, for the ODE (sample by sample) and the SDE (the spread of the samples)."""
    for count in (10, 15, 20):
        errors = {}
        for grid in ("time", "logsnr"):
            out, exact = _run_on_timesteps(name, "dpmpp_2m", solver_timesteps(name, count, grid=grid), batch=1024)
            errors[grid] = _sample_error(out, exact)
        assert errors["logsnr"] < 0.6 * errors["time"], (count, errors)
    for count in (10, 15):
        spread = {}
        for grid in ("time", "logsnr"):
            out, _ = _run_on_timesteps(name, "dpmpp_2m_sde", solver_timesteps(name, count, grid=grid), batch=16384)
            spread[grid] = _moment_errors(out)[1]
        assert spread["logsnr"] < 0.7 * spread["time"], (count, spread)


# --- solver timesteps ---


def test_solver_timesteps_clip_the_cosine_tail():
    cosine = solver_timesteps("squaredcos_cap_v2", 20)
    linear = solver_timesteps("linear", 20)
    assert cosine[0] == 0 and cosine[-1] == 995  # lambda(995) ~ -5.08 >= -5.1 > lambda(996)
    assert linear[0] == 0 and linear[-1] == 999  # the linear schedule ends at -5.06
    for steps in (cosine, linear):
        assert len(steps) == 20 and steps == sorted(set(steps))
        gaps = np.diff(steps)
        assert gaps.max() - gaps.min() <= 1  # evenly spaced up to rounding
    assert solver_timesteps("squaredcos_cap_v2", 20, lambda_min=None)[-1] == 999
    assert solver_timesteps("linear", 1) == [999]
    assert solver_timesteps("linear", 1000) == list(range(1000))
    with pytest.raises(ValueError):
        solver_timesteps("linear", 0)
    with pytest.raises(ValueError, match="distinct"):
        solver_timesteps("squaredcos_cap_v2", 997)


@pytest.mark.parametrize("name, top", [("squaredcos_cap_v2", 995), ("linear", 999)])
def test_log_snr_grid_is_even_in_lambda(name, top):
    alphas_cumprod = np.cumprod(1.0 - betas_for(name))
    log_snr = 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))
    for count in (2, 10, 15, 25, 50, 100, top + 1):
        steps = solver_timesteps(name, count, grid="logsnr")
        assert len(steps) == count and steps == sorted(set(steps)) and (steps[0], steps[-1]) == (0, top), count
    steps = solver_timesteps(name, 15, grid="logsnr")
    gaps = -np.diff(log_snr[steps])
    ideal = (log_snr[0] - log_snr[top]) / 14
    # Nearest integer timesteps: the gaps are even up to the lambda change of one timestep
    # (largest near t = 0, where lambda falls fastest).
    assert np.all(np.abs(gaps - ideal) < 0.5 * ideal), gaps
    assert solver_timesteps(name, top + 1, grid="logsnr") == list(range(top + 1))
    with pytest.raises(ValueError, match="grid"):
        solver_timesteps(name, 10, grid="karras")


def test_timesteps_for_picks_the_grid_by_sampler():
    name = "squaredcos_cap_v2"
    logsnr, time_grid = solver_timesteps(name, 20, grid="logsnr"), solver_timesteps(name, 20)
    assert timesteps_for("dpmpp_2m", name, "20") == timesteps_for("dpmpp_2m_sde", name, "20") == logsnr
    assert timesteps_for("dpmpp_2m", name, "time20") == time_grid
    assert timesteps_for("plms", name, " 20 ") == time_grid
    assert timesteps_for("plms", name, "logsnr20") == logsnr
    assert timesteps_for("plms", name, "fast27") == space_timesteps(1000, "fast27")
    assert timesteps_for("ddim", name, "20") == space_timesteps(1000, "20")
    assert timesteps_for("ddpm", name, "100") == space_timesteps(1000, "100")
    for spec in ("fast27", "10,10", "ddim20"):
        with pytest.raises(ValueError, match="number of steps"):
            timesteps_for("dpmpp_2m_sde", name, spec)
    with pytest.raises(ValueError):
        timesteps_for("ddim", name, "logsnr20")  # the grids are the solvers'
    with pytest.raises(ValueError, match="unknown sampler"):
        timesteps_for("euler", name, "20")


# --- loop mechanics ---


def _constant_denoiser(schedule, calls=None):
    def denoise(x, i):
        if calls is not None:
            calls.append(i)
        x0 = torch.full_like(x, 0.25)
        return Prediction(x0, schedule.predict_eps(x, i, x0), None)

    return denoise


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_loop_visits_every_index_and_reports_each_step(sampler):
    schedule = Schedule.create("squaredcos_cap_v2", respacing="12")
    calls: list[int] = []
    steps: list[StepInfo] = []
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = sample(
        sampler,
        _constant_denoiser(schedule, calls),
        x,
        schedule,
        noise=ImageNoise([1, 2]),
        callback=steps.append,
    )
    assert calls == list(range(11, -1, -1))  # one denoiser call per step, top first
    assert [s.index for s in steps] == list(range(1, 13)) and {s.total for s in steps} == {12}
    assert torch.equal(steps[-1].x, out)
    # The last step lands on the clean estimate.
    torch.testing.assert_close(out, torch.full_like(out, 0.25))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_keyboard_interrupt_propagates(sampler):
    schedule = Schedule.create("linear", respacing="10")
    inner = _constant_denoiser(schedule)

    def denoise(x, i):
        if i == 6:
            raise KeyboardInterrupt
        return inner(x, i)

    with pytest.raises(KeyboardInterrupt):
        sample(sampler, denoise, torch.zeros(1, 3, 2, 2), schedule, noise=ImageNoise([0]))


def test_mean_shift_moves_the_mean_by_variance_times_gradient():
    schedule = Schedule.create("squaredcos_cap_v2", respacing="10")
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    gradient = torch.linspace(-1, 1, 48).view(1, 3, 4, 4)
    zeros = lambda like: torch.zeros_like(like)  # noqa: E731
    seen = []

    def shift(x_t, i):
        seen.append(i)
        return gradient

    plain = _first_step(sample_ddpm, _constant_denoiser(schedule), x, schedule, noise=zeros)
    shifted = _first_step(
        sample_ddpm, _constant_denoiser(schedule), x, schedule, noise=zeros, mean_shift=shift
    )
    variance = math.exp(float(schedule.posterior_log_variance_clipped[9]))
    torch.testing.assert_close(shifted.x - plain.x, variance * gradient)
    assert seen[0] == 9


def test_sampler_options_are_validated():
    schedule = Schedule.create("linear", respacing="5")
    denoise = _constant_denoiser(schedule)
    x = torch.zeros(1, 3, 2, 2)
    assert needs_noise("ddpm") and not needs_noise("ddim") and needs_noise("ddim", eta=0.5)
    assert not needs_noise("plms") and not needs_noise("dpmpp_2m") and needs_noise("dpmpp_2m_sde")
    with pytest.raises(ValueError, match="unknown sampler"):
        needs_noise("euler")
    with pytest.raises(ValueError, match="noise"):
        sample("ddpm", denoise, x, schedule)
    with pytest.raises(ValueError, match="noise"):
        sample_ddim(denoise, x, schedule, eta=1.0)
    with pytest.raises(ValueError, match="mean_shift"):
        sample("ddim", denoise, x, schedule, mean_shift=lambda x, i: x)
    with pytest.raises(ValueError, match="eta"):
        sample("plms", denoise, x, schedule, eta=0.5)


# --- model wrapper and thresholding ---


def test_denoiser_clips_x0_and_rederives_eps():
    schedule = Schedule.create("squaredcos_cap_v2", respacing="50")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64) * 3
    output = torch.randn(2, 6, 8, 8, generator=generator, dtype=torch.float64)
    i = 20
    raw_x0 = schedule.predict_x0(x, i, output[:, :3])
    assert raw_x0.abs().max() > 1  # so that clipping matters

    pred = denoiser_from_model(lambda x_in, t: output, schedule)(x, i)
    torch.testing.assert_close(pred.x0, raw_x0.clamp(-1, 1))
    torch.testing.assert_close(pred.eps, schedule.predict_eps(x, i, pred.x0))
    torch.testing.assert_close(schedule.predict_x0(x, i, pred.eps), pred.x0)  # consistent pair
    assert not torch.allclose(pred.eps, output[:, :3])
    assert torch.equal(pred.var_interp, output[:, 3:])

    unclipped = denoiser_from_model(lambda x_in, t: output, schedule, clip=False)(x, i)
    assert torch.equal(unclipped.eps, output[:, :3])  # untouched x0: the network's eps
    torch.testing.assert_close(unclipped.x0, raw_x0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_a_v_predicting_network_samples_exactly_as_its_eps_twin(name):
    """A network that outputs v = sqrt(ab) eps - sqrt(1 - ab) x0 for the exact Gaussian
    predictor, read with prediction="v", gives the same x0 and eps at every step and the
    same samples as the eps network itself."""
    timesteps = solver_timesteps(name, 20)
    schedule = Schedule.from_timesteps(name, timesteps)
    eps_model = _gaussian_model(name)
    full = Schedule.create(name)

    def v_model(x, t):
        ab = full.alphas_cumprod.to(x.dtype)[t].view(-1, *([1] * (x.dim() - 1)))
        eps = eps_model(x, t)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    as_eps = denoiser_from_model(eps_model, schedule, clip=False)
    as_v = denoiser_from_model(v_model, schedule, clip=False, prediction="v")
    x = torch.randn(4, DIMS, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for i in (0, len(schedule) // 2, len(schedule) - 1):
        a, b = as_eps(x, i), as_v(x, i)
        torch.testing.assert_close(b.x0, a.x0, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(b.eps, a.eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sample_dpmpp_2m(as_v, x, schedule), sample_dpmpp_2m(as_eps, x, schedule), rtol=1e-8, atol=1e-8)


def test_denoiser_applies_transform_before_clipping():
    schedule = Schedule.create("linear", respacing="10")
    x = torch.linspace(-0.5, 0.5, 12, dtype=torch.float64).view(1, 3, 2, 2)
    seen = []

    def transform(x0, i):
        seen.append(i)
        return x0 * 100  # pushes everything outside [-1, 1]

    model = lambda x_in, t: torch.zeros_like(x_in)  # noqa: E731
    pred = denoiser_from_model(model, schedule, x0_transform=transform)(x, 4)
    assert seen == [4]
    assert pred.x0.abs().max() == 1.0 and pred.var_interp is None
    torch.testing.assert_close(pred.eps, schedule.predict_eps(x, 4, pred.x0))


def test_denoiser_rejects_wrong_channel_counts():
    schedule = Schedule.create("linear", respacing="10")
    denoise = denoiser_from_model(lambda x, t: torch.zeros(1, 4, 2, 2), schedule)
    with pytest.raises(ValueError, match="channels"):
        denoise(torch.zeros(1, 3, 2, 2), 0)


def test_dynamic_threshold():
    inside = torch.linspace(-0.9, 0.9, 48).view(1, 3, 4, 4)
    saturated = torch.full((1, 3, 4, 4), 2.0)
    saturated[0, 0, 0, :2] = -2.0
    batch = torch.cat([inside, saturated])
    out = dynamic_threshold(batch)
    assert torch.equal(out[0], inside[0])  # s <= 1: the sample is left alone
    torch.testing.assert_close(out[1], saturated[0] / 2)  # s = 2: scaled into [-1, 1]

    # A few outliers are clipped at the percentile before rescaling.
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 3, 16, 16, generator=generator) * 1.5
    s = float(torch.quantile(x0.abs().flatten(), 0.995))
    expected = x0.clamp(-s, s) / s
    torch.testing.assert_close(dynamic_threshold(x0), expected)
    assert dynamic_threshold(x0).abs().max() <= 1.0
    # Per sample: thresholding a batch equals thresholding each sample alone.
    mild = torch.linspace(-0.5, 0.5, 768).view(1, 3, 16, 16)
    pair = dynamic_threshold(torch.cat([x0, mild]))
    torch.testing.assert_close(pair[:1], expected)
    assert torch.equal(pair[1:], mild)
    with pytest.raises(ValueError):
        dynamic_threshold(x0, percentile=1.5)


# --- per-image noise ---

SEED = 1234


def test_image_noise_is_independent_of_batch():
    shape = (3, 8, 8)
    batch = ImageNoise([SEED, SEED + 1, SEED + 2])
    alone = ImageNoise([SEED + 1])
    assert torch.equal(batch.initial(shape)[1], alone.initial(shape)[0])
    like_batch, like_alone = torch.empty(3, *shape), torch.empty(1, *shape)
    for _ in range(3):  # successive step noises stay in step
        assert torch.equal(batch(like_batch)[1], alone(like_alone)[0])
    assert not torch.equal(batch(like_batch)[0], batch(like_batch)[1])


def test_image_noise_first_draw_equals_manual_seed():
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        expected = torch.randn(3, 4, 4)
    assert torch.equal(ImageNoise([SEED]).initial((3, 4, 4))[0], expected)


def test_image_noise_dtype_and_device():
    noise = ImageNoise.from_base_seed(SEED, 2)
    assert noise.seeds == (SEED, SEED + 1)
    reference = ImageNoise([SEED, SEED + 1]).initial((3, 2, 2))
    as_double = noise.initial((3, 2, 2), device="cpu", dtype=torch.float64)
    assert as_double.dtype == torch.float64
    assert torch.equal(as_double, reference.double())  # drawn in float32, then converted
    assert noise(torch.empty(2, 5, dtype=torch.float16)).dtype == torch.float16
    with pytest.raises(ValueError, match="batch"):
        noise(torch.empty(3, 5))


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 1.5, "7", True, None])
def test_bad_seeds_raise(seed):
    with pytest.raises(ValueError):
        ImageNoise([0, seed])


def test_seed_range_edges():
    ImageNoise([0, MAX_SEED, np.uint32(5)])
    with pytest.raises(ValueError):
        ImageNoise.from_base_seed(MAX_SEED, 2)
    with pytest.raises(ValueError):
        ImageNoise([])


def test_sampled_image_does_not_depend_on_batch():
    """End to end: image 1 of a 3-image DDPM batch equals that image sampled alone."""
    name = "squaredcos_cap_v2"
    schedule = Schedule.create(name, respacing="25")
    denoise = denoiser_from_model(
        lambda x, t: _gaussian_model(name)(x.flatten(1), t).view_as(x), schedule, clip=False
    )

    def run(seeds):
        noise = ImageNoise(seeds)
        return sample_ddpm(denoise, noise.initial((DIMS,), dtype=torch.float64), schedule, noise)

    torch.testing.assert_close(run([SEED, SEED + 1, SEED + 2])[1], run([SEED + 1])[0])
