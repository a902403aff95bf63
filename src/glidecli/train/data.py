"""The data side of `glide train` (loop.py): every batch is rebuilt from the data set
and (seed, step) alone, which is what makes a resumed run continue exactly.

Holds the derived random generators, the per-epoch data order, the random square crops
(and, for upsamplers, their bicubic 4x-smaller low-resolution versions), the caption
dropout, the random regions an inpainting model learns to fill, and the Batch that one
training step consumes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..nets.config import UNetConfig
from ..nets.tokenizer import GlideTokenizer
from .dataset import Dataset
from .settings import Hyper


def derived_generator(seed: int, stream: str, index: int) -> torch.Generator:
    """A CPU generator for one (seed, stream, index), independent of every other."""
    digest = hashlib.sha256(f"glidecli-train:{seed}:{stream}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


NOISIEST_FRACTION = 0.15  # of the timesteps, from the top: where colour and layout are decided


def noisy_start(diffusion_steps: int) -> int:
    """The first timestep of the noisiest NOISIEST_FRACTION of the process (850 of 1000).
    Images there are almost pure noise (SNR below ~0.05 on the cosine schedule), so the
    prompt alone must say what colours and layout to draw; with uniform timesteps that
    stretch gets 15% of the examples and, with the eps loss, little of the gradient."""
    return diffusion_steps - max(1, round(NOISIEST_FRACTION * diffusion_steps))


class DataOrder:
    """Example k of the run (k = step * batch + j) in a fresh permutation per epoch."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self._cache: dict[int, Tensor] = {}

    def __getitem__(self, k: int) -> int:
        epoch, position = divmod(k, self.size)
        if epoch not in self._cache:
            self._cache = {epoch: torch.randperm(self.size, generator=derived_generator(self.seed, "epoch", epoch))}
        return int(self._cache[epoch][position])


def step_examples(order: DataOrder, seed: int, batch_size: int, step: int, part: range | None = None) -> list[tuple[int, torch.Generator]]:
    """The examples of `step` (this rank's places `part` of the batch; None: all): each one's
    index in the data set and its own generator. Example j of step k is example
    k * batch_size + j of the run, and its generator is seeded by the seed and that number
    alone, so any split of the batch among processes draws exactly the whole batch's."""
    places = range(batch_size) if part is None else part
    examples = [step * batch_size + j for j in places]
    return [(order[k], derived_generator(seed, "example", k)) for k in examples]


def pil_to_tensor(image: Image.Image) -> Tensor:
    """An RGB picture as a [3, H, W] float tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1.0


def random_crop(image: Image.Image, size: int, crop_min: float, u: Tensor) -> Image.Image:
    """A square crop whose side is crop_min..1 of the short side, at a random place, resized
    to size x size (bicubic); `u` holds the three uniform draws that decide it."""
    width, height = image.size
    short = min(width, height)
    side = max(1, min(short, round(short * (crop_min + (1.0 - crop_min) * float(u[0])))))
    left = min(width - side, int(float(u[1]) * (width - side + 1)))
    top = min(height - side, int(float(u[2]) * (height - side + 1)))
    crop = image.crop((left, top, left + side, top + side))
    return crop if crop.size == (size, size) else crop.resize((size, size), Image.Resampling.BICUBIC)


# How an inpainting model's training examples are masked (GLIDE: "random regions of training
# examples are erased"): erase a rectangle (fill a hole), keep a rectangle and erase the rest
# (redraw the surroundings), or erase everything (plain text-to-image), in these shares.
ERASE_SHARES = {"hole": 0.6, "surroundings": 0.25, "everything": 0.15}
RECTANGLE_SIDES = (0.3, 0.7)  # of the picture's side


def inpaint_keep_mask(size: int, draws: Tensor) -> Tensor:
    """A [1, S, S] keep mask (1 = known, 0 = to fill) from five uniform draws: the first picks
    the kind of erasure (ERASE_SHARES), the others the rectangle's width, height and place."""
    low, high = RECTANGLE_SIDES
    width = round(size * (low + (high - low) * float(draws[1])))
    height = round(size * (low + (high - low) * float(draws[2])))
    left = min(size - width, int(float(draws[3]) * (size - width + 1)))
    top = min(size - height, int(float(draws[4]) * (size - height + 1)))
    inside = torch.zeros(1, size, size)
    inside[:, top : top + height, left : left + width] = 1.0
    choice = float(draws[0])
    if choice < ERASE_SHARES["hole"]:
        return 1.0 - inside
    if choice < ERASE_SHARES["hole"] + ERASE_SHARES["surroundings"]:
        return inside
    return torch.zeros(1, size, size)


@dataclass
class Batch:
    x0: Tensor  # [B, 3, S, S] in [-1, 1]
    tokens: Tensor  # [B, ctx]
    mask: Tensor  # [B, ctx]
    t: Tensor  # [B]
    noise: Tensor  # [B, 3, S, S]
    low_res: Tensor | None  # [B, 3, S/4, S/4] for upsamplers
    keep_mask: Tensor | None  # [B, 1, S, S] for inpainting models: 1 = known, 0 = to fill
    indices: list[int]
    dropped: Tensor  # [B] bool


class BatchMaker:
    """Builds the batch of any step from the data set and (seed, step) alone."""

    def __init__(self, dataset: Dataset, tokenizer: GlideTokenizer, cfg: UNetConfig, hyper: Hyper):
        self.dataset, self.cfg, self.hyper = dataset, cfg, hyper
        self.order = DataOrder(len(dataset), hyper.seed)
        captions = [example.caption for example in dataset.examples]
        encoded = tokenizer.batch(captions)
        self.tokens, self.mask = encoded.tokens, encoded.mask
        self.truncated = sum(encoded.truncated)
        empty = tokenizer.batch([""])
        self.empty_tokens, self.empty_mask = empty.tokens[0], empty.mask[0]

    def __call__(self, step: int, part: range | None = None) -> Batch:
        """The batch of `step`, or the places `part` of it (one rank's share; step_examples)."""
        cfg, hyper = self.cfg, self.hyper
        size = cfg.image_size
        examples = step_examples(self.order, hyper.seed, hyper.batch_size, step, part)
        indices = [index for index, _ in examples]
        draws = [self._draws(generator) for _, generator in examples]
        crops = torch.stack([d[0] for d in draws])
        dropped = torch.stack([d[1] for d in draws])
        t = torch.stack([d[2] for d in draws])
        noise = torch.stack([d[3] for d in draws])
        keep_mask = torch.stack([inpaint_keep_mask(size, d[4]) for d in draws if d[4] is not None]) if cfg.inpaint else None
        images, lows = [], []
        for j, index in enumerate(indices):
            picture = random_crop(self.dataset.image(index), size, hyper.crop_min, crops[j])
            images.append(pil_to_tensor(picture))
            if cfg.super_res:
                low = max(1, size // 4)
                lows.append(pil_to_tensor(picture.resize((low, low), Image.Resampling.BICUBIC)))
        tokens = self.tokens[indices].clone()
        mask = self.mask[indices].clone()
        tokens[dropped] = self.empty_tokens
        mask[dropped] = self.empty_mask
        return Batch(
            x0=torch.stack(images),
            tokens=tokens,
            mask=mask,
            t=t,
            noise=noise,
            low_res=torch.stack(lows) if lows else None,
            keep_mask=keep_mask,
            indices=indices,
            dropped=dropped,
        )

    def _draws(self, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """An example's random choices: crop, caption dropout, timestep, noise and
        (inpainting) the erased region, drawn in that order from its own generator."""
        cfg, hyper = self.cfg, self.hyper
        crop = torch.rand(3, generator=generator)
        dropped = torch.rand((), generator=generator) < hyper.caption_dropout
        t = torch.randint(0, cfg.diffusion_steps, (), generator=generator)
        noise = torch.randn(cfg.image_channels, cfg.image_size, cfg.image_size, generator=generator)
        if hyper.noisy_share:  # (drawn after the rest, so that runs without it keep their random streams)
            noisiest = torch.randint(noisy_start(cfg.diffusion_steps), cfg.diffusion_steps, (), generator=generator)
            t = torch.where(torch.rand((), generator=generator) < hyper.noisy_share, noisiest, t)
        erased = torch.rand(5, generator=generator) if cfg.inpaint else None
        return crop, dropped, t, noise, erased
