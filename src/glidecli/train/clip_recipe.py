"""`glide train --kind clip`: a small CLIP of one's own, the first part of unCLIP's recipe
(DALL-E 2 trains its prior and decoder on a frozen CLIP's embeddings).

open_clip's CLIP model (nets/clip_vit.py builds it from an `OpenClipConfig`, as for OpenAI's
ViT-L/14) and open_clip's tokenizer; the symmetric contrastive loss of open_clip's `ClipLoss`
(cross-entropy of each picture against the batch's captions and of each caption against the
pictures, with a learned temperature), kept per example so that the loop can average it over
the global batch. Pictures are random square crops (`--crop-min`) resized to the tower's size
and normalized with the config's statistics; captions are never dropped. The export is an
`openclip` manifest entry, which `glide unclip/vary/blend --clip-model` and the unCLIP
trainers' `--clip` take.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..nets.kinds import ModelKind
from ..nets.tokenizer import ClipTokenizer
from ..nets.unclip_config import OpenClipConfig
from .data import DataOrder, pil_to_tensor, random_crop, step_examples
from .dataset import Dataset
from .recipe import LossTerms
from .run_manifest import made_entry, run_roles, write_run_manifest
from .start import TrainingError
from .state import arch_dict, network_from_weights, write_json
from .vocabulary import DEFAULT_PRESET, PresetName

# A recipe's methods take the Trainer (loop.py, which imports this module) as `trainer: Any`.

# Fresh CLIPs by size: the image tower's side and patch, widths, depths and the shared
# embedding. open_clip's BPE vocabulary (49,408 tokens) is fixed, so the token embedding is
# most of a small model's parameters.
CLIP_PRESETS: dict[PresetName, dict[str, Any]] = {
    "micro": dict(image_size=32, patch_size=8, vision_width=64, vision_layers=2, vision_head_width=32,
                  text_ctx=24, text_width=64, text_heads=2, text_layers=2, embed_dim=64),
    "tiny": dict(image_size=32, patch_size=4, vision_width=128, vision_layers=4, vision_head_width=32,
                 text_ctx=24, text_width=128, text_heads=4, text_layers=4, embed_dim=128),
    "small": dict(image_size=64, patch_size=8, vision_width=256, vision_layers=6, vision_head_width=64,
                  text_ctx=32, text_width=256, text_heads=4, text_layers=6, embed_dim=256),
}


def clip_preset(preset: str, **changes: Any) -> OpenClipConfig:
    if preset not in CLIP_PRESETS:
        raise TrainingError(f"unknown preset {preset!r} for a CLIP; choose one of {', '.join(CLIP_PRESETS)}")
    if set(changes) - {f.name for f in dataclasses.fields(OpenClipConfig)}:
        raise TrainingError(f"a CLIP has no setting {sorted(set(changes))[0]!r} (--prediction is for diffusion models)")
    # OpenAI's CLIPs use QuickGELU; a fresh one takes the standard GELU open_clip trains with.
    return dataclasses.replace(OpenClipConfig(), quick_gelu=False, **{**CLIP_PRESETS[preset], **changes})


def per_example_contrastive_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    """open_clip's ClipLoss for one process, before its mean: for example i, the mean of the
    cross-entropy of picture i against every caption and of caption i against every picture."""
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(len(logits), device=logits.device)
    per_image = nn.functional.cross_entropy(logits, labels, reduction="none")
    per_text = nn.functional.cross_entropy(logits.T, labels, reduction="none")
    return (per_image + per_text) / 2


def _rank_contrastive_loss(images: Tensor, texts: Tensor, scale: Tensor, part: range, batch: int, ranks) -> Tensor:
    """The per-example loss of this rank's examples (`part` of the global batch) against every
    example of the batch, gathered from all ranks (padded to one size, as all_gather needs)."""
    from torch.distributed.nn.functional import all_gather

    from ..render.shard import share

    parts = [share(batch, rank, ranks.world) for rank in range(ranks.world)]
    longest = max(len(p) for p in parts)

    def gathered(local: Tensor) -> Tensor:
        padded = torch.cat([local, local.new_zeros(longest - len(local), local.shape[1])])
        return torch.cat([chunk[: len(p)] for chunk, p in zip(all_gather(padded), parts)])

    every_image, every_text = gathered(images), gathered(texts)
    labels = torch.arange(part.start, part.stop, device=images.device)
    per_image = nn.functional.cross_entropy(scale * images @ every_text.T, labels, reduction="none")
    per_text = nn.functional.cross_entropy(scale * texts @ every_image.T, labels, reduction="none")
    return (per_image + per_text) / 2


class OpenClipModel(Protocol):
    """What this recipe calls on open_clip's CLIP (which mypy sees as an untyped import)."""

    def encode_image(self, image: Tensor, normalize: bool = False) -> Tensor: ...

    def encode_text(self, text: Tensor, normalize: bool = False) -> Tensor: ...

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...


def top1_retrieval(
    model: OpenClipModel, dataset: Dataset, tokenizer: ClipTokenizer, cfg: OpenClipConfig, device: torch.device | str, limit: int = 256
) -> tuple[float, float, int]:
    """(share of pictures whose own caption scores highest among the data set's distinct
    captions, chance, the number of distinct captions), on the first `limit` pictures."""
    count = min(limit, len(dataset))
    captions = sorted({example.caption for example in dataset.examples})
    centre = torch.full((3,), 0.5)
    with torch.no_grad():
        pixels = torch.stack([_normalized(random_crop(dataset.image(i), cfg.image_size, 1.0, centre), cfg) for i in range(count)])
        images = model.encode_image(pixels.to(device), normalize=True)
        texts = model.encode_text(tokenizer.batch(captions).tokens.to(device), normalize=True)
        best = (images @ texts.T).argmax(dim=1).cpu()
    truth = torch.tensor([captions.index(dataset.examples[i].caption) for i in range(count)])
    return float((best == truth).float().mean()), 1.0 / len(captions), len(captions)


def _normalized(picture, cfg: OpenClipConfig) -> Tensor:
    pixels = (pil_to_tensor(picture) + 1) / 2  # 0..1
    mean = torch.tensor(cfg.pixel_mean)[:, None, None]
    std = torch.tensor(cfg.pixel_std)[:, None, None]
    return (pixels - mean) / std


class ClipBatches:
    """Step k's pictures (random crops) and captions, from the data set and (seed, k) alone."""

    def __init__(self, dataset: Dataset, tokenizer: ClipTokenizer, cfg: OpenClipConfig, batch_size: int, seed: int, crop_min: float):
        self.dataset, self.cfg, self.batch_size, self.seed, self.crop_min = dataset, cfg, batch_size, seed, crop_min
        self.order = DataOrder(len(dataset), seed)
        encoded = tokenizer.batch([example.caption for example in dataset.examples])
        self.tokens = encoded.tokens
        self.truncated = sum(encoded.truncated)

    def __call__(self, step: int, part: range | None = None) -> tuple[Tensor, Tensor]:
        examples = step_examples(self.order, self.seed, self.batch_size, step, part)
        pixels = [
            _normalized(random_crop(self.dataset.image(index), self.cfg.image_size, self.crop_min, torch.rand(3, generator=g)), self.cfg)
            for index, g in examples
        ]
        return torch.stack(pixels), self.tokens[[index for index, _ in examples]]


class ClipRecipe:
    """A CLIP trained contrastively on the captioned pictures."""

    def check(self, trainer: Any) -> None:
        source = trainer.source
        if source.entry is not None:
            raise TrainingError("--kind clip trains a fresh CLIP: give --preset micro, tiny or small, not a manifest --model")
        if trainer.hyper.amp == "fp16" and trainer.device.type == "cpu":
            raise TrainingError("fp16 mixed precision needs a GPU; use --dtype fp32 or bf16 on the CPU")

    def image_size(self, trainer: Any, state: dict | None, entry) -> int:
        if state is not None:
            return int(state["arch"]["image_size"])
        return int(trainer.source.arch_changes.get("image_size", CLIP_PRESETS.get(trainer.source.preset or DEFAULT_PRESET, {}).get("image_size", 32)))

    def prepare(self, trainer: Any, manifest, entry, state, offline) -> tuple[OpenClipConfig, nn.Module]:
        from ..nets.checkpoint import build_network

        if state is not None:
            arch: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()}
            cfg = OpenClipConfig(**arch)
            with torch.device("meta"):
                model = build_network(ModelKind.OPENCLIP, cfg)
        else:
            cfg = clip_preset(trainer.source.preset or DEFAULT_PRESET, **trainer.source.arch_changes)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(trainer.hyper.seed)  # open_clip initializes from the global generator
                model = build_network(ModelKind.OPENCLIP, cfg)
        self.tokenizer = ClipTokenizer(cfg.text_ctx)
        self.batches = ClipBatches(trainer.dataset, self.tokenizer, cfg, trainer.hyper.batch_size, trainer.hyper.seed, trainer.hyper.crop_min)
        return cfg, model

    def network(self, kind: str, cfg: OpenClipConfig, weights: dict[str, Tensor], device: torch.device) -> nn.Module:
        return network_from_weights(ModelKind.OPENCLIP, cfg, weights, device)

    def forward_module(self, model: nn.Module) -> nn.Module:
        return model

    def checkpointing(self, model: OpenClipModel) -> None:
        model.set_grad_checkpointing(True)

    def truncated(self) -> int:
        return self.batches.truncated

    def loss(self, trainer: Any, step: int, autocast=contextlib.nullcontext()) -> LossTerms:
        """This rank's examples against the whole global batch: under torchrun every rank's
        features are gathered (with their gradients), so the ranks' per-example losses sum to
        one process's and the loop's gradient scaling holds as for the other kinds."""
        pixels, tokens = self.batches(step, trainer.part)
        with autocast:
            image_features, text_features, logit_scale = trainer.net(pixels.to(trainer.device), tokens.to(trainer.device))[:3]
        images, texts, scale = image_features.float(), text_features.float(), logit_scale.float()
        if trainer.part is None:
            loss = per_example_contrastive_loss(images, texts, scale)
        else:
            loss = _rank_contrastive_loss(images, texts, scale, trainer.part, trainer.hyper.batch_size, trainer.ranks)
        return LossTerms(loss, {"temperature": (1.0 / scale.detach()).expand(len(loss))})

    def samples(self, trainer: Any, path: Path, count: int = 4) -> Path:
        """Not pictures: the EMA model's top-1 retrieval of the data set's captions."""
        accuracy, chance, captions = top1_retrieval(trainer.ema, trainer.dataset, self.tokenizer, trainer.cfg, trainer.device)
        path = path.with_suffix(".json")
        write_json(path, {"step": trainer.step, "top1": accuracy, "chance": chance, "captions": captions})
        return path

    def export(self, trainer: Any, weights: Path, comment: list[str]) -> Path:
        folder = trainer.out
        entry = made_entry(trainer.source.name, ModelKind.OPENCLIP, weights, arch_dict(trainer.cfg), folder)
        return write_run_manifest(folder / "weights.toml", [entry], comment, run_roles([(trainer.source.name, ModelKind.OPENCLIP)]))
