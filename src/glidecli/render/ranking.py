"""Best of N: sample several candidates per picture and keep the one CLIP likes best.

Scores are CLIP scores, 100 x the cosine similarity of the picture's and the prompt's
embeddings, from one of:

- an open_clip model, `NAME:PRETRAINED` (open_clip's pretrained list, e.g. the default
  ViT-B-32:laion2b_s34b_b79k), `NAME:FILE` (a local checkpoint), or `hf-hub:ORG/REPO`;
  weights are fetched once by open_clip's hub download into glidecli's cache;
- a manifest's OpenCLIP entry by its name (the manifest's `rank` role: a CLIP of one's own,
  such as the shapes models' shapes-clip);
- `noised-clip`: GLIDE's own noised CLIP (the manifest's clip-image and clip-text models)
  at timestep 0, which needs no download beyond what CLIP guidance uses, but sees 64x64
  pictures and is a weaker judge.

Candidates' noise: candidate k of a picture whose seed is s uses seed
(s + k * CANDIDATE_STRIDE) mod 2^32, candidate 0 being s itself. Each candidate is exactly
the picture plain generation gives for its seed, so `--seed <candidate seed>` without
--best-of redraws the winner, and --best-of 1 is plain generation. Candidates are compared
at the base model's size; only the winner goes through the upsampler (the upsampler adds
detail, not content, and is the expensive stage). unCLIP (render/unclip.py) follows the same
rule: the candidates are the decoder's 64x64 pictures and only the winner is super-resolved.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diffusion.noise import MAX_SEED, ImageNoise
from ..files.fetch import cache_dir
from ..nets.clip_vit import encode_prompts, image_embedding
from ..nets.kinds import ModelKind
from .composition import parse_prompt, plain_text
from .defaults import MAX_BEST_OF, RANK_MODEL
from .pipeline import job_noise, quantize_to_8bit
from .prompt_syntax import spoken_text
from .session import RenderError, Session

# The golden-ratio increment (2^32 / phi): candidate seeds of nearby pictures never meet.
CANDIDATE_STRIDE = 0x9E3779B1
NOISED_CLIP = "noised-clip"


def candidate_seed(seed: int, candidate: int) -> int:
    """The seed of candidate `candidate` (0, 1, ...) of the picture whose seed is `seed`."""
    return (seed + candidate * CANDIDATE_STRIDE) % (MAX_SEED + 1)


class Ranker(Protocol):
    name: str

    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """CLIP scores [B] of pictures [B, 3, H, W] in [-1, 1], one prompt each."""
        ...


def _square(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Centre-crop to a square, then resize (bicubic, antialiased) to `size`, as CLIP's
    preprocessing does with a picture file."""
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    cropped = images[..., top : top + side, left : left + side].float()
    if (side, side) == tuple(size):
        return cropped
    return F.interpolate(cropped, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)


class OpenClipRanker:
    """An open_clip model as the judge."""

    def __init__(self, spec: str, device: torch.device, offline: bool | None = None):
        import open_clip

        self.name = spec
        self.device = device
        name, pretrained = _parse_spec(spec, open_clip)
        folder = cache_dir() / "open_clip"
        if offline or (offline is None and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")):
            pretrained = _cached_weights(open_clip, name, pretrained, folder, spec)
        logging.disable(logging.ERROR)  # open_clip and the hub log each retry; the error below says it all
        try:
            model = open_clip.create_model(name, pretrained=pretrained, device=device, cache_dir=str(folder), require_pretrained=True)
            self.tokenizer = open_clip.get_tokenizer(name)
        except Exception as error:  # noqa: BLE001 - open_clip raises many kinds; all mean "no such judge here"
            detail = " ".join(str(error).split())[:200]
            raise RenderError(
                f"cannot load the rank model {spec!r} ({type(error).__name__}: {detail}); "
                f"--rank-model {NOISED_CLIP} needs no download"
            ) from None
        finally:
            logging.disable(logging.NOTSET)
        self.model = model.eval()
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", model.visual.image_size)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD), device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        pixels = (_square(images.to(self.device), self.size) + 1) / 2
        image_z = F.normalize(self.model.encode_image((pixels - self.mean) / self.std).float(), dim=-1)
        text_z = F.normalize(self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)).float(), dim=-1)
        return 100.0 * (image_z * text_z).sum(-1).cpu()


def _parse_spec(spec: str, open_clip: Any) -> tuple[str, str | None]:
    if spec.startswith("hf-hub:"):
        return spec, None
    name, _, pretrained = spec.partition(":")
    if name not in open_clip.list_models():
        raise RenderError(f"unknown open_clip model {name!r} in --rank-model {spec!r}; open_clip.list_models() names them")
    if not pretrained:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not tags:
            raise RenderError(f"rank model {spec!r}: give NAME:PRETRAINED (open_clip's pretrained list) or NAME:FILE")
        pretrained = tags[0]
    return name, pretrained


def _cached_weights(open_clip: Any, name: str, pretrained: str | None, folder: Path, spec: str) -> str | None:
    """Offline: the cached file of a pretrained tag (a local file or hf-hub spec as it is)."""
    if pretrained is None or Path(pretrained).is_file():
        return pretrained
    config = open_clip.get_pretrained_cfg(name, pretrained) or {}
    repo = (config.get("hf_hub") or "").rstrip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for file_name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, file_name, cache_dir=str(folder))
            if isinstance(found, str):
                return found
    raise RenderError(
        f"rank model {spec!r} is not cached and downloads are off (offline); run once online or use --rank-model {NOISED_CLIP}"
    )


class NoisedClipRanker:
    """GLIDE's noised CLIP at timestep 0 (the pictures are clean)."""

    def __init__(self, session: Session, image_model: str = ModelKind.CLIP_IMAGE, text_model: str = ModelKind.CLIP_TEXT):
        self.name = NOISED_CLIP
        self.session = session
        self.clip = session.clip(image_model, text_model)
        self.tokenizer = session.clip_tokenizer(self.clip.text_encoder.config.text_ctx)
        size = self.clip.image_encoder.config.image_size
        self.size = (size, size)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        device = self.session.device
        pictures = _square(images.to(device), self.size)
        tokens = self.tokenizer.batch(list(prompts))
        timesteps = torch.zeros(len(pictures), dtype=torch.long, device=device)
        image_z = self.clip.image_embeddings(pictures, timesteps).float()
        text_z = self.clip.text_embeddings(tokens.tokens.to(device), tokens.lengths.to(device)).float()
        return 100.0 * (image_z * text_z).sum(-1).cpu()


class ManifestClipRanker:
    """A manifest's OpenCLIP entry as the judge (a CLIP of one's own, such as the shapes
    models'), scored as OpenClipRanker scores: centre square, the config's statistics."""

    def __init__(self, session: Session, name: str):
        self.name = name
        self.session = session
        self.model = session.network(name, ModelKind.OPENCLIP)
        cfg = self.model.config
        self.size = (cfg.image_size, cfg.image_size)
        self.tokenizer = session.clip_tokenizer(cfg.text_ctx)
        self.mean = torch.tensor(cfg.pixel_mean, device=session.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.pixel_std, device=session.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        pixels = (_square(images.to(self.session.device), self.size) + 1) / 2
        image_z = F.normalize(image_embedding(self.model, (pixels - self.mean) / self.std), dim=-1)
        text_z = F.normalize(encode_prompts(self.model, self.tokenizer, list(prompts)).pooled, dim=-1)
        return 100.0 * (image_z * text_z).sum(-1).cpu()


def load_ranker(session: Session, spec: str) -> Ranker:
    """The judge `spec` names (see the module's docstring), on the session's device."""
    if spec == NOISED_CLIP:
        return NoisedClipRanker(session)
    if spec in session.manifest.models:
        return ManifestClipRanker(session, spec)
    return OpenClipRanker(spec, session.device, session.offline)


@dataclass(frozen=True)
class BestOf:
    """Sample `count` candidates per picture and keep the best by `rank_model`."""

    count: int
    rank_model: str = RANK_MODEL

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_BEST_OF:
            raise ValueError(f"best-of must be between 1 and {MAX_BEST_OF}, got {self.count}")


@dataclass(frozen=True)
class Pick:
    """The winning candidate of one picture, and every candidate's score."""

    candidate: int
    seed: int
    scores: tuple[float, ...]

    def meta(self, best_of: BestOf) -> dict[str, Any]:
        return {
            "best_of": best_of.count,
            "rank_model": best_of.rank_model,
            "rank_score": round(self.scores[self.candidate], 4),
            "candidate": self.candidate,
            "candidate_seed": self.seed,
            "candidate_scores": [round(score, 4) for score in self.scores],
        }


# run(jobs, noise) -> images: one stage (or stages) for a batch of jobs with their noise.
StageFn = Callable[[list[Any], ImageNoise], Tensor]


def pick_best(
    jobs: Sequence[Any], best_of: BestOf, ranker: Ranker, run: StageFn, batch_size: int
) -> tuple[Tensor, ImageNoise, list[Pick]]:
    """Render `best_of.count` candidates of each job, `batch_size` at a time, and keep the
    best of each (the first on ties). Returns the winners [len(jobs), 3, H, W], their noise
    (each winner's generator where its candidate left it, so later stages continue it) and
    the picks."""
    candidates = [
        (j, k, dataclasses.replace(job, seed=candidate_seed(job.seed, k))) for j, job in enumerate(jobs) for k in range(best_of.count)
    ]
    scores: dict[tuple[int, int], float] = {}
    kept: dict[int, tuple[Tensor, ImageNoise, int]] = {}  # by job: its leader's image, noise and row
    for start in range(0, len(candidates), batch_size):
        part = candidates[start : start + batch_size]
        noise = ImageNoise([job.seed for _, _, job in part])
        images = run([job for _, _, job in part], noise)
        # Scored as the PNG will hold them (8 bits), so `glide score` on a base-size picture agrees.
        values = ranker.score(quantize_to_8bit(images), [spoken_text(plain_text(parse_prompt(job.prompt)), job.literal) for _, _, job in part])
        for row, (j, k, _) in enumerate(part):
            scores[(j, k)] = float(values[row])
            best = max(range(k + 1), key=lambda c: (scores[(j, c)], -c))
            if best == k:  # keep only each job's leader so far
                kept[j] = (images[row], noise, row)
    picks, winners, sources = [], [], []
    for j, job in enumerate(jobs):
        job_scores = tuple(scores[(j, k)] for k in range(best_of.count))
        best = max(range(best_of.count), key=lambda c: (job_scores[c], -c))
        image, noise, row = kept[j]
        picks.append(Pick(best, candidate_seed(job.seed, best), job_scores))
        winners.append(image)
        sources.append((noise, row))
    return torch.stack(winners), ImageNoise.combine(sources), picks


def first_stage_images(
    jobs: Sequence[Any], best_of: BestOf | None, ranker: Ranker | None, run: StageFn, batch_size: int
) -> tuple[Tensor, ImageNoise, list[dict[str, Any]] | None]:
    """The first stage's pictures of `jobs`, their noise (for the later stages to continue)
    and each picture's best-of metadata: each job's own seed without `best_of` (metadata
    None), else the best candidates (pick_best)."""
    if best_of is None:
        noise = job_noise(jobs)
        return run(list(jobs), noise), noise, None
    if ranker is None:  # callers load a ranker whenever they pass best_of
        raise TypeError("best_of needs a ranker")
    images, noise, picks = pick_best(jobs, best_of, ranker, run, batch_size)
    return images, noise, [pick.meta(best_of) for pick in picks]
