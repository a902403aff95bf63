"""Samplers for GLIDE: small pure functions over a denoiser callable.

A *denoiser* maps ``(x_t, i)`` - the current image and the respaced index ``i`` into a
:class:`~glidecli.schedule.Schedule` - to a :class:`Prediction` (x0, eps and, for models
that learn their variance, the raw interpolation channels). :func:`denoiser_from_model`
turns a GLIDE network (which sees the *original* timestep) into one; guidance, inpainting
paste and thresholding all live in the denoiser, so every sampler gets them for free.

Every sampler starts from ``x`` (noise at the schedule's top timestep, or for img2img a
picture diffused to it: a schedule whose grid stops part-way, see partial.py), walks
``i = N-1 ... 0`` with one denoiser call per step, and its last step lands on clean data
(alpha_bar_prev of index 0 is 1). ``callback`` is called after every step. The samplers
run under ``torch.no_grad()``; a ``mean_shift`` that needs gradients (CLIP guidance) must
open ``torch.enable_grad()`` itself. A KeyboardInterrupt simply propagates: no state is
kept anywhere but in local variables.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .schedule import Schedule, coefficient
from .vocabulary import SamplerName


class Prediction(NamedTuple):
    x0: Tensor
    eps: Tensor
    # Raw variance interpolation v in [-1, 1] when the model learns its variance;
    # None means "use the posterior variance".
    var_interp: Tensor | None


class StepInfo(NamedTuple):
    index: int  # type: ignore[assignment]  # steps completed so far, 1..total (the field hides tuple.index)
    total: int
    x: Tensor  # the image after this step
    x0: Tensor  # the clean-image estimate this step used


Denoiser = Callable[[Tensor, int], Prediction]
ModelFn = Callable[[Tensor, Tensor], Tensor]
NoiseFn = Callable[[Tensor], Tensor]
Callback = Callable[[StepInfo], None]
X0Transform = Callable[[Tensor, int], Tensor]
MeanShift = Callable[[Tensor, int], Tensor]


def denoiser_from_model(
    model_fn: ModelFn,
    schedule: Schedule,
    *,
    x0_transform: X0Transform | None = None,
    clip: bool = True,
    prediction: str = "eps",
) -> Denoiser:
    """Wrap an eps-predicting (or, with ``prediction="v"``, v-predicting, or with
    ``prediction="x0"``, x0-predicting) network as a :data:`Denoiser`.

    ``model_fn(x, t)`` receives the original timesteps ``t`` (LongTensor[B]) and returns
    C channels (eps) or 2C channels (eps, then the variance interpolation). The x0 built
    from them goes through ``x0_transform(x0, i)`` (inpainting paste, dynamic thresholding)
    and then ``clamp(-1, 1)`` when ``clip``; eps is then re-derived from the final x0 so
    that every sampler sees a consistent (x0, eps) pair, as the reference's DDIM does.
    """

    def denoise(x: Tensor, i: int) -> Prediction:
        channels = x.shape[1]
        output = model_fn(x, schedule.model_timesteps(i, x.shape[0], x.device))
        if output.shape[1] == 2 * channels:
            predicted, var_interp = output[:, :channels], output[:, channels:]
        elif output.shape[1] == channels:
            predicted, var_interp = output, None
        else:
            raise ValueError(
                f"model returned {output.shape[1]} channels for a {channels}-channel image; "
                f"expected {channels} (eps or v) or {2 * channels} (and the variance)"
            )
        if prediction == "v":
            x0, eps = schedule.x0_from_v(x, i, predicted), schedule.eps_from_v(x, i, predicted)
        elif prediction == "x0":  # unCLIP's prior predicts the clean embedding itself
            x0, eps = predicted, schedule.predict_eps(x, i, predicted)
        else:
            eps = predicted
            x0 = schedule.predict_x0(x, i, eps)
        if x0_transform is None and not clip:
            # Nothing changed x0: the network's own prediction is exact, no round trip needed.
            return Prediction(x0, eps, var_interp)
        if x0_transform is not None:
            x0 = x0_transform(x0, i)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        return Prediction(x0, schedule.predict_eps(x, i, x0), var_interp)

    return denoise


def dynamic_threshold(x0: Tensor, percentile: float = 0.995) -> Tensor:
    """Imagen's dynamic thresholding of an x0 estimate, per sample.

    s is the ``percentile`` quantile of |x0| over each sample; when s > 1 the sample is
    clipped to [-s, s] and divided by s, so saturated pixels are pulled back into [-1, 1]
    without flattening everything at the bounds. When s <= 1 the sample is unchanged.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")
    magnitudes = x0.detach().flatten(1).abs().float()
    s = torch.quantile(magnitudes, percentile, dim=1).clamp(min=1.0)
    s = s.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def _notify(callback: Callback | None, done: int, total: int, x: Tensor, x0: Tensor) -> None:
    if callback is not None:
        callback(StepInfo(done, total, x, x0))


@torch.no_grad()
def sample_ddpm(
    denoise: Denoiser,
    x: Tensor,
    schedule: Schedule,
    noise: NoiseFn,
    *,
    mean_shift: MeanShift | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling (Ho et al.) with the model's learned variance.

    ``mean_shift(x, i)`` returns a gradient of log p(y | x_t); the mean moves by
    variance * gradient (Sohl-Dickstein et al.'s conditioning, the reference's
    ``condition_mean``, used for CLIP guidance).
    """
    total = len(schedule)
    for i in reversed(range(total)):
        pred = denoise(x, i)
        mean = schedule.posterior_mean(pred.x0, x, i)
        if pred.var_interp is not None:
            log_variance = schedule.learned_log_variance(pred.var_interp, i)
        else:
            log_variance = schedule.posterior_log_variance(i, x)
        if mean_shift is not None:
            gradient = mean_shift(x, i)
            mean = mean + torch.exp(log_variance) * gradient.to(mean.dtype)
        if i > 0:
            x = mean + torch.exp(0.5 * log_variance) * noise(x)
        else:
            x = mean  # the last step adds no noise
        _notify(callback, total - i, total, x, pred.x0)
    return x


@torch.no_grad()
def sample_ddim(
    denoise: Denoiser,
    x: Tensor,
    schedule: Schedule,
    noise: NoiseFn | None = None,
    *,
    eta: float = 0.0,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM (Song et al.): deterministic for ``eta = 0``; ``eta = 1`` matches DDPM's
    posterior variance. ``noise`` is required only when ``eta > 0``."""
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    if eta > 0 and noise is None:
        raise ValueError("DDIM with eta > 0 needs a noise function")
    total = len(schedule)
    for i in reversed(range(total)):
        pred = denoise(x, i)
        # Computed from alpha_bar rounded to the coefficient dtype, in that dtype, like the
        # reference: in float32 (1 - alpha_bar_prev) cancels near t = 0, and matching the
        # reference's rounding keeps results equal to it to float32 precision.
        ab = coefficient(schedule.alpha_bar(i), x)
        ab_prev = coefficient(schedule.alpha_bar_prev(i), x)
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
        # Clamp at 0: for eta > 1 the direction term would otherwise be imaginary.
        direction = torch.sqrt((1 - ab_prev - sigma**2).clamp(min=0.0))
        x = pred.x0 * torch.sqrt(ab_prev) + direction * pred.eps
        if i > 0 and eta > 0 and noise is not None:  # noise is there when eta > 0 (checked above)
            x = x + sigma * noise(x)
        _notify(callback, total - i, total, x, pred.x0)
    return x


# Adams-Bashforth coefficients for eps histories (newest first), orders 1 to 4.
_ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


@torch.no_grad()
def sample_plms(
    denoise: Denoiser,
    x: Tensor,
    schedule: Schedule,
    *,
    callback: Callback | None = None,
) -> Tensor:
    """Pseudo linear multistep (PLMS, Liu et al. 2022).

    Combines the last four eps predictions with 4th-order Adams-Bashforth weights and
    takes a deterministic DDIM step with the combination. The first three steps use
    orders 1-3 (lower-order warm-up) instead of the paper's Runge-Kutta start, keeping
    exactly one network call per step.
    """
    total = len(schedule)
    history: list[Tensor] = []  # newest first
    for i in reversed(range(total)):
        pred = denoise(x, i)
        history.insert(0, pred.eps)
        del history[4:]
        weights = _ADAMS_BASHFORTH[len(history) - 1]
        eps = history[0] * weights[0]
        for weight, older in zip(weights[1:], history[1:]):
            eps = eps + older * weight
        x0 = schedule.predict_x0(x, i, eps) if len(history) > 1 else pred.x0
        ab_prev = schedule.alpha_bar_prev(i)
        x = coefficient(math.sqrt(ab_prev), x) * x0 + coefficient(math.sqrt(1 - ab_prev), x) * eps
        _notify(callback, total - i, total, x, x0)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser,
    x: Tensor,
    schedule: Schedule,
    noise: NoiseFn | None = None,
    *,
    lower_order_final: bool = True,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in data prediction.

    Steps are taken in log-SNR lambda = log(alpha / sigma), alpha^2 = alpha_bar at the
    schedule's timesteps. With h the lambda step and r the ratio of the previous step to
    this one, x0 is extrapolated linearly in lambda, D = x0 + (x0 - x0_prev) / (2 r), and
    x_next = (sigma_next / sigma) x + alpha_next (1 - e^-h) D.

    With ``noise``, the stochastic form (SDE-DPM-Solver++(2M), midpoint): x_next =
    (sigma_next / sigma) e^-h x + alpha_next (1 - e^-2h) D + sigma_next sqrt(1 - e^-2h) z.
    It solves the reverse SDE, so as steps grow it tends to ancestral (DDPM) sampling
    rather than to the ODE's sharper, less varied guided distribution.

    First-order steps (D = x0, i.e. DDIM):
    - the first step, which has no history;
    - the final step, from the lowest timestep to clean data (sigma = 0, h infinite): it
      returns that step's x0; a second-order term there is undefined (r = 0);
    - with ``lower_order_final`` (default), also the step *into* the lowest timestep,
      whatever the step count. On a time-uniform grid that ends at t = 0 this step is
      long in lambda (cosine, 20 steps: 2.4 -> 5.05, r ~ 0.24) and extrapolating x0
      across it overshoots; in the Gaussian tests it made 2M worse than DDIM at 15-30
      steps, while with it 2M beats DDIM at every count tried.
    """
    total = len(schedule)
    previous_x0: Tensor | None = None
    previous_h = 0.0
    for i in reversed(range(total)):
        pred = denoise(x, i)
        if i == 0:
            x = pred.x0
        else:
            ab, ab_prev = schedule.alpha_bar(i), schedule.alpha_bar_prev(i)
            lambda_s = 0.5 * (math.log(ab) - math.log1p(-ab))
            lambda_t = 0.5 * (math.log(ab_prev) - math.log1p(-ab_prev))
            h = lambda_t - lambda_s
            if previous_x0 is None or (lower_order_final and i == 1):
                data = pred.x0
            else:
                half_inv_r = 0.5 * h / previous_h
                data = (1 + half_inv_r) * pred.x0 - half_inv_r * previous_x0
            x_weight, data_weight, noise_std = _dpmpp_weights(ab, ab_prev, h, stochastic=noise is not None)
            x = coefficient(x_weight, x) * x + coefficient(data_weight, x) * data
            if noise is not None:
                x = x + coefficient(noise_std, x) * noise(x)
            previous_h = h
        previous_x0 = pred.x0
        _notify(callback, total - i, total, x, pred.x0)
    return x


def _dpmpp_weights(ab: float, ab_prev: float, h: float, stochastic: bool) -> tuple[float, float, float]:
    """DPM-Solver++'s weights of x and of D for one step from alpha_bar `ab` to `ab_prev`, a
    lambda step `h`, and the fresh noise's std in the stochastic form (0 in the ODE's)."""
    sigma_ratio = math.sqrt((1 - ab_prev) / (1 - ab))
    if not stochastic:
        return sigma_ratio, -math.sqrt(ab_prev) * math.expm1(-h), 0.0  # alpha_t (1 - e^-h)
    noise_std = math.sqrt(1 - ab_prev) * math.sqrt(-math.expm1(-2 * h))
    return sigma_ratio * math.exp(-h), -math.sqrt(ab_prev) * math.expm1(-2 * h), noise_std


SAMPLERS: dict[SamplerName, Callable[..., Tensor]] = {
    SamplerName.DDPM: sample_ddpm,
    SamplerName.DDIM: sample_ddim,
    SamplerName.PLMS: sample_plms,
    SamplerName.DPMPP_2M: sample_dpmpp_2m,
    SamplerName.DPMPP_2M_SDE: sample_dpmpp_2m,  # with a noise function: the stochastic form
}


def needs_noise(sampler: str, eta: float = 0.0) -> bool:
    """Whether ``sampler`` draws fresh noise at each step (DDIM only when eta > 0)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known samplers: {', '.join(SAMPLERS)}")
    return sampler in (SamplerName.DDPM, SamplerName.DPMPP_2M_SDE) or (sampler == SamplerName.DDIM and eta > 0)


def sample(
    sampler: str,
    denoise: Denoiser,
    x: Tensor,
    schedule: Schedule,
    *,
    noise: NoiseFn | None = None,
    eta: float = 0.0,
    mean_shift: MeanShift | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Run the named sampler, rejecting options it does not support."""
    if needs_noise(sampler, eta) and noise is None:
        raise ValueError(f"sampler {sampler!r} needs a noise function")
    if mean_shift is not None and sampler != SamplerName.DDPM:
        raise ValueError("mean_shift (CLIP guidance) is only supported by the ddpm sampler")
    if eta and sampler != SamplerName.DDIM:
        raise ValueError("eta only applies to the ddim sampler")
    if sampler == SamplerName.DDPM and noise is not None:  # ddpm needs noise (checked above)
        return sample_ddpm(denoise, x, schedule, noise, mean_shift=mean_shift, callback=callback)
    if sampler == SamplerName.DDIM:
        return sample_ddim(denoise, x, schedule, noise, eta=eta, callback=callback)
    if sampler == SamplerName.DPMPP_2M_SDE:
        return sample_dpmpp_2m(denoise, x, schedule, noise, callback=callback)
    return SAMPLERS[SamplerName(sampler)](denoise, x, schedule, callback=callback)
