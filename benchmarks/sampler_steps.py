#!/usr/bin/env python
"""How many DPM-Solver++(2M) / SDE-DPM-Solver++(2M) / PLMS steps match GLIDE's samplers?

Evidence for choosing sampler defaults. GLIDE's defaults: the base model samples ancestrally
(ddpm, learned variance) with 100 steps on the cosine schedule, with classifier-free
guidance 3; the upsampler samples with DDIM on the "fast27" timesteps of the linear
schedule, unguided. The script prints ONE markdown table. Every number is in 8-bit levels:
1 level = 1/127.5 on the [-1, 1] image scale, so "below 1" means "below one PNG level".
All sampling goes through glidecli's own code: denoiser_from_model (x0 clipped to [-1, 1]
every step, as the reference does), glidecli.diffusion.samplers.sample, timesteps_for, and
guided_model_fn for the networks; the result is clamped to [-1, 1] as sample_stage does.

analytic  Data with an exactly known noise predictor: a mixture of two Gaussians in 8
          dimensions (modes at +-0.4; the ODE is curved where the mode is decided).
          Unconditional data: 50/50, std 0.2; conditional data: 80/20, std 0.15. Guided
          rows use eps = eps_u + s (eps_c - eps_u) with s = 3. "ddpm (learned var.)" is
          what a network with GLIDE's learned variance converges to: per dimension the
          optimal Var[x_{t-1} | x_t] = posterior variance + coef1^2 Var[x0 | x_t] of the
          1000-step process, as GLIDE's interpolation value v (from the conditional half),
          used on the respaced schedule as GLIDE does. "posterior var." drops it. All
          samplers start from the same N(0, I) noise (scrambled Sobol points, so the
          deterministic samplers' outputs carry little sampling noise), float64.
          Measure: sliced Wasserstein-1, SW1 (the mean over 64 fixed random directions of
          the 1-D W1 distance between the sorted projections of two N-point sets).
            target: unguided, the data (N quasi-random exact samples). Guided, the guided
              process is not the score of any distribution and its ancestral and ODE limits
              differ; the target is then the ancestral limit (ddpm on all 1000 steps,
              learned variance), i.e. what GLIDE's default converges to.
            (in parentheses, ODE samplers only): SW1 to their own limit, DPM-Solver++(2M)
              on every timestep from the same start noise and top timestep: the pure
              discretisation error, free of sampling noise.
          "noise floor": SW1 between an independent N-sample of the target and the target
          (how far a perfect sampler's N points land, by chance). "ODE limit": SW1 from
          the ODE solution (all steps, from t=999) to the target.
          A last analytic case repeats the ODE samplers with guidance s = 10 (own limit
          only): high-order multistep methods are known to turn unstable as guidance grows.
model     A tiny random-weight GLIDE U-Net (the tests' tiny configuration; weights
          std 0.1), guided like the base model (s = 3) or conditioned on a low-resolution
          shapes picture like the upsampler. Random weights alone predict eps unrelated to
          x_t: x0 = (x - sigma eps) / alpha saturates, and so do the images (54% of the
          pixels at +-1 with weights of std 0.1, 93% with 0.02): agreement would mostly
          measure the clipping. The network therefore supplies a nonlinear, text-
          and image-dependent prior mean m(x_t) = m0 + c net(x_t): x0_hat = w m + gain x_t,
          the exact denoiser of a Gaussian prior N(m, p^2), with w = sigma^2 / (alpha^2
          p^2 + sigma^2) (p = 0.5, m0 = 0 for the base; p = 0.2, m0 = the upsampled
          low-resolution image for the upsampler; c sets the network term's std to 0.25).
          The network sees a fixed timestep (500): random weights are rough functions of
          t (one step changes the output by ~30% of its spread), trained ones are not.
          Measure: RMS over pixels and seeds from each sampler's images to the converged
          ODE solution from the same start noise and top timestep (DPM-Solver++(2M) on
          every timestep; DDIM on every timestep is checked against it below the table).
trained   Only when a trained model exists (DIR/weights.toml, as `glide train` writes it;
          DIR is models/ in the repository unless --models says otherwise): the same ODE
          agreement through the real network (no residual trick, guidance 3 for a base
          model), and the per-channel mean and std of the images over all seeds compared
          with ddpm-100 from the same start noise (max over channels of |d mean| +
          |d std|); "floor" is ddpm-100 on other seeds.

colours   Only for a base model trained on `glide dataset shapes` (models/ by default): the
          fixed EVAL_SCENES prompts ("a red circle on a blue background", ...) times
          --colour-seeds seeds, guidance 3, rendered exactly as `glide generate` renders them;
          the count of pictures whose object and background colours are both the prompted
          ones (glidecli.train.dataset.scene_colours). A measure of the pictures themselves.

Solvers run on the time-uniform grid unless the row says "log-SNR grid" (timesteps nearest
to evenly spaced lambda between the solver's top timestep and t=0, glide's default for
DPM-Solver++). Rows marked "what-if" are not reachable through `glide`: DPM-Solver++ on
GLIDE's fast27 timesteps (glide accepts fast27 for plms only).

Below the table, per case: the smallest step count whose error is at most the default's,
and the smallest that lands within one 8-bit level.

    python benchmarks/sampler_steps.py                    # everything: ~12 min on one core
    python benchmarks/sampler_steps.py --quick            # fewer points and seeds (~2.5 min)
    python benchmarks/sampler_steps.py --only analytic    # or: model, trained, colours
    python benchmarks/sampler_steps.py --models runs/shapes   # a `glide train --out` folder
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from glidecli.diffusion.samplers import denoiser_from_model, needs_noise, sample, timesteps_for
from glidecli.diffusion.schedule import Schedule, betas_for, space_timesteps

LEVEL = 1 / 127.5  # one 8-bit level on the [-1, 1] scale
COSINE, LINEAR = "squaredcos_cap_v2", "linear"
COLUMNS = (10, 15, 20, 25, 27, 50, 100, 250)
GUIDANCE = 3.0  # GLIDE's default classifier-free guidance scale for the base model
STRESS_GUIDANCE = 10.0  # a strong scale some users pick, for the stability check
DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- what is compared ----------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One table row's sampler: a glidecli sampler on a timestep grid."""

    label: str
    sampler: str
    counts: tuple[int, ...]
    grid: str = "time"  # "time": uniform in t; "lambda": uniform in log-SNR; "fast27"; ddpm/ddim: their respacing
    learned_variance: bool = True  # ddpm only: False gives the posterior variance
    linear_only: bool = False

    def timesteps(self, schedule_name: str, count: int) -> list[int]:
        if self.grid == "fast27":  # (glide accepts this for plms only)
            return space_timesteps(1000, "fast27")
        if self.grid == "lambda":
            return timesteps_for(self.sampler, schedule_name, f"logsnr{count}")
        if self.sampler in ("plms", "dpmpp_2m", "dpmpp_2m_sde"):
            return timesteps_for(self.sampler, schedule_name, f"time{count}")
        # 27 DDIM steps on the linear schedule are GLIDE's upsampler preset.
        spec = "fast27" if (self.sampler == "ddim" and count == 27 and schedule_name == LINEAR) else str(count)
        return timesteps_for(self.sampler, schedule_name, spec)

    def schedule(self, schedule_name: str, count: int) -> Schedule:
        return Schedule.from_timesteps(schedule_name, self.timesteps(schedule_name, count))


DDPM = Variant("ddpm (learned var.)", "ddpm", (25, 50, 100, 250))
DDPM_PV = Variant("ddpm (posterior var.)", "ddpm", (25, 50, 100, 250), learned_variance=False)
DDIM = Variant("ddim", "ddim", (10, 15, 20, 27, 50))
PLMS = Variant("plms", "plms", (10, 15, 20, 25, 50))
DPMPP = Variant("dpmpp_2m", "dpmpp_2m", (10, 15, 20, 25, 50))
DPMPP_LAMBDA = Variant("dpmpp_2m, log-SNR grid", "dpmpp_2m", (10, 15, 20, 25, 50), grid="lambda")
PLMS_LAMBDA = Variant("plms, log-SNR grid", "plms", (10, 15, 20, 25, 50), grid="lambda")
SDE = Variant("dpmpp_2m_sde", "dpmpp_2m_sde", (10, 15, 20, 25, 50))
SDE_LAMBDA = Variant("dpmpp_2m_sde, log-SNR grid", "dpmpp_2m_sde", (10, 15, 20, 25, 50), grid="lambda")
STOCHASTIC = (DDPM, DDPM_PV, SDE, SDE_LAMBDA)
PLMS_FAST27 = Variant("plms, fast27 timesteps", "plms", (27,), grid="fast27", linear_only=True)
DPMPP_FAST27 = Variant("dpmpp_2m, fast27 timesteps (what-if)", "dpmpp_2m", (27,), grid="fast27", linear_only=True)
ODE_VARIANTS = (DDIM, PLMS, PLMS_LAMBDA, DPMPP, DPMPP_LAMBDA, PLMS_FAST27, DPMPP_FAST27)


def limit_schedule(top: int, schedule_name: str) -> Schedule:
    """Every timestep from 0 to `top`: the process without respacing."""
    return Schedule.from_timesteps(schedule_name, list(range(top + 1)))


@dataclass
class Row:
    case: str
    label: str
    measure: str
    cells: dict[int, str] = field(default_factory=dict)
    value: dict[int, float] = field(default_factory=dict)  # to the target / the ODE solution
    own: dict[int, float] = field(default_factory=dict)  # analytic ODE rows: to their own limit

    def put(self, count: int, value: float, own: float | None = None) -> None:
        self.value[count] = value
        if own is None:
            self.cells[count] = f"{value:.2f}"
        else:
            self.own[count] = own
            self.cells[count] = f"{value:.2f} ({own:.2f})"


# --- analytic data: Gaussian mixtures with an exact posterior mean --------------------------


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
    noise = lambda like: torch.randn(like.shape, generator=generator, dtype=like.dtype)  # noqa: E731
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


def analytic_rows(n: int) -> tuple[list[Row], list[str]]:
    dims = 8
    uncond, cond = analytic_data(dims)
    directions = torch.randn(dims, 64, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    start = quasi_normal(n, dims, seed=1)
    rows: list[Row] = []
    notes: list[str] = []
    cases = [
        ("analytic, cosine (base), guided s=3", COSINE, GUIDANCE),
        ("analytic, cosine (base), unguided", COSINE, 1.0),
        ("analytic, linear (upsampler), unguided", LINEAR, 1.0),
    ]
    for case, schedule_name, scale in cases:
        t0 = time.perf_counter()
        models = {
            True: analytic_model(schedule_name, uncond, cond, scale, learned_variance=True),
            False: analytic_model(schedule_name, uncond, cond, scale, learned_variance=False),
        }
        if scale == 1.0:
            target = cond.sample(n, seed=2, quasi=True).clamp(-1, 1)
            independent = cond.sample(n, seed=3).clamp(-1, 1)
            target_name = "data"
        else:
            full = limit_schedule(999, schedule_name)
            target = run_analytic(models[True], "ddpm", full, quasi_normal(n, dims, seed=4), seed=14)
            independent = run_analytic(models[True], "ddpm", full, quasi_normal(n, dims, seed=5), seed=15)
            target_name = "ancestral limit (ddpm on all 1000 steps, learned variance)"

        def distance(x: Tensor, y: Tensor = target) -> float:
            return sliced_w1(x, y, directions) / LEVEL

        limits: dict[int, Tensor] = {}

        def ode_limit(top: int) -> Tensor:
            if top not in limits:
                limits[top] = run_analytic(models[False], "dpmpp_2m", limit_schedule(top, schedule_name), start, seed=0)
            return limits[top]

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
        notes.append(f"{case}: target = {target_name}, N = {n}")
        if scale != 1.0:
            notes.append(
                f"{case}: major mode (weight, mean, std) of the ancestral limit {mode_stats(target, cond)}, "
                f"of the ODE limit {mode_stats(ode_limit(999), cond)}; conditional data "
                f"{mode_stats(cond.sample(n, seed=2, quasi=True), cond)}"
            )
        log(f"{case}: {time.perf_counter() - t0:.0f} s")

    # Stronger guidance than GLIDE's default (users may ask for it): multistep methods of
    # high order are known to become unstable as guidance grows. Discretisation error only.
    t0 = time.perf_counter()
    case = f"analytic, cosine (base), guided s={STRESS_GUIDANCE:g}"
    model = analytic_model(COSINE, uncond, cond, STRESS_GUIDANCE, learned_variance=False)
    limits = {}
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
    # The stochastic samplers against the ancestral limit at this guidance.
    learned = analytic_model(COSINE, uncond, cond, STRESS_GUIDANCE, learned_variance=True)
    target = run_analytic(learned, "ddpm", limit_schedule(999, COSINE), quasi_normal(n, dims, seed=4), seed=14)
    for variant in (DDPM, SDE_LAMBDA):
        row = Row(case, variant.label, "SW1 to ancestral limit")
        for count in (c for c in variant.counts if c <= 100):
            out = run_analytic(learned if variant is DDPM else model, variant.sampler, variant.schedule(COSINE, count), start, seed=100 + count)
            row.put(count, sliced_w1(out, target, directions) / LEVEL)
        rows.append(row)
    log(f"{case}: {time.perf_counter() - t0:.0f} s")
    return rows, notes


# --- networks: ODE agreement with the converged solution ------------------------------------


def tiny_config(kind: str):
    """The tests' tiny U-Net settings (tests/tiny.py), repeated so as not to import tests."""
    from glidecli.nets.config import UNetConfig

    upsample = kind == "upsample"
    return UNetConfig(
        image_size=32 if upsample else 16,
        model_channels=32,
        num_res_blocks=1,
        channel_mult=(1, 1, 2) if upsample else (1, 2),
        attention_resolutions=(8,),
        num_head_channels=16,
        dropout=0.0,
        text_ctx=8,
        xf_width=32,
        xf_layers=2,
        xf_heads=2,
        n_vocab=64,
        noise_schedule=LINEAR if upsample else COSINE,
        super_res=upsample,
    )


def shapes(count: int, size: int, seed: int) -> tuple[Tensor, list[str]]:
    """Pictures of the shapes data set in [-1, 1] and their captions."""
    from glidecli.train.dataset import shape_scene

    rng = random.Random(seed)
    scenes = [shape_scene(rng, size) for _ in range(count)]
    pixels = [torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32)) for picture, _ in scenes]
    images = torch.stack([(p.permute(2, 0, 1) / 127.5 - 1).contiguous() for p in pixels])
    return images, [caption for _, caption in scenes]


def residual_model_fn(model_fn, schedule_name: str, prior_mean: Tensor, prior_std: float, scale: float):
    """x0_hat = w (prior_mean + scale * net) + gain * x_t, the exact denoiser of the prior
    N(prior_mean + scale * net, prior_std^2), w = sigma^2 / (alpha^2 prior_std^2 + sigma^2):
    the network matters at high and medium noise and fades at low noise, where any good
    denoiser tends to x_t / alpha (a term that does not fade makes the ODE stiff near t=0).
    Returns eps for x0_hat and the network's variance channels. Linear in the network's
    eps channels, so guiding the network first equals guiding the two residual models."""
    ab = np.cumprod(1.0 - betas_for(schedule_name))

    def fn(x: Tensor, t: Tensor) -> Tensor:
        out = model_fn(x, t)
        channels = x.shape[1]
        a, s = math.sqrt(ab[int(t[0])]), math.sqrt(1 - ab[int(t[0])])
        gain = a * prior_std**2 / (a**2 * prior_std**2 + s**2)
        x0 = (1 - a * gain) * (prior_mean + scale * out[:, :channels]) + gain * x
        return torch.cat([(x - a * x0) / s, out[:, channels:]], dim=1)

    return fn


def run_network(model_fn, sampler: str, schedule: Schedule, start: Tensor, noise=None) -> Tensor:
    """What sample_stage does for text-to-image sampling (x0 clipped, result clamped)."""
    denoise = denoiser_from_model(model_fn, schedule)
    return sample(sampler, denoise, start.clone(), schedule, noise=noise).clamp(-1.0, 1.0)


def rms_levels(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt()) / LEVEL


def ode_agreement_rows(case: str, model_fn, schedule_name: str, start: Tensor, variants, check_ddim: bool = True):
    """RMS (8-bit levels) from each sampler's images to the converged ODE solution from the
    same start noise and top timestep; returns rows, notes and the images."""
    references: dict[int, Tensor] = {}
    outputs: dict[tuple[str, int], Tensor] = {}

    def reference(top: int) -> Tensor:
        if top not in references:
            t0 = time.perf_counter()
            references[top] = run_network(model_fn, "dpmpp_2m", limit_schedule(top, schedule_name), start)
            log(f"  {case}: ODE reference from t={top} ({top + 1} steps): {time.perf_counter() - t0:.0f} s")
        return references[top]

    rows = []
    for variant in variants:
        if variant.linear_only and schedule_name != LINEAR:
            continue
        row = Row(case, variant.label, "RMS to converged ODE")
        for count in variant.counts:
            schedule = variant.schedule(schedule_name, count)
            out = run_network(model_fn, variant.sampler, schedule, start)
            outputs[(variant.label, count)] = out
            row.put(count, rms_levels(out, reference(schedule.timestep(-1))))
        rows.append(row)
    notes = []
    top = max(references)
    saturated = float((references[top].abs() > 0.999).float().mean())
    if check_ddim:
        ddim_full = run_network(model_fn, "ddim", limit_schedule(top, schedule_name), start)
        notes.append(
            f"{case}: DDIM on all {top + 1} steps lies {rms_levels(ddim_full, references[top]):.3f} levels RMS "
            f"from the reference (DPM-Solver++(2M) on the same steps); {saturated:.1%} of the reference pixels at +-1"
        )
    else:
        notes.append(f"{case}: {saturated:.1%} of the reference pixels at +-1")
    return rows, notes, outputs


def random_model_rows(seeds: int) -> tuple[list[Row], list[str]]:
    from glidecli.diffusion.guidance import guided_model_fn
    from glidecli.diffusion.noise import ImageNoise
    from glidecli.nets.checkpoint import build_network, random_init_

    rows: list[Row] = []
    notes: list[str] = []
    for kind in ("base", "upsample"):
        t0 = time.perf_counter()
        cfg = tiny_config(kind)
        net = random_init_(build_network(kind, cfg), seed=0, std=0.1).eval()
        generator = torch.Generator().manual_seed(7)
        tokens = torch.randint(1, cfg.n_vocab, (seeds, cfg.text_ctx), generator=generator)
        other_tokens = torch.randint(1, cfg.n_vocab, (seeds, cfg.text_ctx), generator=generator)
        mask = torch.ones(seeds, cfg.text_ctx, dtype=torch.bool)
        size = cfg.image_size
        start = ImageNoise(list(range(seeds))).initial((3, size, size))
        with torch.no_grad():
            text = net.encode_text(tokens, mask)
            if kind == "base":
                fn = guided_model_fn(net, text, uncond_text=net.encode_text(other_tokens, mask), scale=GUIDANCE)
                prior_mean, prior_std = torch.zeros(1, 3, 1, 1), 0.5
                guidance = f"guided s={GUIDANCE:g}"
            else:  # GLIDE samples its upsampler without guidance
                low_res, _ = shapes(seeds, size // 4, seed=11)
                fn = guided_model_fn(net, text, low_res=low_res)
                prior_mean = torch.nn.functional.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
                prior_std = 0.2
                guidance = "unguided"
            probe = fn(start, torch.full((seeds,), 500, dtype=torch.long))[:, :3]
        fixed_t = lambda x, t, fn=fn: fn(x, torch.full_like(t, 500))  # noqa: E731
        model_fn = residual_model_fn(fixed_t, cfg.noise_schedule, prior_mean, prior_std, 0.25 / float(probe.std()))
        case = f"tiny random U-Net {kind} ({'cosine' if kind == 'base' else 'linear'}), {guidance}"
        new_rows, new_notes, _ = ode_agreement_rows(case, model_fn, cfg.noise_schedule, start, ODE_VARIANTS)
        rows += new_rows
        notes += new_notes
        log(f"{case}: {time.perf_counter() - t0:.0f} s")
    return rows, notes


# --- a trained model, when there is one ------------------------------------------------------


def trained_rows(models_dir: Path, seeds: int, budget_s: float) -> tuple[list[Row], list[str]]:
    manifest_path = models_dir / "weights.toml"
    if not manifest_path.is_file() or not any(models_dir.glob("*.safetensors")):
        return [], [f"trained: no trained model in {models_dir} (looked for weights.toml and *.safetensors); skipped"]
    from glidecli.diffusion.guidance import guided_model_fn
    from glidecli.diffusion.noise import ImageNoise
    from glidecli.files.manifest import load_manifest
    from glidecli.render.pipeline import encode_prompts
    from glidecli.render.session import Session

    manifest = load_manifest(manifest_path)
    session = Session(manifest, device="cpu", dtype=torch.float32, offline=True)
    rows: list[Row] = []
    notes: list[str] = []
    for entry in manifest.models.values():
        if entry.kind not in ("base", "upsample"):
            continue
        t0 = time.perf_counter()
        net = session.unet(entry.name, entry.kind)
        cfg = net.config
        tokenizer = session.tokenizer(cfg.text_ctx, entry.name)
        base = entry.kind == "base"
        size = cfg.image_size

        def setup(count: int):
            low_res, captions = shapes(count, max(1, size // 4), seed=21)
            conditioning = encode_prompts(net, tokenizer, captions, guided=base)
            return guided_model_fn(
                net, conditioning.text, uncond_text=conditioning.uncond, scale=GUIDANCE if base else 1.0,
                low_res=None if base else low_res,
            )

        # Plan: one ODE reference (two for an upsampler: ddim's fast27 starts at t=997),
        # the solver rows, and ddpm-100 twice; scale the seeds down to the time budget.
        variants = (PLMS, DPMPP, DPMPP_LAMBDA) if base else (DDIM, PLMS, DPMPP, DPMPP_LAMBDA, PLMS_FAST27, DPMPP_FAST27)
        calls = (1 if base else 2) * 1000 + sum(sum(v.counts) for v in variants) + 200
        probe_fn = setup(1)
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            probe_fn(x, torch.tensor([500]))
            tick = time.perf_counter()
            probe_fn(x, torch.tensor([500]))
            per_image_call = time.perf_counter() - tick
        fit = int(budget_s / max(per_image_call * calls, 1e-9))
        count = min(seeds, fit)
        case = f"trained {entry.name} ({entry.kind}, {size}px, {cfg.noise_schedule}), {'guided s=3' if base else 'unguided'}"
        if count < 1:
            notes.append(
                f"{case}: skipped; it needs about {per_image_call * calls:.0f} s per seed and the budget is "
                f"{budget_s:.0f} s (--trained-budget)"
            )
            continue
        model_fn = setup(count)
        seeds_a, seeds_b = list(range(count)), list(range(1000, 1000 + count))
        start = ImageNoise(seeds_a).initial((3, size, size))
        new_rows, new_notes, outputs = ode_agreement_rows(case, model_fn, cfg.noise_schedule, start, variants, check_ddim=False)
        rows += new_rows
        notes += new_notes
        ddpm = Schedule.from_timesteps(cfg.noise_schedule, timesteps_for("ddpm", cfg.noise_schedule, "100"))
        noise_a, noise_b = ImageNoise(seeds_a), ImageNoise(seeds_b)
        ddpm_a = run_network(model_fn, "ddpm", ddpm, noise_a.initial((3, size, size)), noise=noise_a)
        ddpm_b = run_network(model_fn, "ddpm", ddpm, noise_b.initial((3, size, size)), noise=noise_b)

        def stats_distance(images: Tensor, reference: Tensor = ddpm_a) -> float:
            mean_gap = (images.mean((0, 2, 3)) - reference.mean((0, 2, 3))).abs()
            std_gap = (images.std((0, 2, 3)) - reference.std((0, 2, 3))).abs()
            return float((mean_gap + std_gap).max()) / LEVEL

        for variant in (PLMS, DPMPP):
            row = Row(case, variant.label, "channel mean+std vs ddpm-100")
            for steps in variant.counts:
                row.put(steps, stats_distance(outputs[(variant.label, steps)]))
            rows.append(row)
        floor = Row(case, "ddpm-100, other seeds", "channel mean+std vs ddpm-100")
        floor.put(100, stats_distance(ddpm_b))
        rows.append(floor)
        notes.append(f"{case}: {count} seeds (one prompt each); {time.perf_counter() - t0:.0f} s")
        log(notes[-1])
    return rows, notes


def colour_rows(models_dir: Path, seeds: int) -> tuple[list[Row], list[str]]:
    """For a base model trained on `glide dataset shapes`: how many pictures of the fixed
    EVAL_SCENES prompts (guidance 3) show both prompted colours, per sampler and step count,
    rendered exactly as `glide generate` renders them. A real measure of picture quality."""
    manifest_path = models_dir / "weights.toml"
    if not manifest_path.is_file():
        return [], [f"colours: no trained model in {models_dir}; skipped"]
    from glidecli.files.manifest import load_manifest
    from glidecli.render.engine import Job, Session, Stage, render_generate
    from glidecli.render.pipeline import SamplerChoice
    from glidecli.train.dataset import EVAL_SCENES, colour_hits, shape_caption

    manifest = load_manifest(manifest_path)
    session = Session(manifest, device="cpu", dtype="fp32", offline=True)
    scenes = [scene for scene in EVAL_SCENES for _ in range(seeds)]
    jobs = [Job(shape_caption(*scene), seed % seeds, index) for index, (seed, scene) in enumerate(enumerate(scenes))]
    plan = [
        ("ddpm (learned var.)", "ddpm", (25, 50, 100)),
        ("dpmpp_2m_sde, log-SNR grid", "dpmpp_2m_sde", (10, 15, 20, 25, 50)),
        ("dpmpp_2m, log-SNR grid", "dpmpp_2m", (15, 25, 50)),
        ("plms", "plms", (15, 25, 50)),
        ("ddim", "ddim", (25, 50)),
    ]
    rows, notes = [], []
    for entry in manifest.models.values():
        if entry.kind != "base":
            continue
        t0 = time.perf_counter()
        case = f"trained {entry.name}: shapes prompts, guided s=3"
        for label, sampler, counts in plan:
            row = Row(case, label, f"pictures with both colours right, of {len(jobs)}")
            for count in counts:
                stage = Stage(entry.name, SamplerChoice(sampler, str(count)), scale=GUIDANCE)
                done = render_generate(session, jobs, stage, None, batch_size=len(jobs))
                pictures = [np.asarray(item.image.convert("RGB"), dtype=np.float64) for item in done]
                both, _ = colour_hits(pictures, scenes)
                row.put(count, float(both))
                row.cells[count] = str(both)
            rows.append(row)
        notes.append(f"{case}: {len(EVAL_SCENES)} prompts x {seeds} seeds; {time.perf_counter() - t0:.0f} s")
        log(notes[-1])
    return rows, notes


# --- report ----------------------------------------------------------------------------------


def markdown_table(rows: list[Row]) -> list[str]:
    header = ["case", "sampler", "measure (8-bit levels)", *[str(c) for c in COLUMNS], "value"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        single = row.cells.get(0, "")
        cells = [row.cells.get(c, "") for c in COLUMNS]
        lines.append("| " + " | ".join([row.case, row.label, row.measure, *cells, single]) + " |")
    return lines


def smallest(row: Row, limit: float, own: bool = False) -> str:
    values = row.own if own else row.value
    counts = sorted(c for c, v in values.items() if v <= limit)
    # The first count from which every larger count also stays within the limit.
    for c in counts:
        if all(values[k] <= limit for k in values if k >= c):
            return str(c)
    return f">{max(values)}" if values else "-"


def fewest_at_least(row: Row, score: float) -> str:
    """The smallest count from which every larger count scores at least `score`."""
    counts = [c for c in sorted(row.value) if all(row.value[k] >= score for k in row.value if k >= c)]
    return str(counts[0]) if counts else "-"


def summary(rows: list[Row]) -> list[str]:
    by_case: dict[str, dict[tuple[str, str], Row]] = {}
    for row in rows:
        by_case.setdefault(row.case, {})[(row.label, row.measure.split()[0])] = row
    solvers = (PLMS.label, DPMPP.label, DPMPP_LAMBDA.label)
    lines = []
    for case, table in by_case.items():
        upsampler = "linear" in case
        if case.startswith("analytic"):
            rows_of = {label: row for (label, _), row in table.items()}
            if case.endswith(f"s={STRESS_GUIDANCE:g}"):
                within = ", ".join(f"{s} {smallest(rows_of[s], 1.0)}" for s in solvers)
                ancestral = rows_of[DDPM.label].value[100]
                lines.append(
                    f"- {case}: within 1 level of own limit: {within}. ddpm-100 is {ancestral:.2f} from the ancestral "
                    f"limit; {SDE_LAMBDA.label} within 1 level of it from {smallest(rows_of[SDE_LAMBDA.label], 1.0)} steps."
                )
                continue
            if upsampler:
                default = rows_of[DDIM.label].own[27]
                what = f"ddim-fast27 is {default:.2f} from its own limit"
                candidates = solvers + (PLMS_FAST27.label, DPMPP_FAST27.label)
            else:
                floor = rows_of["noise floor"].value[0]
                what = f"ddpm-100 is {rows_of[DDPM.label].value[100]:.2f} from the target (noise floor {floor:.2f})"
                # Below the floor, a difference cannot be told from sampling noise at this N.
                default = max(rows_of[DDPM.label].value[100], floor)
                candidates = solvers
            matches = ", ".join(f"{s} {smallest(rows_of[s], default, own=True)}" for s in candidates if s in rows_of)
            if not upsampler:  # stochastic solvers aim at the target itself, not at an ODE limit
                matches += ", " + ", ".join(f"{v.label} {smallest(rows_of[v.label], default)} (to the target)" for v in (SDE, SDE_LAMBDA))
            within = ", ".join(f"{s} {smallest(rows_of[s], 1.0, own=True)}" for s in solvers)
            bound = "that" if upsampler else f"max(that, floor) = {default:.2f}"
            lines.append(f"- {case}: {what}. Own-limit error at most {bound}: {matches}. Within 1 level of own limit: {within}.")
            continue
        colours = {label: row for (label, kind), row in table.items() if kind == "pictures"}
        if colours:
            reference = colours[DDPM.label].value[100]
            total = int(next(iter(colours.values())).measure.rsplit(" ", 1)[1])
            error = math.sqrt(reference * (1 - reference / total))  # binomial standard error
            lines.append(
                f"- {case}: ddpm-100 gets {reference:.0f} of {total} pictures right (standard error {error:.1f}); "
                "fewest steps from which every count scores within one standard error of that or better: "
                + ", ".join(f"{label} {fewest_at_least(row, reference - error)}" for label, row in colours.items())
                + "."
            )
            continue
        ode = {label: row for (label, kind), row in table.items() if kind == "RMS"}
        text = f"- {case}: within 1 level RMS of the converged ODE: " + ", ".join(
            f"{s} {smallest(ode[s], 1.0)}" for s in solvers if s in ode
        )
        if upsampler and DDIM.label in ode:
            default = ode[DDIM.label].value[27]
            text += f"; as close as ddim-fast27 ({default:.2f}): " + ", ".join(
                f"{s} {smallest(ode[s], default)}" for s in solvers + (PLMS_FAST27.label, DPMPP_FAST27.label) if s in ode
            )
        stats = {label: row for (label, kind), row in table.items() if kind == "channel"}
        if stats:
            floor = stats["ddpm-100, other seeds"].value[100]
            text += f"; image statistics within ddpm-100's seed-to-seed floor ({floor:.2f}): " + ", ".join(
                f"{s} {smallest(stats[s], floor)}" for s in (PLMS.label, DPMPP.label) if s in stats
            )
        lines.append(text + ".")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evidence for sampler defaults: how many DPM-Solver++(2M) / PLMS steps match ddpm-100 "
        "(GLIDE base) and ddim-fast27 (GLIDE upsampler), on analytic data, a tiny random U-Net and, "
        "when present, a trained model. Prints one markdown table (8-bit levels).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--only", choices=("analytic", "model", "trained", "colours"), action="append", help="run only these parts (repeatable)")
    parser.add_argument("--colour-seeds", type=int, default=6, help="seeds per shapes prompt for the colour measure (default 6)")
    parser.add_argument("--samples", type=int, default=None, help="analytic points per sampler run (default 32768; --quick 16384)")
    parser.add_argument("--seeds", type=int, default=None, help="images per tiny-network case (default 2; --quick 1)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="folder of a trained model: weights.toml + .safetensors (default: %(default)s)")
    parser.add_argument("--trained-seeds", type=int, default=8, help="images per trained model, if the budget allows (default 8)")
    parser.add_argument("--trained-budget", type=float, default=120.0, help="seconds a trained model may take; fewer seeds otherwise (default 120)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steady on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="fewer analytic points and network seeds")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    parts = set(args.only or ("analytic", "model", "trained", "colours"))
    samples = args.samples or (16384 if args.quick else 32768)
    seeds = args.seeds or (1 if args.quick else 2)
    started = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    if "analytic" in parts:
        new_rows, new_notes = analytic_rows(samples)
        rows += new_rows
        notes += new_notes
    if "model" in parts:
        new_rows, new_notes = random_model_rows(seeds)
        rows += new_rows
        notes += new_notes
    if "trained" in parts:
        new_rows, new_notes = trained_rows(args.models, args.trained_seeds, args.trained_budget)
        rows += new_rows
        notes += new_notes
    if "colours" in parts:
        new_rows, new_notes = colour_rows(args.models, args.colour_seeds)
        rows += new_rows
        notes += new_notes

    print(
        f"Sampler step counts against GLIDE's defaults (torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.machine()}). Units: 8-bit levels (1/127.5). Column = steps (network calls). "
        f"ddim's 27 is fast27 on the linear schedule. Solvers without 'log-SNR grid' use the time-uniform grid."
    )
    print()
    print("\n".join(markdown_table(rows)))
    print()
    print("\n".join(summary(rows)))
    print()
    for note in notes:
        print(f"- {note}")
    print(f"- total time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
