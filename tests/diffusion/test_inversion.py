"""DDIM inversion (diffusion/inversion.py) on a toy model whose exact noise predictor is known:
data x0 ~ N(mu, s^2 I), where E[eps | x_t] = sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2).
Inverting a picture then sampling DDIM (eta 0) from the result must give the picture back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glidecli.diffusion.inversion import invert_ddim
from glidecli.diffusion.samplers import StepInfo, denoiser_from_model, sample_ddim
from glidecli.diffusion.schedule import Schedule, betas_for

STD = 0.3
DIMS = 6


def toy_model(name: str, mean: float = 0.1):
    """The exact eps of N(mean, STD^2) data as a network of (x, original timestep)."""
    alphas_cumprod = np.cumprod(1.0 - betas_for(name))
    alpha = torch.from_numpy(np.sqrt(alphas_cumprod))
    sigma = torch.from_numpy(np.sqrt(1 - alphas_cumprod))
    variance = torch.from_numpy(alphas_cumprod * STD**2 + 1 - alphas_cumprod)

    def model(x, t):
        a, s, v = (table[t].view(-1, 1) for table in (alpha, sigma, variance))
        return s * (x - a * mean) / v

    return model


def pictures(batch: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (0.1 + STD * torch.randn(batch, DIMS, generator=generator, dtype=torch.float64)).clamp(-1, 1)


@pytest.mark.parametrize("name", ["squaredcos_cap_v2", "linear"])
def test_inverting_then_decoding_gives_the_picture_back(name):
    schedule = Schedule.create(name, 1000, "25")
    denoise = denoiser_from_model(toy_model(name), schedule)
    x0 = pictures()
    x_t = invert_ddim(denoise, x0, schedule, refine=20)
    again = sample_ddim(denoise, x_t, schedule)
    assert (again - x0).abs().max() < 1e-9
    # The noise found is the data's standard-normal draw seen from the top of the schedule:
    # not the picture itself.
    assert (x_t - x0).abs().mean() > 0.1


def test_the_usual_inversion_is_first_order_and_refining_removes_its_error():
    name = "squaredcos_cap_v2"
    x0 = pictures()
    errors = {}
    for steps in (10, 40, 160):
        schedule = Schedule.create(name, 1000, str(steps))
        denoise = denoiser_from_model(toy_model(name), schedule)
        errors[steps] = float((sample_ddim(denoise, invert_ddim(denoise, x0, schedule), schedule) - x0).abs().mean())
    assert errors[10] > errors[40] > errors[160] > 0
    assert errors[10] / errors[160] > 4  # error ~ step size: 16x fewer steps, several times the error
    schedule = Schedule.create(name, 1000, "10")
    denoise = denoiser_from_model(toy_model(name), schedule)
    refined = [float((sample_ddim(denoise, invert_ddim(denoise, x0, schedule, refine=k), schedule) - x0).abs().mean()) for k in (0, 1, 3)]
    assert refined[0] > refined[1] > refined[2]


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_a_guided_model_inverts_exactly_with_its_own_guidance(scale):
    """Classifier-free guidance mixes two predictions; inverting and decoding with the same
    mix (scale 1: the conditional model alone) gives the picture back."""
    name = "linear"
    schedule = Schedule.create(name, 1000, "20")
    conditional, unconditional = toy_model(name, 0.1), toy_model(name, -0.2)

    def guided(x, t):
        uncond = unconditional(x, t)
        return uncond + scale * (conditional(x, t) - uncond)

    denoise = denoiser_from_model(guided, schedule)
    x0 = pictures(16)
    x_t = invert_ddim(denoise, x0, schedule, refine=20)
    assert (sample_ddim(denoise, x_t, schedule) - x0).abs().max() < 1e-9


def test_steps_are_reported_and_bad_refinements_refused():
    schedule = Schedule.create("linear", 1000, "5")
    denoise = denoiser_from_model(toy_model("linear"), schedule)
    seen: list[StepInfo] = []
    invert_ddim(denoise, pictures(2), schedule, callback=seen.append)
    assert [(s.index, s.total) for s in seen] == [(k, 5) for k in range(1, 6)]
    with pytest.raises(ValueError, match="refine"):
        invert_ddim(denoise, pictures(2), schedule, refine=-1)
