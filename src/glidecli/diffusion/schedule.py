"""Noise schedules and timestep respacing for GLIDE's Gaussian diffusion.

Everything here follows the semantics of openai/glide-text2im (``gaussian_diffusion.py``
and ``respace.py``): the same beta schedules, the same rules for picking a subset of the
1000 training timesteps, and the same respaced process built from the kept timesteps.
Tables are kept in float64; when they multiply an image they are rounded to float32 first
(float64 only for float64 images), as the reference does, so results agree with it to
float32 precision.

Indices: a :class:`Schedule` over N respaced steps is addressed by ``i`` in ``0..N-1``;
``schedule.timesteps[i]`` is the original timestep (0..999) that the network must see.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..nets.config import NOISE_SCHEDULES
from .vocabulary import FAST27

# Largest beta allowed by the cosine schedule; without the cap the last beta would be 1.
_COSINE_MAX_BETA = 0.999


def _cosine_alpha_bar(t: float) -> float:
    """Nichol & Dhariwal's cosine alpha_bar(t) for continuous t in [0, 1]."""
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def betas_for(name: str, steps: int = 1000) -> np.ndarray:
    """The float64 betas of the named schedule over ``steps`` diffusion steps."""
    if steps < 1:
        raise ValueError(f"the number of diffusion steps must be positive, got {steps}")
    if name == "linear":
        # Ho et al.'s 1e-4..0.02 over 1000 steps, rescaled so other lengths stay similar.
        scale = 1000.0 / steps
        return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        grid = np.arange(steps + 1, dtype=np.float64) / steps
        alpha_bar = [_cosine_alpha_bar(float(t)) for t in grid]
        betas = [
            min(1.0 - alpha_bar[k + 1] / alpha_bar[k], _COSINE_MAX_BETA) for k in range(steps)
        ]
        return np.asarray(betas, dtype=np.float64)
    raise ValueError(f"unknown noise schedule {name!r}; known schedules: {', '.join(NOISE_SCHEDULES)}")


_SPEC_HELP = (
    "expected a step count such as '100', comma-separated section counts such as "
    "'10,10,10', 'ddimN' (an integer stride giving exactly N steps) or 'fast27'"
)


def _spaced_sections(num_timesteps: int, counts: Sequence[int]) -> set[int]:
    """Split the timesteps into len(counts) near-equal sections and take counts[k]
    evenly spaced timesteps (first and last included) from section k."""
    n_sections = len(counts)
    base_size, remainder = divmod(num_timesteps, n_sections)
    chosen: set[int] = set()
    section_start = 0
    for k, count in enumerate(counts):
        # The first `remainder` sections take one extra timestep each.
        size = base_size + (1 if k < remainder else 0)
        if count > size:
            raise ValueError(
                f"cannot take {count} steps from a section of only {size} timesteps "
                f"(section {k + 1} of {n_sections} over {num_timesteps} timesteps)"
            )
        stride = 1.0 if count == 1 else (size - 1) / (count - 1)
        # Accumulate the fractional position by repeated addition and round each one
        # (Python's round-half-even): this reproduces the reference's lists exactly.
        position = 0.0
        for _ in range(count):
            chosen.add(section_start + round(position))
            position += stride
        section_start += size
    return chosen


def space_timesteps(num_timesteps: int, spec: str) -> list[int]:
    """The original timesteps kept by a respacing ``spec``, sorted ascending.

    ``spec`` may be ``""`` (all timesteps), a count (``"100"``), comma-separated section
    counts (``"10,10,3,2,2"``: equal-length sections, each strided to its count),
    ``"ddimN"`` (``range(0, num_timesteps, stride)`` for the integer stride that yields
    exactly N steps) or ``"fast27"`` (GLIDE's upsampler preset: ``"10,10,3,2,2"`` with
    the last timestep replaced by the third-to-last, to avoid the noisiest one).
    """
    if num_timesteps < 1:
        raise ValueError(f"the number of diffusion steps must be positive, got {num_timesteps}")
    text = spec.strip().replace(" ", "")
    if not text:
        return list(range(num_timesteps))

    if text.startswith("ddim"):
        count_text = text[len("ddim"):]
        if not count_text.isdigit() or int(count_text) < 1:
            raise ValueError(f"invalid respacing {spec!r}: 'ddim' must be followed by a positive integer")
        wanted = int(count_text)
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == wanted:
                return list(range(0, num_timesteps, stride))
        raise ValueError(
            f"invalid respacing {spec!r}: no integer stride gives exactly {wanted} steps "
            f"out of {num_timesteps}; use a plain count such as '{wanted}' instead"
        )

    if text.startswith("fast"):
        if text != FAST27:
            raise ValueError(
                f"unknown respacing {spec!r}: '{FAST27}' is the only fastN preset (GLIDE's "
                f"reference defines no other); use a plain count or sections instead"
            )
        chosen = _spaced_sections(num_timesteps, [10, 10, 3, 2, 2])
        # The very last timestep has an almost-zero alpha_bar; starting from it gives DDIM
        # artifacts, so the preset starts two steps lower.
        chosen.discard(num_timesteps - 1)
        chosen.add(num_timesteps - 3)
        return sorted(chosen)

    if not re.fullmatch(r"-?\d+(,-?\d+)*", text):
        raise ValueError(f"invalid respacing {spec!r}: {_SPEC_HELP}")
    counts = [int(part) for part in text.split(",")]
    if any(count < 1 for count in counts):
        raise ValueError(f"invalid respacing {spec!r}: every section count must be at least 1")
    if len(counts) > num_timesteps:
        raise ValueError(
            f"invalid respacing {spec!r}: {len(counts)} sections for only {num_timesteps} timesteps"
        )
    try:
        return sorted(_spaced_sections(num_timesteps, counts))
    except ValueError as error:
        raise ValueError(f"invalid respacing {spec!r}: {error}") from None


def coefficient(value: float, like: Tensor) -> Tensor:
    """A scalar (a table entry or a value derived from one) shaped to broadcast against
    ``like``, for multiplying images.

    float64 images get the float64 value; everything else gets it rounded to float32 (the
    reference's ``.float()``). The result has ``like``'s number of dimensions so that type
    promotion treats it as a tensor, e.g. half images are promoted to float32 as well.
    """
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.full((1,) * max(like.dim(), 1), value, dtype=dtype, device=like.device)


@dataclass(frozen=True, eq=False, repr=False)
class Schedule:
    """A (possibly respaced) diffusion process over N steps.

    All tables are float64 tensors of length N indexed by the respaced index ``i``;
    ``timesteps`` maps ``i`` to the original timestep the network was trained on.
    """

    name: str
    num_train_timesteps: int
    timesteps: Tensor  # int64, ascending original timesteps
    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor  # multiplies x0
    posterior_mean_coef2: Tensor  # multiplies x_t

    @classmethod
    def create(cls, name: str, steps: int = 1000, respacing: str = "") -> Schedule:
        """The named schedule over ``steps`` training steps, respaced by ``respacing``
        (see :func:`space_timesteps`; empty keeps every step)."""
        return cls.from_timesteps(name, space_timesteps(steps, respacing), steps)

    @classmethod
    def from_timesteps(cls, name: str, timesteps: Sequence[int], steps: int = 1000) -> Schedule:
        """The respaced process that visits exactly ``timesteps`` (original indices)."""
        kept = sorted(int(t) for t in timesteps)
        if not kept:
            raise ValueError("a schedule needs at least one timestep")
        if len(set(kept)) != len(kept):
            raise ValueError("timesteps must not repeat")
        if kept[0] < 0 or kept[-1] >= steps:
            raise ValueError(f"timesteps must lie in 0..{steps - 1}")

        full_alphas_cumprod = np.cumprod(1.0 - betas_for(name, steps))
        # The respaced beta at a kept timestep is whatever makes the product of the kept
        # alphas reproduce the original alpha_bar there.
        kept_alphas_cumprod = full_alphas_cumprod[kept]
        previous = np.concatenate([[1.0], kept_alphas_cumprod[:-1]])
        betas = 1.0 - kept_alphas_cumprod / previous

        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # The posterior variance is 0 at i = 0; its log is taken from i = 1 instead. With a
        # single step there is no i = 1, and the variance is never used (no noise is added
        # at the last step), so beta keeps the value finite.
        first = posterior_variance[1] if len(kept) > 1 else betas[0]
        posterior_log_variance_clipped = np.log(np.concatenate([[first], posterior_variance[1:]]))
        coef1 = betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        coef2 = (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod)

        def as_tensor(values: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))

        return cls(
            name=name,
            num_train_timesteps=steps,
            timesteps=torch.tensor(kept, dtype=torch.long),
            betas=as_tensor(betas),
            alphas_cumprod=as_tensor(alphas_cumprod),
            alphas_cumprod_prev=as_tensor(alphas_cumprod_prev),
            posterior_variance=as_tensor(posterior_variance),
            posterior_log_variance_clipped=as_tensor(posterior_log_variance_clipped),
            posterior_mean_coef1=as_tensor(coef1),
            posterior_mean_coef2=as_tensor(coef2),
        )

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def __repr__(self) -> str:
        return (
            f"Schedule({self.name!r}, {len(self)} of {self.num_train_timesteps} steps, "
            f"t={self.timestep(0)}..{self.timestep(-1)})"
        )

    def timestep(self, i: int) -> int:
        """The original timestep of respaced index ``i``."""
        return int(self.timesteps[i])

    def model_timesteps(self, i: int, batch: int, device: torch.device | str | None = None) -> Tensor:
        """``LongTensor[batch]`` of the original timestep of index ``i``, for the network."""
        return torch.full((batch,), self.timestep(i), dtype=torch.long, device=device)

    def alpha_bar(self, i: int) -> float:
        return float(self.alphas_cumprod[i])

    def alpha_bar_prev(self, i: int) -> float:
        return float(self.alphas_cumprod_prev[i])

    def log_snr(self, i: int) -> float:
        """lambda = log(alpha / sigma) at index ``i`` (alpha = sqrt(alpha_bar))."""
        ab = self.alpha_bar(i)
        return 0.5 * (math.log(ab) - math.log1p(-ab))

    # --- conversions between x_t, x0 and eps at one respaced index ---

    def predict_x0(self, x: Tensor, i: int, eps: Tensor) -> Tensor:
        ab = self.alpha_bar(i)
        return coefficient(math.sqrt(1.0 / ab), x) * x - coefficient(math.sqrt(1.0 / ab - 1.0), x) * eps

    def predict_eps(self, x: Tensor, i: int, x0: Tensor) -> Tensor:
        ab = self.alpha_bar(i)
        return (coefficient(math.sqrt(1.0 / ab), x) * x - x0) / coefficient(math.sqrt(1.0 / ab - 1.0), x)

    def x0_from_v(self, x: Tensor, i: int, v: Tensor) -> Tensor:
        """x0 = sqrt(alpha_bar) x - sqrt(1 - alpha_bar) v, for v-predicting networks."""
        ab = self.alpha_bar(i)
        return coefficient(math.sqrt(ab), x) * x - coefficient(math.sqrt(1.0 - ab), x) * v

    def eps_from_v(self, x: Tensor, i: int, v: Tensor) -> Tensor:
        """eps = sqrt(1 - alpha_bar) x + sqrt(alpha_bar) v."""
        ab = self.alpha_bar(i)
        return coefficient(math.sqrt(1.0 - ab), x) * x + coefficient(math.sqrt(ab), x) * v

    def posterior_mean(self, x0: Tensor, x: Tensor, i: int) -> Tensor:
        """Mean of q(x_{i-1} | x_i, x0)."""
        return (
            coefficient(float(self.posterior_mean_coef1[i]), x) * x0
            + coefficient(float(self.posterior_mean_coef2[i]), x) * x
        )

    def posterior_log_variance(self, i: int, like: Tensor) -> Tensor:
        """The clipped log posterior variance at ``i``, broadcastable against ``like``."""
        return coefficient(float(self.posterior_log_variance_clipped[i]), like)

    def learned_log_variance(self, var_interp: Tensor, i: int) -> Tensor:
        """Log variance from the model's interpolation channels v in [-1, 1]:
        v = -1 gives the posterior variance, v = 1 gives the (respaced) beta."""
        frac = (var_interp + 1) / 2
        max_log = coefficient(math.log(float(self.betas[i])), var_interp)
        min_log = coefficient(float(self.posterior_log_variance_clipped[i]), var_interp)
        return frac * max_log + (1 - frac) * min_log

    def q_sample(self, x0: Tensor, i: int, noise: Tensor) -> Tensor:
        """Diffuse clean data to index ``i``: sqrt(ab) x0 + sqrt(1 - ab) noise."""
        ab = self.alpha_bar(i)
        return coefficient(math.sqrt(ab), x0) * x0 + coefficient(math.sqrt(1.0 - ab), x0) * noise
