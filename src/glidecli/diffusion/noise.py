"""Reproducible per-image Gaussian noise.

Every image of a batch owns a CPU ``torch.Generator`` seeded with its own seed, and all
of its noise (the starting x_T and the fresh noise of every ancestral step) is drawn from
that generator alone, on the CPU, in float32. Hence image ``i`` made with seed ``S + i``
is bit-identical whatever the batch size or its position in the batch, and a GPU run
starts from exactly the same numbers as a CPU run. Drawing on the CPU and copying costs a
little per step, which is negligible next to a U-Net evaluation.

The first draw of a generator seeded with ``S`` equals ``torch.manual_seed(S)`` followed
by ``torch.randn(shape)``, so a single image can also be reproduced without this class.

A seed walk (latent walks' rotated noise) gives an image an angle theta: its every draw is
cos(theta) * (seed S's draw) + sin(theta) * (seed S + 1's draw), still standard normal.
Angle 0 is seed S's own noise, bit for bit; a full turn comes back to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .vocabulary import MAX_SEED


def check_seed(seed: object) -> int:
    """Return ``seed`` as an int, or raise ValueError unless it is an integer in 0..2**32-1."""
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    if isinstance(seed, int):
        value = seed
    elif hasattr(seed, "__index__"):  # numpy integers and the like, but not floats or strings
        value = seed.__index__()
    else:
        raise ValueError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED}, got {value}")
    return int(value)


class ImageNoise:
    """Standard normal noise for a batch, one independent generator per image.

    ``ImageNoise([s0, s1, ...])`` covers a batch whose image ``k`` uses seed ``sk``.
    Call :meth:`initial` once for the starting noise, then use the object itself as the
    samplers' ``NoiseFn``: ``noise(like)`` returns noise shaped and typed like ``like``.
    """

    def __init__(self, seeds: Sequence[int], angles: Sequence[float | None] | None = None):
        checked = [check_seed(seed) for seed in seeds]
        if not checked:
            raise ValueError("at least one seed is needed")
        angles = list(angles) if angles is not None else [None] * len(checked)
        if len(angles) != len(checked):
            raise ValueError(f"{len(angles)} walk angles for {len(checked)} seeds")
        self.seeds: tuple[int, ...] = tuple(checked)
        self._generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in checked]
        # A walking image's second generator (seed + 1) and the weights of its two draws.
        self._walks = [
            None if angle is None else (torch.Generator(device="cpu").manual_seed(check_seed(seed + 1)), math.cos(angle), math.sin(angle))
            for seed, angle in zip(checked, angles)
        ]

    @classmethod
    def from_base_seed(cls, seed: int, count: int) -> ImageNoise:
        """Seeds ``seed, seed + 1, ..., seed + count - 1`` (image i uses seed + i)."""
        seed = check_seed(seed)
        if count < 1:
            raise ValueError(f"count must be positive, got {count}")
        check_seed(seed + count - 1)
        return cls(range(seed, seed + count))

    @classmethod
    def combine(cls, sources: Sequence[tuple[ImageNoise, int]]) -> ImageNoise:
        """A batch whose image k continues image ``sources[k][1]`` of ``sources[k][0]``: the
        generators are shared, not copied, so drawing from the result advances them (best of
        N: the winners go on to the upsampler with their own noise, as they would alone)."""
        if not sources:
            raise ValueError("at least one source is needed")
        combined = cls.__new__(cls)
        combined.seeds = tuple(noise.seeds[row] for noise, row in sources)
        combined._generators = [noise._generators[row] for noise, row in sources]
        combined._walks = [noise._walks[row] for noise, row in sources]
        return combined

    def __len__(self) -> int:
        return len(self.seeds)

    def _draw(self, shape_per_image: Sequence[int]) -> Tensor:
        shape = tuple(int(n) for n in shape_per_image)
        per_image = [torch.randn(shape, generator=g, dtype=torch.float32) for g in self._generators]
        for k, walk in enumerate(self._walks):
            if walk is not None:
                partner, cos, sin = walk
                per_image[k] = per_image[k] * cos + torch.randn(shape, generator=partner, dtype=torch.float32) * sin
        return torch.stack(per_image)

    def initial(
        self,
        shape_per_image: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Starting noise of shape ``[len(seeds), *shape_per_image]``."""
        return _to_device(self._draw(shape_per_image), device, dtype)

    def __call__(self, like: Tensor) -> Tensor:
        """Fresh noise with ``like``'s shape, device and dtype (its batch must match)."""
        if like.shape[0] != len(self.seeds):
            raise ValueError(
                f"noise for a batch of {like.shape[0]} requested from {len(self.seeds)} seeds"
            )
        return _to_device(self._draw(like.shape[1:]), like.device, like.dtype)


def _to_device(noise: Tensor, device: torch.device | str | None, dtype: torch.dtype) -> Tensor:
    """A copy from pageable memory would wait for the GPU to finish all its queued work,
    every sampling step; from pinned memory the copy is queued like a kernel and the CPU
    goes on (the caching host allocator keeps the buffer until the copy is done)."""
    if device is not None and torch.device(device).type == "cuda":
        return noise.pin_memory().to(device=device, dtype=dtype, non_blocking=True)
    return noise.to(device=device, dtype=dtype)
