"""LoRA training (`glide train --lora RANK`): the recipe of the model's kind, with the base
network frozen and only low-rank adapters on its chosen layers trained (nets/lora.py).

The loop (loop.py) is unchanged: what it trains, averages, checkpoints and resumes is a
`LoraTrainee`, a module whose parameters are the adapter's alone. The model's and the EMA's
trainees share one frozen base network, which neither owns (it is outside their module
trees: not in their parameters, state dicts or `.to`); each wears its branches on the base
layers while it runs. So the optimizer state, the EMA and the checkpoints hold the adapter
only, and one copy of the base network is in memory. A checkpoint's state records the base
model's file and sha256; --resume reads that file again (the same one: its hash is checked).
The result is an adapter folder in PEFT's format (files/lora_file.py) and a manifest naming
it, its base model and what the kind's recipe says the base runs with (`adapter_entries`: GLIDE's
tokenizer; unCLIP's CLIP, embedding statistics and other half).

What differs by kind is the kind's recipe's: GLIDE's U-Nets (recipe.py) and unCLIP's prior and
decoder (unclip_recipes.py, which then take the entry's settings and, for the prior, its stats).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..files.file_facts import sha256_file
from ..files.lora_file import write_adapter
from ..files.manifest import toml_value
from ..nets.checkpoint import read_safetensors
from ..nets.kinds import ModelKind
from ..nets.lora import ATTENTION_TARGETS, PEFT_PREFIX, LoraBranch, LoraLayer, lora_scaling, matching_paths
from .run_manifest import write_run_manifest
from .start import TrainingError
from .state import network_from_weights

# --lora-targets' group names: the attention projections (U-Net and text transformer), and the
# ResBlocks' two 3x3 convolutions.
TARGET_GROUPS: dict[str, tuple[str, ...]] = {"attention": ATTENTION_TARGETS, "convs": ("in_layers.2", "out_layers.3")}
LORA_KINDS = (ModelKind.BASE, ModelKind.UPSAMPLE, ModelKind.BASE_INPAINT, ModelKind.UPSAMPLE_INPAINT, ModelKind.UNCLIP_PRIOR, ModelKind.UNCLIP_DECODER)


def target_names(text: str) -> tuple[str, ...]:
    """The layer names a --lora-targets value means: groups (attention, convs) and names."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        for name in TARGET_GROUPS.get(part, (part,) if part else ()):
            if name not in names:
                names.append(name)
    return tuple(names)


class LoraTrainee(nn.Module):
    """The trained part of a LoRA run: a branch per adapted layer of a base network it wears
    but does not own. Attributes it lacks (encode_text, config, dtype) are the base network's;
    its calls run the base network wearing these branches, in this module's train/eval mode."""

    def __init__(self, base: nn.Module, layers: list[tuple[str, LoraLayer]], branches: list[LoraBranch]):
        super().__init__()
        self.__dict__["_base"] = base  # not registered: the base is shared and frozen
        self.__dict__["_layers"] = layers
        self.paths = [path for path, _ in layers]
        self.branches = nn.ModuleList(branches)

    def wear(self) -> nn.Module:
        """Put these branches on the base network's layers; the base network, ready to call."""
        for (_, layer), branch in zip(self.__dict__["_layers"], self.branches, strict=True):
            if len(layer.branches) != 1 or layer.branches[0] is not branch:
                layer.branches = nn.ModuleList([branch])
        base: nn.Module = self.__dict__["_base"]
        base.train(self.training)
        return base

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.wear()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            value = getattr(self.__dict__["_base"], name)
        if callable(value) and not isinstance(value, nn.Module):
            return self._worn(name)
        return value

    def _worn(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.wear(), name)(*args, **kwargs)

        return call

    def peft_state(self) -> dict[str, Tensor]:
        """The adapter under PEFT's saved keys."""
        return {f"{PEFT_PREFIX}{path}.{key}": tensor for path, branch in zip(self.paths, self.branches, strict=True) for key, tensor in branch.state_dict().items()}


class LoraRecipe:
    """The kind's recipe (`inner`) training a LoRA adapter; `settings` is ModelSource.lora:
    rank, alpha, dropout, targets, and (once started) the base model's file and sha256."""

    def __init__(self, inner: Any, settings: dict[str, Any]):
        self.inner = inner
        self.settings = settings
        self.adapter_folder: Path | None = None  # the exported adapter, what the run made

    def __getattr__(self, name: str) -> Any:  # what LoRA does not change is the kind's own
        return getattr(self.inner, name)

    def check(self, trainer: Any) -> None:
        if trainer.source.kind not in LORA_KINDS:
            raise TrainingError(f"--lora trains adapters of {', '.join(LORA_KINDS)} models, not {trainer.source.kind}")
        self.inner.check(trainer)

    def prepare(self, trainer: Any, manifest: Any, entry: Any, state: Any, offline: Any) -> tuple[Any, nn.Module]:
        """The kind's config and what it reads (GLIDE's tokenizer; unCLIP's CLIP view of the data,
        the prior's stats); the base network (the entry's, or on --resume the
        recorded file's), frozen, on the run's device, with LoRA layers at the targets; the
        starting trainee (lora_A seeded by --seed, lora_B zero)."""
        if entry is not None and (entry.kind != trainer.source.kind or trainer.source.arch_changes):
            raise TrainingError("--lora adapts a model as it is: leave out --kind and --prediction")
        cfg, _ = self.inner.prepare(trainer, manifest, entry, state, offline)
        if entry is not None:
            from ..files.fetch import fetch_entry

            path = fetch_entry(entry, offline=offline)
            self.settings.update(base_model=entry.name, base_path=str(path), base_sha256=entry.sha256 or sha256_file(path))
        path = Path(self.settings["base_path"])
        if not path.is_file() or (state is not None and sha256_file(path) != self.settings["base_sha256"]):
            raise TrainingError(f"{path}, the base model of this LoRA run, is gone or has changed; an exact resume needs the same file")
        # As a full fine-tune holds its network (float32, the default layout), frozen.
        base = network_from_weights(trainer.source.kind, cfg, read_safetensors(path), trainer.device).requires_grad_(False)
        self.base = base
        self.layers = self._lora_layers(base)
        generator = torch.Generator().manual_seed(trainer.hyper.seed)
        return cfg, self._trainee([self._branch(layer, generator) for _, layer in self.layers], torch.device("cpu"))

    def _lora_layers(self, base: nn.Module) -> list[tuple[str, LoraLayer]]:
        paths = matching_paths(base, self.settings["targets"])
        if not paths:
            raise TrainingError(f"no layer of the model matches --lora-targets {','.join(self.settings['targets'])}")
        for path in paths:
            base.set_submodule(path, LoraLayer(base.get_submodule(path)))
        return [(path, layer) for path in paths if isinstance(layer := base.get_submodule(path), LoraLayer)]

    def _branch(self, layer: LoraLayer, generator: torch.Generator | None) -> LoraBranch:
        rank = int(self.settings["rank"])
        branch = LoraBranch(layer.base_layer, rank, lora_scaling(float(self.settings["alpha"]), rank), float(self.settings["dropout"]))
        if generator is not None:  # PEFT's start: lora_A Kaiming-uniform (a = sqrt(5)), lora_B zero
            with torch.no_grad():
                bound = 1 / branch.lora_A.weight[0].numel() ** 0.5
                branch.lora_A.weight.uniform_(-bound, bound, generator=generator)
                branch.lora_B.weight.zero_()
        return branch

    def _trainee(self, branches: list[LoraBranch], device: torch.device) -> LoraTrainee:
        return LoraTrainee(self.base, self.layers, branches).to(device)

    def network(self, kind: str, cfg: Any, weights: dict[str, Tensor], device: torch.device) -> nn.Module:
        """A trainee holding copies of `weights` (an adapter's, by the trainee's keys)."""
        trainee = self._trainee([self._branch(layer, None) for _, layer in self.layers], device)
        copies = {k: v.detach().to(device=device, dtype=torch.float32, copy=True) for k, v in weights.items()}
        try:
            trainee.load_state_dict(copies, strict=True)
        except RuntimeError as error:
            raise TrainingError(f"the checkpoint's adapter does not fit the model: {' '.join(str(error).split())[:200]}") from None
        return trainee

    def forward_module(self, model: LoraTrainee) -> nn.Module:
        return self.inner.forward_module(model)  # it calls the trainee, which wears its branches

    def checkpointing(self, model: LoraTrainee) -> None:
        self.inner.checkpointing(self.base)

    def samples(self, trainer: Any, path: Path, count: int = 4) -> Path:
        """The kind's samples from the base network wearing the EMA's adapter."""
        view = types.SimpleNamespace(**{**vars(trainer), "ema": trainer.ema.wear()})
        written: Path = self.inner.samples(view, path, count)
        return written

    def export(self, trainer: Any, weights: Path, comment: list[str]) -> Path:
        """The EMA's adapter as a PEFT folder DIR/NAME/ (replacing the loop's flat file of the
        trainee's tensors), and DIR/weights.toml naming it, its base model and what that runs with."""
        name, kind = trainer.source.name, trainer.source.kind
        dtype = weights_dtype(weights)
        state = {key: tensor.to(dtype) for key, tensor in trainer.ema.peft_state().items()}
        config = {"r": int(self.settings["rank"]), "lora_alpha": self.settings["alpha"], "lora_dropout": self.settings["dropout"],
                  "target_modules": list(self.settings["targets"])}
        folder = write_adapter(trainer.out / name, state, config, base_model=self.settings["base_model"], base_kind=kind,
                               base_sha256=self.settings["base_sha256"], overwrite=True)
        weights.unlink()
        self.adapter_folder = folder
        blocks, roles = self.inner.adapter_entries(trainer, self.settings["base_model"], Path(self.settings["base_path"]))
        blocks.append([f'[models."{name}"]', 'kind = "lora"', f"path = {toml_value(name)}",
                       f"sha256 = {toml_value(sha256_file(folder / 'adapter_model.safetensors'))}", ""])
        return write_run_manifest(trainer.out / "weights.toml", blocks, comment, roles)


def weights_dtype(weights: Path) -> torch.dtype:
    """The dtype the loop saved the trainee in (--save-dtype)."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as file:
        first = next(iter(file.keys()))  # noqa: SIM118 - safe_open has no iteration
        dtype: torch.dtype = file.get_tensor(first).dtype
        return dtype

