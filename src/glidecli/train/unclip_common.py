"""What unCLIP's recipes share (unclip_recipes.py's prior and decoder, unclip_sr.py's
super-resolution): the CLIP and its view of the data set, the entries a run used (kept for
--resume), the size presets' checks, the schedule and each example's draws, and for a LoRA run
(lora_recipe.py) the manifest model's settings checked against the CLIP, the prior's embedding
statistics and the run manifest's entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..diffusion.schedule import Schedule
from ..files.manifest import Manifest, ModelEntry, load_manifest
from ..files.roles import Role
from ..nets.kinds import ModelKind
from .data import DataOrder, step_examples
from .embeddings import ClipData, clip_config, clip_data, clip_entry
from .run_manifest import made_entry, manifest_roles, run_roles, used_entry, write_run_manifest
from .start import TrainingError
from .state import arch_dict, network_from_weights
from .vocabulary import DEFAULT_PRESET, PresetName

# A recipe's methods take the Trainer (loop.py) as `trainer: Any`.

USED = "used-models.toml"  # the entries a run reads, kept in its folder for --resume


def preset_values(presets: dict[PresetName, dict[str, Any]], preset: PresetName | None, kind: str) -> dict[str, Any]:
    if (preset or DEFAULT_PRESET) not in presets:
        raise TrainingError(f"unknown preset {preset!r} for an {kind}; choose one of {', '.join(presets)}")
    return presets[preset or DEFAULT_PRESET]


def checked_config(make, values: dict, changes: dict, kind: str):
    try:
        return make(**{**values, **changes})
    except (TypeError, ValueError) as error:
        raise TrainingError(f"invalid {kind} settings: {' '.join(str(error).split())}") from None


class UnclipRecipe:
    """What unCLIP's recipes share: the CLIP and its embeddings (prior, decoder), the kept
    entries, the schedule and the examples' draws (also the SR's, unclip_sr.py)."""

    kind = ""
    manifest: Any = None  # the Manifest the run reads (on --resume, the one it kept); set by _clip

    def check(self, trainer: Any) -> None:
        source = trainer.source
        if source.entry is not None and source.lora is None:
            raise TrainingError(
                f"--kind {self.kind} trains a fresh network: give --preset micro, tiny or small, not --model of the manifest"
                " (or --lora RANK to train an adapter of it)"
            )
        if trainer.hyper.amp == "fp16" and trainer.device.type == "cpu":
            raise TrainingError("fp16 mixed precision needs a GPU; use --dtype fp32 or bf16 on the CPU")

    def _clip(self, trainer: Any, manifest, state, offline) -> tuple[Any, ClipData]:
        source = trainer.source
        if state is not None:
            manifest = load_manifest(trainer.out / USED)
        if not source.clip:
            raise TrainingError(f"--kind {self.kind} needs --clip NAME: the CLIP (an openclip entry of --weights) it learns from")
        if manifest is None:
            raise TrainingError(f"--kind {self.kind} needs the manifest holding CLIP {source.clip} (--weights)")
        self.manifest = manifest
        entry = clip_entry(manifest, source.clip)
        return entry, clip_data(trainer.dataset, entry, trainer.device, offline)

    def _keep_used(self, trainer: Any, entries: list) -> None:
        """Keeps the entries the run reads, with the roles the manifest read gave them, so that
        a resumed run names the same models in its manifest as an uninterrupted one."""
        self.used = entries
        if trainer.ranks.is_main:
            roles = run_roles([(e.name, e.kind) for e in entries], manifest_roles(self.manifest))
            write_run_manifest(trainer.out / USED, [used_entry(e, trainer.out) for e in entries], ["What this run reads; kept for --resume."], roles)

    def network(self, kind: str, cfg, weights: dict[str, Tensor], device: torch.device) -> nn.Module:
        return network_from_weights(kind, cfg, weights, device)

    def _adapted(self, entry: ModelEntry | None, state, clip: ModelEntry) -> Any:
        """A LoRA run's network settings: the entry's (fresh) or the checkpoint's (resume),
        checked against the CLIP it learns from."""
        cfg: Any = entry.arch if entry is not None else self._config_of_state(state)
        clip_arch = clip_config(clip, clip.name)
        width, text_ctx = clip_arch.embed_dim, clip_arch.text_ctx
        if cfg.clip_dim != width:
            raise TrainingError(f"the {self.kind} reads CLIP embeddings of width {cfg.clip_dim}; CLIP {clip.name} makes {width}")
        if self.kind == ModelKind.UNCLIP_PRIOR and cfg.text_ctx != text_ctx:
            raise TrainingError(f"the {self.kind} reads {cfg.text_ctx} text tokens; CLIP {clip.name} gives {text_ctx}")
        return cfg

    def _config_of_state(self, state) -> Any:
        raise NotImplementedError

    def _readers(self, kind: ModelKind, width: int) -> list[ModelEntry]:
        """The manifest's models of `kind` that read this CLIP's embeddings, with their stats
        (a prior's `NAME-stats` entry): a run's manifest holds them for a whole unCLIP."""
        models = self.manifest.models
        found = [e for e in models.values() if e.kind == kind and e.arch.clip_dim == width]
        return found + [models[f"{e.name}-stats"] for e in list(found) if models.get(f"{e.name}-stats", e).kind == ModelKind.CLIP_STATS]

    def adapter_entries(self, trainer: Any, base_name: str, base_path: Path) -> tuple[list[list[str]], dict[Role, str]]:
        """A LoRA run's manifest but for its adapter: what the run used (the CLIP, the stats,
        the other half of unCLIP) and the base model, with their roles."""
        folder = trainer.out
        blocks = [used_entry(e, folder) for e in self.used]
        blocks.append(made_entry(base_name, self.kind, base_path, arch_dict(trainer.cfg), folder))
        return blocks, run_roles([(e.name, e.kind) for e in self.used] + [(base_name, ModelKind(self.kind))], manifest_roles(self.manifest))

    def truncated(self) -> int:
        return 0  # long captions are refused (embeddings.py)

    def _ready(self, trainer: Any, cfg) -> None:
        """The diffusion schedule and the data order, once the network's settings are known."""
        self.schedule = Schedule.create(cfg.noise_schedule, cfg.diffusion_steps)
        self.order = DataOrder(len(trainer.dataset), trainer.hyper.seed)

    def _draws(self, trainer: Any, step: int) -> tuple[list[int], list[torch.Generator]]:
        """This rank's examples of `step`: their indices and their own generators."""
        examples = step_examples(self.order, trainer.hyper.seed, trainer.hyper.batch_size, step, trainer.part)
        return [index for index, _ in examples], [generator for _, generator in examples]


def stats_entry(manifest: Manifest, prior: str | None) -> ModelEntry:
    """The embedding statistics of manifest prior `prior`: its `NAME-stats` entry, else the
    manifest's clip-stats role; TrainingError when it has neither."""
    models = manifest.models
    paired = models.get(f"{prior}-stats")
    if paired is not None and paired.kind == ModelKind.CLIP_STATS:
        return paired
    role = manifest.roles().choices[Role.CLIP_STATS]
    if role.present:
        return models[role.model]
    raise TrainingError(f"{manifest.path} holds no embedding statistics for prior {prior!r} (an entry {prior}-stats of kind clip-stats, or a clip-stats role)")
