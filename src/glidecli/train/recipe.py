"""What a kind of model trains on and how (the Trainer's loop, checkpoints, EMA, resume and
torchrun are the same for every kind, loop.py): its settings, its batches, its loss, its
samples and the manifest it exports. loop.recipe_for(kind) picks one.

`GlideRecipe` is GLIDE's (the U-Net kinds: data.py's batches, losses.py's hybrid loss).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..diffusion.losses import hybrid_loss, q_sample
from ..diffusion.schedule import Schedule
from ..files.file_facts import sha256_file
from ..files.manifest import toml_value
from ..files.roles import Role
from ..nets.config import UNetConfig
from ..nets.tokenizer import GlideTokenizer
from ..nets.unet import Text2ImUNet
from .data import BatchMaker
from .parallel import Denoiser
from .run_manifest import made_entry, write_model_manifest
from .start import TrainingError, check_kind_and_dtype, prepare_model, run_image_size
from .state import arch_dict, enable_gradient_checkpointing, network_from_weights, write_samples

# A recipe's methods take the Trainer (loop.py, which imports this module) as `trainer: Any`.


@dataclass
class LossTerms:
    """A step's loss per example (what is optimized: its mean over the global batch) and
    other per-example terms to log."""

    loss: Tensor
    logged: dict[str, Tensor] = field(default_factory=dict)


class GlideRecipe:
    """GLIDE's U-Nets: crops of the pictures, captions tokenized by the model's own tokenizer
    and dropped for guidance, uniform timesteps, the hybrid loss."""

    def check(self, trainer: Any) -> None:
        check_kind_and_dtype(trainer.source, trainer.hyper, trainer.device)

    def image_size(self, trainer: Any, state: dict | None, entry) -> int:
        return run_image_size(trainer.source, state, entry)

    def prepare(self, trainer: Any, manifest, entry, state, offline) -> tuple[UNetConfig, torch.nn.Module]:
        """The network's config and starting weights; the tokenizer, schedule and batches."""
        self.tokenizer_path = trainer.out / f"{trainer.source.name}.tokenizer.json"
        cfg, model = prepare_model(
            trainer.source, trainer.hyper.seed, trainer.dataset, trainer.ranks, self.tokenizer_path, manifest, entry, state, offline
        )
        self.tokenizer = GlideTokenizer.from_file(self.tokenizer_path, text_ctx=cfg.text_ctx)
        if self.tokenizer.max_token >= cfg.n_vocab:
            raise TrainingError(f"the tokenizer makes ids up to {self.tokenizer.max_token} but the model knows only {cfg.n_vocab}")
        self.schedule = Schedule.create(cfg.noise_schedule, cfg.diffusion_steps)
        self.batches = BatchMaker(trainer.dataset, self.tokenizer, cfg, trainer.hyper)
        return cfg, model

    def network(self, kind: str, cfg: UNetConfig, weights: dict[str, Tensor], device: torch.device) -> torch.nn.Module:
        return network_from_weights(kind, cfg, weights, device)

    def forward_module(self, model: Text2ImUNet) -> torch.nn.Module:
        """What a training step calls (text encoder included, so DDP sees every parameter)."""
        return Denoiser(model)

    def checkpointing(self, model: Text2ImUNet) -> None:
        enable_gradient_checkpointing(model)

    def truncated(self) -> int:
        """Captions cut to the model's context."""
        return self.batches.truncated

    def loss(self, trainer: Any, step: int, autocast=contextlib.nullcontext()) -> LossTerms:
        """The step's batch (this rank's part) through the network (under `autocast`), and the loss."""
        batch = self.batches(step, trainer.part)
        device = trainer.device
        x0, noise, t = batch.x0.to(device), batch.noise.to(device), batch.t.to(device)
        x_t = q_sample(self.schedule, x0, t, noise)
        low_res = batch.low_res.to(device) if batch.low_res is not None else None
        known = {}
        if batch.keep_mask is not None:  # the model multiplies the picture by the mask itself
            known = dict(inpaint_image=x0, inpaint_mask=batch.keep_mask.to(device))
        with autocast:
            output = trainer.net(x_t, t, batch.tokens.to(device), batch.mask.to(device), low_res, known)
        terms = hybrid_loss(
            self.schedule, output, x0, x_t, t, noise, min_snr_gamma=trainer.hyper.min_snr, prediction=trainer.cfg.prediction
        )
        return LossTerms(terms.loss, {"mse": terms.mse, "vb": terms.vb})

    def samples(self, trainer: Any, path: Path, count: int = 4) -> Path:
        return write_samples(path, trainer.ema, self.tokenizer, trainer.dataset, trainer.cfg, trainer.device, count)

    def adapter_entries(self, trainer: Any, base_name: str, base_path: Path) -> tuple[list[list[str]], dict[Role, str]]:
        """A LoRA run's manifest but for its adapter (lora_recipe.py): the base model and its tokenizer."""
        tokenizer, tokenizer_name = self.tokenizer_path, f"{base_name}-tokenizer"
        arch = arch_dict(trainer.cfg)
        base = made_entry(base_name, trainer.source.kind, base_path, arch, trainer.out, (f"tokenizer = {toml_value(tokenizer_name)}",))
        tokens = [f'[tokenizers."{tokenizer_name}"]', f"path = {toml_value(tokenizer.name)}", f"sha256 = {toml_value(sha256_file(tokenizer))}", ""]
        return [base, tokens], {}

    def export(self, trainer: Any, weights: Path, comment: list[str]) -> Path:
        source = trainer.source
        return write_model_manifest(trainer.out / "weights.toml", source.name, source.kind, trainer.cfg, weights, self.tokenizer_path, comment)
