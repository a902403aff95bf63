"""AUTOMATIC1111's names for what glide has: its samplers. Shared by the server's A1111 API
and `--from` on a picture A1111 made."""

from __future__ import annotations

from ..diffusion.vocabulary import SamplerName
from .values import RequestError

# A1111's sampler names -> the nearest glidecli sampler. Ancestral and SDE samplers inject
# fresh noise every step, as SDE-DPM-Solver++ does; first-order ODE ones are DDIM; the
# higher-order ODE ones DPM-Solver++(2M); linear multistep is PLMS. Schedule suffixes
# (" Karras", " Exponential") are dropped: glide samples its models' own schedules.
A1111_SAMPLERS = {
    "euler a": "dpmpp_2m_sde", "dpm2 a": "dpmpp_2m_sde", "dpm++ 2s a": "dpmpp_2m_sde", "dpm++ sde": "dpmpp_2m_sde",
    "dpm++ 2m sde": "dpmpp_2m_sde", "dpm++ 2m sde heun": "dpmpp_2m_sde", "dpm++ 3m sde": "dpmpp_2m_sde", "restart": "dpmpp_2m_sde",
    "euler": "ddim", "ddim": "ddim", "ddim cfg++": "ddim",
    "heun": "dpmpp_2m", "dpm2": "dpmpp_2m", "dpm++ 2m": "dpmpp_2m", "unipc": "dpmpp_2m", "deis": "dpmpp_2m", "dpm++ 2s": "dpmpp_2m",
    "lms": "plms", "plms": "plms",
    "ddpm": "ddpm",
    **{name.value: name.value for name in SamplerName},
}
SCHEDULE_SUFFIXES = (" karras", " exponential", " polyexponential", " sgm uniform")


def glide_sampler(name: str) -> str:
    """glide's sampler for an A1111 sampler name (or one of glide's own); RequestError for
    a name neither knows."""
    key = name.strip().lower()
    for suffix in SCHEDULE_SUFFIXES:
        key = key.removesuffix(suffix)
    if key not in A1111_SAMPLERS:
        raise RequestError(f"sampler {name!r} has no counterpart in glide (docs/serving.md lists the A1111 names it maps)")
    return A1111_SAMPLERS[key]
