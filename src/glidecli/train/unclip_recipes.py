"""`glide train --kind unclip-prior|unclip-decoder --clip NAME`: unCLIP's prior and decoder
(DALL-E 2, Ramesh et al. 2022; Karlo's settings) trained on a frozen CLIP's view of the data
set (embeddings.py), with the loop every kind shares (loop.py).

- Prior: a PriorTransformer (nets/prior.py) learns the CLIP image embedding, normalized by the
  data set's mean and std (written as the run's clip-stats entry), from the caption's text
  features: x0 prediction with the MSE loss, uniform timesteps; the caption is dropped (the
  empty caption's features) for `--caption-dropout` of examples (Karlo's 0.2) for guidance.
- Decoder: a GLIDE-style U-Net with CLIP conditioning (UNetConfig.clip_dim) paints the
  picture from its image embedding and caption: the hybrid loss as GLIDE's, the embedding
  dropped (the learned "no image" embedding) for 10% of examples and the caption for
  `--caption-dropout` of them (the paper's 50% by default).

Both train fresh networks of a preset, or (`--lora RANK`, lora_recipe.py) an adapter of a
manifest prior or decoder with the same losses and draws: then the network's settings are the
entry's, the prior keeps the entry's embedding statistics, and the entry's network is the
adapter run's frozen base, which lora_recipe.py loads itself.

Every random choice of example k comes from (seed, k) alone, as for GLIDE, so a resumed run
and a torchrun of any number of ranks take the steps of an uninterrupted single process.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..diffusion.losses import hybrid_loss, q_sample
from ..diffusion.vocabulary import SamplerName
from ..files.manifest import ModelEntry
from ..nets.checkpoint import build_network, read_clip_stats
from ..nets.config import UNetConfig
from ..nets.kinds import ModelKind
from ..nets.prior import ClipText, PriorTransformer
from ..nets.unclip_config import PriorConfig, karlo_decoder_config
from ..nets.unet import Text2ImUNet
from .data import pil_to_tensor, random_crop
from .dataset import default_mode
from .recipe import LossTerms
from .run_manifest import made_entry, manifest_roles, run_roles, used_entry, write_run_manifest
from .start import TrainingError
from .state import arch_dict, enable_gradient_checkpointing, init_fresh_, network_as, save_tensors, write_json
from .unclip_common import USED, UnclipRecipe, checked_config, preset_values, stats_entry
from .vocabulary import DEFAULT_PRESET, PresetName

# A recipe's methods take the Trainer (loop.py, which imports this module) as `trainer: Any`.

IMAGE_DROPOUT = 0.1  # decoder: share of examples without their image embedding (the paper's)

PRIOR_PRESETS: dict[PresetName, dict[str, Any]] = {
    "micro": dict(xf_width=128, xf_layers=2, xf_heads=4),
    "tiny": dict(xf_width=256, xf_layers=4, xf_heads=4),
    "small": dict(xf_width=512, xf_layers=6, xf_heads=8),
}
DECODER_PRESETS: dict[PresetName, dict[str, Any]] = {
    "micro": dict(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
                  num_head_channels=32, xf_width=64, dropout=0.0),
    "tiny": dict(image_size=32, model_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2), attention_resolutions=(16, 8),
                 num_head_channels=32, xf_width=64, dropout=0.0),
    "small": dict(image_size=64, model_channels=128, num_res_blocks=2, channel_mult=(1, 2, 3, 4), attention_resolutions=(32, 16, 8),
                  num_head_channels=64, xf_width=256, dropout=0.1),
}


class PriorForward(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x_t: Tensor, t: Tensor, pooled: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        return self.model(x_t, t, ClipText(pooled, tokens, mask))


class PriorRecipe(UnclipRecipe):
    kind = ModelKind.UNCLIP_PRIOR

    def image_size(self, trainer: Any, state, entry) -> int:
        return 64  # only the CLIP sees the pictures, at its own size

    def prepare(self, trainer: Any, manifest, entry, state, offline) -> tuple[PriorConfig, nn.Module]:
        clip, self.data = self._clip(trainer, manifest, state, offline)
        width = clip.arch.embed_dim
        if trainer.source.lora is not None:
            return self._prepare_adapted(trainer, entry, state, clip, offline)
        self.stats_path = trainer.out / f"{trainer.source.name}-stats.safetensors"
        if state is not None:
            cfg = self._config_of_state(state)
            if cfg.clip_dim != width:
                raise TrainingError(f"the run's prior reads CLIP embeddings of width {cfg.clip_dim}; CLIP {clip.name} makes {width}")
            from safetensors.torch import load_file

            stats = load_file(str(self.stats_path))
            self.mean, self.std = stats["0"], stats["1"]
            with torch.device("meta"):
                model = build_network(self.kind, cfg)
        else:
            values = {**preset_values(PRIOR_PRESETS, trainer.source.preset, self.kind), "text_ctx": clip.arch.text_ctx, "clip_dim": width}
            cfg = checked_config(PriorConfig, values, trainer.source.arch_changes, self.kind)
            self.mean, self.std = self.data.images.mean(0), self.data.images.std(0).clamp(min=1e-6)
            if trainer.ranks.is_main:
                save_tensors({"0": self.mean, "1": self.std}, self.stats_path)
                os.chmod(self.stats_path, default_mode())
            generator = torch.Generator().manual_seed(trainer.hyper.seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(trainer.hyper.seed)  # PyTorch's default layer init
                model = network_as(PriorTransformer, build_network(self.kind, cfg))
            with torch.no_grad():
                model.positional_embedding.copy_(torch.randn(model.positional_embedding.shape, generator=generator) * 0.01)
                model.prd_emb.copy_(torch.randn(model.prd_emb.shape, generator=generator) * 0.01)
            self._keep_used(trainer, [clip])
        if state is not None:
            self.used = [clip]
        self._ready(trainer, cfg)
        return cfg, model

    def _config_of_state(self, state) -> PriorConfig:
        return PriorConfig(**state["arch"])

    def _prepare_adapted(self, trainer: Any, entry: ModelEntry | None, state, clip: ModelEntry, offline) -> tuple[PriorConfig, nn.Module]:
        """A LoRA run of a manifest prior: its settings, and the embedding statistics it was
        trained with (its `NAME-stats` entry, else the manifest's clip-stats role), which the
        run keeps among the entries it used (with the decoders of this CLIP)."""
        from ..files.fetch import fetch_entry

        cfg: PriorConfig = self._adapted(entry, state, clip)
        if state is not None:
            stats = next((e for e in self.manifest.models.values() if e.kind == ModelKind.CLIP_STATS), None)
            self.used = list(self.manifest.models.values())
        else:
            stats = stats_entry(self.manifest, trainer.source.entry)
            self._keep_used(trainer, [clip, stats, *self._readers(ModelKind.UNCLIP_DECODER, cfg.clip_dim)])
        if stats is None:
            raise TrainingError(f"{trainer.out / USED} names no clip-stats entry; an exact resume needs the one the run started with")
        self.mean, self.std = read_clip_stats(fetch_entry(stats, offline=offline, progress=False))
        self._ready(trainer, cfg)
        with torch.device("meta"):
            return cfg, build_network(self.kind, cfg)

    def forward_module(self, model: nn.Module) -> nn.Module:
        return PriorForward(model)

    def checkpointing(self, model: nn.Module) -> None:
        raise TrainingError("--grad-checkpointing is for U-Nets; the prior is small enough without it")

    def batch(self, trainer: Any, step: int):
        indices, generators = self._draws(trainer, step)
        dim, steps = trainer.cfg.clip_dim, trainer.cfg.diffusion_steps
        draws = [(torch.rand((), generator=g) < trainer.hyper.caption_dropout, torch.randint(0, steps, (), generator=g),
                  torch.randn(dim, generator=g)) for g in generators]
        dropped = torch.stack([d[0] for d in draws])
        t, noise = torch.stack([d[1] for d in draws]), torch.stack([d[2] for d in draws])
        x0 = (self.data.images[indices] - self.mean) / self.std
        return x0, t, noise, self.data.text_rows(indices, dropped)

    def loss(self, trainer: Any, step: int, autocast=contextlib.nullcontext()) -> LossTerms:
        x0, t, noise, text = self.batch(trainer, step)
        device = trainer.device
        x0, t = x0.to(device), t.to(device)
        x_t = q_sample(self.schedule, x0, t, noise.to(device))
        with autocast:
            predicted = trainer.net(x_t, t, *(part.to(device) for part in text))
        mse = ((predicted.float() - x0) ** 2).mean(dim=1)
        return LossTerms(mse)

    def samples(self, trainer: Any, path: Path, count: int = 16) -> Path:
        """Not pictures: how close the EMA prior's embeddings for the first captions come to
        their pictures' (cosine), beside two different pictures' closeness."""
        from ..diffusion.noise import ImageNoise
        from ..render.pipeline import SamplerChoice
        from ..render.unclip import sample_prior

        count = min(count, len(trainer.dataset))
        rows = list(range(count))
        prior = trainer.ema
        prior.set_stats(self.mean, self.std)
        device = trainer.device
        text = ClipText(*(part[rows].to(device) for part in self.data.text))
        with torch.no_grad():
            made = sample_prior(prior, text, None, ImageNoise(rows), SamplerChoice(SamplerName.DDIM, "25")).cpu()
        truth = self.data.images[rows]
        cos = nn.functional.cosine_similarity(made, truth).mean().item()
        others = nn.functional.cosine_similarity(truth, truth.roll(1, dims=0)).mean().item()
        report = {"step": trainer.step, "cosine_to_own_picture": cos, "cosine_between_pictures": others, "captions": count}
        write_json(path.with_suffix(".json"), report)
        return path.with_suffix(".json")

    def export(self, trainer: Any, weights: Path, comment: list[str]) -> Path:
        name, folder = trainer.source.name, trainer.out
        blocks = [used_entry(e, folder) for e in self.used]
        blocks.append(made_entry(name, self.kind, weights, arch_dict(trainer.cfg), folder))
        blocks.append(made_entry(f"{name}-stats", ModelKind.CLIP_STATS, self.stats_path, None, folder))
        made = [(name, ModelKind.UNCLIP_PRIOR), (f"{name}-stats", ModelKind.CLIP_STATS)]
        return write_run_manifest(folder / "weights.toml", blocks, comment, run_roles([(e.name, e.kind) for e in self.used] + made, manifest_roles(self.manifest)))


class DecoderForward(nn.Module):
    """The decoder's training call: dropped embeddings become its learned "no image" one."""

    def __init__(self, model: Text2ImUNet):
        super().__init__()
        self.model = model

    def forward(self, x_t: Tensor, t: Tensor, pooled: Tensor, tokens: Tensor, mask: Tensor, image: Tensor, no_image: Tensor) -> Tensor:
        image = torch.where(no_image[:, None], self.model.cf_param[None].to(image.dtype), image)
        return self.model(x_t, t, self.model.encode_clip(pooled, tokens, mask, image))


class DecoderRecipe(UnclipRecipe):
    kind = ModelKind.UNCLIP_DECODER

    def image_size(self, trainer: Any, state, entry) -> int:
        if state is not None:
            return int(state["arch"]["image_size"])
        if entry is not None:
            return int(entry.arch.image_size)
        preset = DECODER_PRESETS.get(trainer.source.preset or DEFAULT_PRESET, {})
        return int(trainer.source.arch_changes.get("image_size", preset.get("image_size", 32)))

    def prepare(self, trainer: Any, manifest, entry, state, offline) -> tuple[UNetConfig, nn.Module]:
        clip, self.data = self._clip(trainer, manifest, state, offline)
        width = clip.arch.embed_dim
        # Priors of this CLIP's width in the manifest, with their stats, go into the run's
        # manifest too, so that it holds a whole unCLIP (no super-resolution).
        priors = self._readers(ModelKind.UNCLIP_PRIOR, width)
        if trainer.source.lora is not None:  # an adapter of a manifest decoder: its settings, its network the base's
            cfg = self._adapted(entry, state, clip)
            if state is None:
                self._keep_used(trainer, [clip, *priors])
            self.used = [clip, *priors]
            self._ready(trainer, cfg)
            with torch.device("meta"):
                return cfg, build_network(self.kind, cfg)
        if state is not None:
            cfg = self._config_of_state(state)
            if cfg.clip_dim != width:
                raise TrainingError(f"the run's decoder reads CLIP embeddings of width {cfg.clip_dim}; CLIP {clip.name} makes {width}")
            with torch.device("meta"):
                model = build_network(self.kind, cfg)
            self.used = [clip, *priors]
        else:
            values = {**preset_values(DECODER_PRESETS, trainer.source.preset, self.kind), "text_ctx": clip.arch.text_ctx, "clip_dim": width}
            cfg = checked_config(karlo_decoder_config, values, trainer.source.arch_changes, self.kind)
            model = init_fresh_(network_as(Text2ImUNet, build_network(self.kind, cfg)), trainer.hyper.seed)
            with torch.no_grad():
                model.cf_param.copy_(torch.randn(width, generator=torch.Generator().manual_seed(trainer.hyper.seed)) * 0.02)
            self._keep_used(trainer, [clip, *priors])
        self._ready(trainer, cfg)
        return cfg, model

    def _config_of_state(self, state) -> UNetConfig:
        return UNetConfig.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})

    def forward_module(self, model: Text2ImUNet) -> nn.Module:
        return DecoderForward(model)

    def checkpointing(self, model: Text2ImUNet) -> None:
        enable_gradient_checkpointing(model)

    def batch(self, trainer: Any, step: int):
        indices, generators = self._draws(trainer, step)
        cfg, hyper = trainer.cfg, trainer.hyper
        size = cfg.image_size
        pictures, caption_off, image_off, ts, noises = [], [], [], [], []
        for index, g in zip(indices, generators):
            crop = torch.rand(3, generator=g)
            caption_off.append(torch.rand((), generator=g) < hyper.caption_dropout)
            image_off.append(torch.rand((), generator=g) < IMAGE_DROPOUT)
            ts.append(torch.randint(0, cfg.diffusion_steps, (), generator=g))
            noises.append(torch.randn(cfg.image_channels, size, size, generator=g))
            pictures.append(pil_to_tensor(random_crop(trainer.dataset.image(index), size, hyper.crop_min, crop)))
        text = self.data.text_rows(indices, torch.stack(caption_off))
        return torch.stack(pictures), torch.stack(ts), torch.stack(noises), text, self.data.images[indices], torch.stack(image_off)

    def loss(self, trainer: Any, step: int, autocast=contextlib.nullcontext()) -> LossTerms:
        x0, t, noise, text, image, no_image = self.batch(trainer, step)
        device = trainer.device
        x0, t, noise = x0.to(device), t.to(device), noise.to(device)
        x_t = q_sample(self.schedule, x0, t, noise)
        with autocast:
            output = trainer.net(x_t, t, *(part.to(device) for part in text), image.to(device), no_image.to(device))
        terms = hybrid_loss(self.schedule, output, x0, x_t, t, noise, min_snr_gamma=trainer.hyper.min_snr, prediction=trainer.cfg.prediction)
        return LossTerms(terms.loss, {"mse": terms.mse, "vb": terms.vb})

    def samples(self, trainer: Any, path: Path, count: int = 4) -> Path:
        """The EMA decoder's pictures from the first examples' image embeddings and captions
        (guidance 3, 50 DDIM steps), in a row."""
        from ..diffusion.noise import ImageNoise
        from ..render.pipeline import SamplerChoice, sample_stage
        from ..render.unclip import decoder_conditioning
        from .state import write_png

        count = min(count, len(trainer.dataset))
        rows = list(range(count))
        device = trainer.device
        text = ClipText(*(part[rows].to(device) for part in self.data.text))
        empty = ClipText(*(part.expand(count, *part.shape[1:]).to(device) for part in self.data.empty))
        with torch.no_grad():
            conditioning = decoder_conditioning(trainer.ema, text, empty, self.data.images[rows].to(device))
            images = sample_stage(trainer.ema, conditioning, ImageNoise(rows), SamplerChoice(SamplerName.DDIM, "50"), scale=3.0)
        pixels = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return write_png(path, torch.cat(list(pixels), dim=2).permute(1, 2, 0).numpy())

    def export(self, trainer: Any, weights: Path, comment: list[str]) -> Path:
        folder = trainer.out
        blocks = [used_entry(e, folder) for e in self.used]
        blocks.append(made_entry(trainer.source.name, self.kind, weights, arch_dict(trainer.cfg), folder))
        made = [(trainer.source.name, ModelKind.UNCLIP_DECODER)]
        return write_run_manifest(folder / "weights.toml", blocks, comment, run_roles([(e.name, e.kind) for e in self.used] + made, manifest_roles(self.manifest)))
