"""The words of sampling, each declared once and free of torch, so that the request layer,
the server and the page read them without loading the networks."""

from __future__ import annotations

from enum import StrEnum


class SamplerName(StrEnum):
    """A sampler the `--sampler` options take (diffusion/samplers.py runs them)."""

    DDPM = "ddpm"
    DDIM = "ddim"
    PLMS = "plms"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_2M_SDE = "dpmpp_2m_sde"


SAMPLER_NAMES = tuple(SamplerName)
# One line on each, for /samplers and the page.
SAMPLER_NOTES = {
    SamplerName.DDPM: "ancestral DDPM (the reference's base sampler); sections, ddimN, fast27",
    SamplerName.DDIM: "DDIM, eta 0 deterministic (the reference's upsampler sampler); sections, ddimN, fast27",
    SamplerName.PLMS: "pseudo linear multistep (PNDM)",
    SamplerName.DPMPP_2M: "DPM-Solver++(2M), deterministic",
    SamplerName.DPMPP_2M_SDE: "SDE-DPM-Solver++(2M), stochastic (generate's default)",
}
# The multistep ODE solvers: by default they get samplers.solver_timesteps, while DDPM and
# DDIM keep the reference's respacing rules (and so its results).
SOLVERS = frozenset({SamplerName.PLMS, SamplerName.DPMPP_2M, SamplerName.DPMPP_2M_SDE})

# GLIDE's upsampler respacing preset ("10,10,3,2,2" sections: 27 steps), the only fastN.
FAST27 = "fast27"

MAX_SEED = 2**32 - 1  # seeds are 32-bit: every picture's own generator is seeded with one
