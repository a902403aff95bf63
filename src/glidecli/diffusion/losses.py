"""The training loss of GLIDE's diffusion models: the "hybrid" objective of Nichol & Dhariwal
(improved DDPM), as GLIDE used it.

    loss = MSE(eps_pred, eps) + VB * num_timesteps / 1000

Networks that predict v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 instead (config
`prediction = "v"`) take MSE(v_pred, v), which is the eps MSE weighted by 1 + 1/SNR. Where
the picture is almost pure noise, an eps network must reproduce its input to within
sqrt(SNR) to say anything about x0 (the colours the prompt asks for), and the eps loss
barely notices when it does not; a v network outputs about -x0 there directly.

Optionally the MSE is weighted per timestep by min(SNR, gamma) / SNR ("Min-SNR-gamma", Hang
et al. 2023; min(SNR, gamma) / (SNR + 1) for v): low-noise steps, where eps is hard to see
but matters little to the picture, count less, so the noisy steps that decide layout and
colour get relatively more of the gradient (the same idea as P2 weighting, Choi et al. 2022).

The VB term is the variational bound at the sampled timestep, in bits per dimension: the KL
between the true posterior q(x_{t-1} | x_t, x_0) and the model's Gaussian, or at t = 0 the
negative log-likelihood of x_0 under a Gaussian discretized to 8-bit levels. It trains only
the variance: the predicted eps enters it with its gradient stopped, so the mean is trained
by the MSE alone. The variance is the model's learned interpolation v in [-1, 1] between the
clipped log posterior variance (v = -1) and log beta (v = 1), as in `schedule.py`.

Every function works per example on batched tensors (timesteps may differ along the batch);
the schedule's float64 tables are gathered per example and used in float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .schedule import Schedule

_LOG2 = math.log(2.0)


class LossTerms(NamedTuple):
    loss: Tensor  # [B] what is minimized: weighted mse + vb
    mse: Tensor  # [B] unweighted (of eps, or of v for v-predicting networks)
    vb: Tensor  # [B] already rescaled by num_timesteps / 1000


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 - 1.0 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def standard_normal_cdf(x: Tensor) -> Tensor:
    """The tanh approximation of the standard normal CDF used by the reference."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) for x on the 256 levels of [-1, 1] (bin width 2/255) under N(mean, exp(log_scale)^2);
    the first and last bins extend to -inf and +inf. Elementwise, in nats."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    upper = standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    lower = standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    tiny = 1e-12
    log_below_upper = torch.log(upper.clamp(min=tiny))
    log_above_lower = torch.log((1.0 - lower).clamp(min=tiny))
    log_in_bin = torch.log((upper - lower).clamp(min=tiny))
    return torch.where(x < -0.999, log_below_upper, torch.where(x > 0.999, log_above_lower, log_in_bin))


def _gather(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """table[t] per example, float32 on like's device, shaped [B, 1, 1, 1]. Tables (and
    anything derived from them) stay float64 until gathered, as in the reference."""
    values = table.to(like.device)[t.to(like.device)].float()
    return values.view(-1, *([1] * (like.dim() - 1)))


def _mean_per_example(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


def q_sample(schedule: Schedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, with t per example."""
    alpha_bar = schedule.alphas_cumprod
    return _gather(alpha_bar.sqrt(), t, x0) * x0 + _gather((1.0 - alpha_bar).sqrt(), t, x0) * noise


def min_snr_weight(schedule: Schedule, t: Tensor, gamma: float, prediction: str = "eps") -> Tensor:
    """min(SNR_t, gamma) / SNR_t per example [B], SNR = alpha_bar / (1 - alpha_bar); for v
    prediction min(SNR_t, gamma) / (SNR_t + 1), the same weight on the eps MSE."""
    if not gamma > 0:
        raise ValueError(f"min-SNR gamma must be positive, got {gamma}")
    snr = schedule.alphas_cumprod / (1.0 - schedule.alphas_cumprod)
    return (snr.clamp(max=gamma) / (snr + 1.0 if prediction == "v" else snr)).to(t.device)[t].float()


def hybrid_loss(
    schedule: Schedule,
    model_output: Tensor,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    noise: Tensor,
    *,
    min_snr_gamma: float = 0.0,
    prediction: str = "eps",
) -> LossTerms:
    """The hybrid loss per example for a model output [B, 2C, H, W] = [eps (or v) | variance
    interpolation] at timesteps t [B] (indices into `schedule`, which must not be respaced).
    A positive ``min_snr_gamma`` weights the MSE by :func:`min_snr_weight`; 0 is GLIDE's plain loss."""
    if len(schedule) != schedule.num_train_timesteps:
        raise ValueError("training needs the full (not respaced) diffusion schedule")
    output = model_output.float()
    channels = x0.shape[1]
    if output.shape[1] != 2 * channels:
        raise ValueError(f"expected {2 * channels} output channels (eps and variance), got {output.shape[1]}")
    predicted, var_interp = output[:, :channels], output[:, channels:]
    alpha_bar = schedule.alphas_cumprod
    mse = _mean_per_example((_target(schedule, x0, t, noise, prediction) - predicted) ** 2)
    if prediction == "v":  # the eps that v means, for the variational bound below
        eps = _gather((1.0 - alpha_bar).sqrt(), t, x0) * x_t + _gather(alpha_bar.sqrt(), t, x0) * predicted
    else:
        eps = predicted

    # The VB term sees the mean with its gradient stopped: it trains only the variance.
    eps_frozen = eps.detach()
    x0_pred = _gather((1.0 / alpha_bar).sqrt(), t, x0) * x_t - _gather((1.0 / alpha_bar - 1.0).sqrt(), t, x0) * eps_frozen
    # (x0_pred is not clipped to [-1, 1] in training.)
    coef1 = _gather(schedule.posterior_mean_coef1, t, x0)
    coef2 = _gather(schedule.posterior_mean_coef2, t, x0)
    model_mean = coef1 * x0_pred + coef2 * x_t
    min_log = _gather(schedule.posterior_log_variance_clipped, t, x0)
    max_log = _gather(schedule.betas.log(), t, x0)
    frac = (var_interp + 1.0) / 2.0
    model_log_var = frac * max_log + (1.0 - frac) * min_log

    true_mean = coef1 * x0 + coef2 * x_t
    kl = _mean_per_example(normal_kl(true_mean, min_log, model_mean, model_log_var)) / _LOG2
    nll = -_mean_per_example(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var)) / _LOG2
    vb = torch.where(t.to(kl.device) == 0, nll, kl) * (schedule.num_train_timesteps / 1000.0)
    weighted = mse * min_snr_weight(schedule, t, min_snr_gamma, prediction).to(mse.device) if min_snr_gamma else mse
    return LossTerms(weighted + vb, mse, vb)


def _target(schedule: Schedule, x0: Tensor, t: Tensor, noise: Tensor, prediction: str) -> Tensor:
    """What the network learns to predict: the noise, or v = sqrt(abar) noise - sqrt(1 - abar) x0."""
    if prediction != "v":
        return noise
    alpha_bar = schedule.alphas_cumprod
    return _gather(alpha_bar.sqrt(), t, x0) * noise - _gather((1.0 - alpha_bar).sqrt(), t, x0) * x0


def fixed_variance_loss(
    schedule: Schedule,
    model_output: Tensor,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    *,
    min_snr_gamma: float = 0.0,
    prediction: str = "eps",
) -> LossTerms:
    """The loss of a network with a fixed variance (output [B, C, H, W], eps or v alone), as
    Karlo's super-resolution U-Nets are trained (improved DDPM's "simple" MSE objective, no
    variational bound): the MSE of the prediction per example, optionally Min-SNR weighted.
    The returned vb is zero."""
    if len(schedule) != schedule.num_train_timesteps:
        raise ValueError("training needs the full (not respaced) diffusion schedule")
    predicted = model_output.float()
    if predicted.shape[1] != x0.shape[1]:
        raise ValueError(f"expected {x0.shape[1]} output channels (a fixed variance), got {predicted.shape[1]}")
    mse = _mean_per_example((_target(schedule, x0, t, noise, prediction) - predicted) ** 2)
    weighted = mse * min_snr_weight(schedule, t, min_snr_gamma, prediction).to(mse.device) if min_snr_gamma else mse
    return LossTerms(weighted, mse, torch.zeros_like(mse))
