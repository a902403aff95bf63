"""The analytic part of benchmarks/sampler_steps.py: data whose exact (guided) noise predictor
and optimal reverse variance are known, a mixture of two Gaussians in 8 dimensions, and the
rows measuring each sampler's sliced Wasserstein-1 distance to the target and to its own limit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from glidecli.diffusion.samplers import denoiser_from_model, needs_noise, sample
from glidecli.diffusion.schedule import Schedule
from harness import log
from sampler_variants import (
    COSINE,
    DDPM,
    GUIDANCE,
    LEVEL,
    LINEAR,
    ODE_VARIANTS,
    SDE_LAMBDA,
    STOCHASTIC,
    STRESS_GUIDANCE,
    Row,
    limit_schedule,
)


class Mixture:
    """sum_k w_k N(m_k, s_k^2 I) in D dimensions, with E[x0 | x_t] and Var[x0 | x_t] for
    x_t = alpha x0 + sigma z in closed form."""

    def __init__(self, weights, means: Tensor, stds):
        self.log_weights = torch.tensor(weights, dtype=torch.float64).log()
        self.means = means.to(torch.float64)  # [K, D]
        self.stds = torch.tensor(stds, dtype=torch.float64)  # [K]

    def posterior(self, x: Tensor, alpha: float, sigma: float, with_variance: bool = True):
        """E[x0 | x_t] and the per-dimension Var[x0 | x_t] (None unless `with_variance`),
        by matrix products: E[x0 | x_t, k] = keep_k m_k + gain_k x_t."""
        dims = x.shape[1]
        var = alpha**2 * self.stds**2 + sigma**2  # [K] variance of x_t given component k
        gain = alpha * self.stds**2 / var
        keep = 1 - alpha * gain
        sq_dist = (x * x).sum(1, keepdim=True) - 2 * alpha * x @ self.means.T + alpha**2 * (self.means**2).sum(1)
        log_p = self.log_weights - 0.5 * dims * var.log() - 0.5 * sq_dist / var
        if log_p.shape[1] == 2:  # torch's softmax over 2 columns is slow per row
            first = torch.sigmoid(log_p[:, :1] - log_p[:, 1:])
            resp = torch.cat([first, 1 - first], dim=1)
        else:
            resp = torch.softmax(log_p, dim=1)
        mean = (resp * keep) @ self.means + (resp @ gain)[:, None] * x
        if not with_variance:
            return mean, None
        second = (
            (resp @ (self.stds**2 * sigma**2 / var))[:, None]
            + (resp * keep**2) @ self.means**2
            + 2 * x * ((resp * keep * gain) @ self.means)
            + (resp @ gain**2)[:, None] * x * x
        )
        return mean, (second - mean.pow(2)).clamp(min=0.0)

    def sample(self, n: int, seed: int, quasi: bool = False) -> Tensor:
        """n samples; `quasi`: from a scrambled Sobol sequence (the component from the first
        coordinate, so the mode counts are exact), for a target with little sampling noise."""
        probs = self.log_weights.exp()
        dims = self.means.shape[1]
        if quasi:
            u = torch.quasirandom.SobolEngine(dims + 1, scramble=True, seed=seed).draw(n, dtype=torch.float64)
            k = torch.searchsorted(probs.cumsum(0), u[:, 0].contiguous()).clamp(max=len(probs) - 1)
            z = normal_from_uniform(u[:, 1:])
        else:
            generator = torch.Generator().manual_seed(seed)
            k = torch.multinomial(probs, n, replacement=True, generator=generator)
            z = torch.randn(n, dims, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z


def normal_from_uniform(u: Tensor) -> Tensor:
    return math.sqrt(2) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-15, 1 - 1e-15))


def quasi_normal(n: int, dims: int, seed: int) -> Tensor:
    return normal_from_uniform(torch.quasirandom.SobolEngine(dims, scramble=True, seed=seed).draw(n, dtype=torch.float64))


def analytic_data(dims: int = 8) -> tuple[Mixture, Mixture]:
    """(unconditional, conditional): the same two modes at +-0.4 (a sign pattern over the
    dimensions); the condition prefers the first mode and is narrower, as a caption narrows
    an image distribution down. Over 99.8% of the data lie in [-1, 1]."""
    pattern = torch.tensor([(-1.0) ** (d // 2) for d in range(dims)], dtype=torch.float64)
    means = torch.stack([0.4 * pattern, -0.4 * pattern])
    return Mixture([0.5, 0.5], means, [0.2, 0.2]), Mixture([0.8, 0.2], means, [0.15, 0.15])


def analytic_model(schedule_name: str, uncond: Mixture, cond: Mixture, scale: float, learned_variance: bool):
    """`model_fn(x, t)` for denoiser_from_model: the exact (guided) eps at the original
    timestep t, plus GLIDE's variance-interpolation channels when `learned_variance`."""
    full = Schedule.create(schedule_name)
    ab = full.alphas_cumprod.numpy()
    alpha, sigma = np.sqrt(ab), np.sqrt(1 - ab)
    post_var = full.posterior_variance.numpy()
    log_post = full.posterior_log_variance_clipped.numpy()
    log_beta = np.log(full.betas.numpy())
    coef1 = full.posterior_mean_coef1.numpy()

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        step = int(t[0])
        a, s = float(alpha[step]), float(sigma[step])
        mean_c, var_c = cond.posterior(x, a, s, with_variance=learned_variance)
        eps = (x - a * mean_c) / s
        if scale != 1.0:
            mean_u, _ = uncond.posterior(x, a, s, with_variance=False)
            eps_u = (x - a * mean_u) / s
            eps = eps_u + scale * (eps - eps_u)
        if not learned_variance:
            return eps
        # The optimal diagonal reverse variance of the 1000-step process, as GLIDE's v.
        optimum = (post_var[step] + coef1[step] ** 2 * var_c).clamp(min=1e-30)
        span = log_beta[step] - log_post[step]
        v = 2 * (optimum.log() - log_post[step]) / span - 1 if span > 0 else torch.zeros_like(x)
        return torch.cat([eps, v.clamp(-1.0, 1.0)], dim=1)

    return model_fn


CHUNK = 16384  # rows per sampler run: float64 element-wise ops are much faster on small tensors


def run_analytic(model_fn, sampler: str, schedule: Schedule, start: Tensor, seed: int) -> Tensor:
    denoise = denoiser_from_model(model_fn, schedule)
    generator = torch.Generator().manual_seed(seed)

    def noise(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype)

    parts = [
        sample(sampler, denoise, chunk.clone(), schedule, noise=noise if needs_noise(sampler) else None).clamp(-1, 1)
        for chunk in start.split(CHUNK)
    ]
    return torch.cat(parts)


def sliced_w1(a: Tensor, b: Tensor, directions: Tensor) -> float:
    pa, _ = torch.sort(a @ directions, dim=0)
    pb, _ = torch.sort(b @ directions, dim=0)
    return float((pa - pb).abs().mean())


def mode_stats(x: Tensor, mixture: Mixture) -> str:
    """The share of points nearer the first mode, their mean along the mode's direction and
    their std per dimension: how guidance reshapes the data."""
    direction = mixture.means[0] / mixture.means[0].norm()
    major = x[(x @ direction) > 0]
    along = float((major @ direction).mean()) / math.sqrt(x.shape[1])
    return f"({major.shape[0] / x.shape[0]:.3f}, {along:.3f}, {float((major - major.mean(0)).std()):.3f})"


CASES = [
    ("analytic, cosine (base), guided s=3", COSINE, GUIDANCE),
    ("analytic, cosine (base), unguided", COSINE, 1.0),
    ("analytic, linear (upsampler), unguided", LINEAR, 1.0),
]


@dataclass
class Setup:
    """What every analytic case shares: the data, the start noise and the SW1 directions."""

    n: int
    dims: int
    uncond: Mixture
    cond: Mixture
    directions: Tensor
    start: Tensor

    @classmethod
    def create(cls, n: int, dims: int = 8) -> Setup:
        uncond, cond = analytic_data(dims)
        directions = torch.randn(dims, 64, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
        directions /= directions.norm(dim=0, keepdim=True)
        return cls(n, dims, uncond, cond, directions, quasi_normal(n, dims, seed=1))


def analytic_rows(n: int) -> tuple[list[Row], list[str]]:
    setup = Setup.create(n)
    rows: list[Row] = []
    notes: list[str] = []
    for case, schedule_name, scale in CASES:
        new_rows, new_notes = analytic_case(setup, case, schedule_name, scale)
        rows += new_rows
        notes += new_notes
    rows += stress_rows(setup)
    return rows, notes


def case_target(setup: Setup, learned_model, schedule_name: str, scale: float) -> tuple[Tensor, Tensor, str]:
    """The target, an independent sample of it (for the noise floor) and the target's name."""
    n, dims = setup.n, setup.dims
    if scale == 1.0:
        target = setup.cond.sample(n, seed=2, quasi=True).clamp(-1, 1)
        independent = setup.cond.sample(n, seed=3).clamp(-1, 1)
        return target, independent, "data"
    full = limit_schedule(999, schedule_name)
    target = run_analytic(learned_model, "ddpm", full, quasi_normal(n, dims, seed=4), seed=14)
    independent = run_analytic(learned_model, "ddpm", full, quasi_normal(n, dims, seed=5), seed=15)
    return target, independent, "ancestral limit (ddpm on all 1000 steps, learned variance)"


def analytic_case(setup: Setup, case: str, schedule_name: str, scale: float) -> tuple[list[Row], list[str]]:
    t0 = time.perf_counter()
    n, uncond, cond, start = setup.n, setup.uncond, setup.cond, setup.start
    models = {
        True: analytic_model(schedule_name, uncond, cond, scale, learned_variance=True),
        False: analytic_model(schedule_name, uncond, cond, scale, learned_variance=False),
    }
    target, independent, target_name = case_target(setup, models[True], schedule_name, scale)

    def distance(x: Tensor, y: Tensor = target) -> float:
        return sliced_w1(x, y, setup.directions) / LEVEL

    limits: dict[int, Tensor] = {}

    def ode_limit(top: int) -> Tensor:
        if top not in limits:
            limits[top] = run_analytic(models[False], "dpmpp_2m", limit_schedule(top, schedule_name), start, seed=0)
        return limits[top]

    rows: list[Row] = []
    for variant in STOCHASTIC:
        row = Row(case, variant.label, "SW1 to target")
        for count in variant.counts:
            out = run_analytic(models[variant.learned_variance], variant.sampler, variant.schedule(schedule_name, count), start, seed=100 + count)
            row.put(count, distance(out))
        rows.append(row)
    for variant in ODE_VARIANTS:
        if variant.linear_only and schedule_name != LINEAR:
            continue
        row = Row(case, variant.label, "SW1 to target (to own limit)")
        for count in variant.counts:
            schedule = variant.schedule(schedule_name, count)
            out = run_analytic(models[False], variant.sampler, schedule, start, seed=0)
            row.put(count, distance(out), distance(out, ode_limit(schedule.timestep(-1))))
        rows.append(row)
    floor = Row(case, "noise floor", "SW1, independent target sample")
    floor.put(0, distance(independent))
    gap = Row(case, "ODE limit", "SW1 to target (ODE from t=999)")
    gap.put(0, distance(ode_limit(999)))
    rows += [floor, gap]
    notes = [f"{case}: target = {target_name}, N = {n}"]
    if scale != 1.0:
        notes.append(
            f"{case}: major mode (weight, mean, std) of the ancestral limit {mode_stats(target, cond)}, "
            f"of the ODE limit {mode_stats(ode_limit(999), cond)}; conditional data "
            f"{mode_stats(cond.sample(n, seed=2, quasi=True), cond)}"
        )
    log(f"{case}: {time.perf_counter() - t0:.0f} s")
    return rows, notes


def stress_rows(setup: Setup) -> list[Row]:
    """Stronger guidance than GLIDE's default (users may ask for it): multistep methods of
    high order are known to become unstable as guidance grows. The ODE samplers against their
    own limit (discretisation error only), the stochastic ones against the ancestral limit."""
    t0 = time.perf_counter()
    case = f"analytic, cosine (base), guided s={STRESS_GUIDANCE:g}"
    start, directions = setup.start, setup.directions
    model = analytic_model(COSINE, setup.uncond, setup.cond, STRESS_GUIDANCE, learned_variance=False)
    limits: dict[int, Tensor] = {}
    rows: list[Row] = []
    for variant in ODE_VARIANTS:
        if variant.linear_only:
            continue
        row = Row(case, variant.label, "SW1 to own ODE limit")
        for count in variant.counts:
            schedule = variant.schedule(COSINE, count)
            top = schedule.timestep(-1)
            if top not in limits:
                limits[top] = run_analytic(model, "dpmpp_2m", limit_schedule(top, COSINE), start, seed=0)
            out = run_analytic(model, variant.sampler, schedule, start, seed=0)
            row.put(count, sliced_w1(out, limits[top], directions) / LEVEL)
        rows.append(row)
    learned = analytic_model(COSINE, setup.uncond, setup.cond, STRESS_GUIDANCE, learned_variance=True)
    target = run_analytic(learned, "ddpm", limit_schedule(999, COSINE), quasi_normal(setup.n, setup.dims, seed=4), seed=14)
    for variant in (DDPM, SDE_LAMBDA):
        row = Row(case, variant.label, "SW1 to ancestral limit")
        for count in (c for c in variant.counts if c <= 100):
            out = run_analytic(learned if variant is DDPM else model, variant.sampler, variant.schedule(COSINE, count), start, seed=100 + count)
            row.put(count, sliced_w1(out, target, directions) / LEVEL)
        rows.append(row)
    log(f"{case}: {time.perf_counter() - t0:.0f} s")
    return rows
