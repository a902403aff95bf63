"""Where a `glide train` run starts (loop.py): on --resume, the last checkpoint's state.json
and the settings it fixes; on a fresh run, an output folder that holds nothing the run
would replace and, when fine-tuning, a manifest entry of a kind it can become; then the
network it starts from. Also TrainingError, which these checks raise and the loop too."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..files.manifest import Manifest, ModelEntry
from ..nets.checkpoint import build_network, load_network
from ..nets.config import UNetConfig, unet_defaults
from ..nets.kinds import UNET_KINDS, ModelKind
from ..nets.tokenizer import GlideTokenizer
from ..nets.unet import Text2ImUNet
from ..render.shard import Ranks
from .dataset import Dataset, build_caption_tokenizer
from .settings import PRESETS, Hyper, ModelSource, preset_config
from .state import RESUMABLE_VERSIONS, STATE_VERSION, init_fresh_, inpainting_weights, network_as, network_from_weights
from .vocabulary import DEFAULT_PRESET


class TrainingError(Exception):
    """A training run that cannot start or continue; the message is one line."""


def check_fresh_folder(out: Path, existing: list[tuple[int, Path]], name: str) -> None:
    """A fresh run neither continues a run in `out` nor, when it exports at the end, replaces
    a manifest or weights of the user's."""
    if existing:
        raise TrainingError(
            f"{out} already holds a training run (checkpoint step {existing[-1][0]});"
            " use --resume to continue it or choose another --out"
        )
    taken = [file for file in ("weights.toml", f"{name}.safetensors") if os.path.lexists(out / file)]
    if taken:
        raise TrainingError(
            f"{out} already holds {' and '.join(taken)}, which this run would replace; choose another --out"
        )


def check_kind_and_dtype(source: ModelSource, hyper: Hyper, device: torch.device) -> None:
    if source.kind not in UNET_KINDS:
        raise TrainingError(f"training {source.kind} models is not supported; train one of {', '.join(UNET_KINDS)}")
    if hyper.amp == "fp16" and device.type == "cpu":
        raise TrainingError("fp16 mixed precision needs a GPU; use --dtype fp32 or bf16 on the CPU")


def read_state(checkpoint: Path) -> Any:
    try:
        return json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainingError(f"cannot read {checkpoint / 'state.json'}: {error}") from None


def resumed_settings(
    state: Any, hyper: Hyper, hyper_given: set[str] | None, checkpoint: Path, message: Callable[[str], None]
) -> tuple[Hyper, ModelSource]:
    """The run's settings from a checkpoint's state. Version 1 (before torchrun) differs only
    in how examples drew their randomness, so it resumes, with a note that the batches
    from here on are not those the earlier version would have drawn."""
    version = state.get("version") if isinstance(state, dict) else None
    if version not in RESUMABLE_VERSIONS:
        raise TrainingError(f"{checkpoint} was not written by this version of glide train")
    try:
        saved = Hyper(**state["hyper"])
        saved.check()  # values of the wrong type or range: a hand-edited or damaged file
        source = ModelSource(**state["source"])
        if not isinstance(state["step"], int) or not isinstance(state["data"], dict):
            raise TypeError("step or data")
        if not isinstance(state["data"]["fingerprint"], str) or not isinstance(state["data"]["examples"], int):
            raise TypeError("data")
    except (KeyError, TypeError, ValueError) as error:
        raise TrainingError(f"{checkpoint / 'state.json'} is incomplete or damaged ({error})") from None
    if version < STATE_VERSION:
        message(
            f"note: {checkpoint} was written by an earlier glide train (state version {version});"
            " it resumes with this version's data draws, so its batches from here on differ from the earlier version's"
        )
    return _resumed_hyper(hyper, saved, hyper_given), source


def _resumed_hyper(given: Hyper, stored: Hyper, names: set[str] | None) -> Hyper:
    """The run's settings; those given explicitly must agree with them."""
    for item in dataclasses.fields(Hyper):
        if names is not None and item.name not in names:
            continue
        mine, theirs = getattr(given, item.name), getattr(stored, item.name)
        if mine != theirs:
            option = {"amp": "dtype"}.get(item.name, item.name.replace("_", "-"))
            raise TrainingError(
                f"--{option} {mine} differs from the run being resumed ({theirs}); "
                "an exact resume keeps the run's settings (leave the option out)"
            )
    return stored


# What a fine-tuned model's architecture may change: what it predicts, (xf_pooled off) dropping
# the pooled text projection, and the masks of its text's attention; every other weight keeps its shape.
FINE_TUNE_CHANGES = frozenset({"prediction", "xf_pooled", "xf_causal", "xf_attend_padding"})
POOLED_PROJECTION = "transformer_proj."  # the pooled text path's layer in a U-Net's weights


def fine_tuned_entry(source: ModelSource, manifest: Manifest | None) -> ModelEntry | None:
    """The manifest entry a fresh run fine-tunes (None: it starts from a preset), checked
    against what the run would make of it."""
    if source.entry is None:
        return None
    if manifest is None:
        raise TrainingError("fine-tuning a manifest model needs the manifest")
    entry = manifest.model(source.entry)
    if set(source.arch_changes) - FINE_TUNE_CHANGES:
        raise TrainingError(
            "a fine-tuned model keeps its architecture; only its prediction (eps or v) and its text's masks can change, and its pooled text path go"
        )
    if source.kind not in (entry.kind, f"{entry.kind}-inpaint"):
        raise TrainingError(
            f"model {source.entry!r} is of kind {entry.kind}; it can be fine-tuned as {entry.kind}"
            + ("" if entry.kind.endswith("-inpaint") else f" or started as {entry.kind}-inpaint")
        )
    return entry


def run_image_size(source: ModelSource, state: dict | None, entry) -> int:
    if state is not None:
        return int(state["arch"]["image_size"])
    if entry is not None:
        return entry.arch.image_size
    preset = PRESETS.get(source.kind.removesuffix("-inpaint"), {}).get(source.preset or DEFAULT_PRESET)
    default = unet_defaults(source.kind if source.kind in UNET_KINDS else ModelKind.BASE).image_size
    return int(source.arch_changes.get("image_size", (preset or {}).get("image_size", default)))


def prepare_model(
    source: ModelSource, seed: int, dataset: Dataset, ranks: Ranks, tokenizer_path: Path, manifest, entry, state, offline
) -> tuple[UNetConfig, Text2ImUNet]:
    """The network's config and its starting weights: empty (on the meta device) for a
    checkpoint to fill, a manifest entry's, or a fresh network's. Rank 0 writes the tokenizer
    to `tokenizer_path` (copied from the entry's, or built from the captions)."""
    if state is not None:  # the network comes from the checkpoint, the tokenizer from the folder
        cfg = UNetConfig.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})
        with torch.device("meta"):
            return cfg, network_as(Text2ImUNet, build_network(source.kind, cfg))
    if entry is not None:
        from ..files.fetch import fetch_entry

        path = fetch_entry(entry, offline=offline)
        model = load_network(entry.kind, entry.arch, path, "cpu", torch.float32)
        tokenizer_file = fetch_entry(manifest.tokenizer(entry.tokenizer), offline=offline)
        if ranks.is_main:
            shutil.copyfile(tokenizer_file, tokenizer_path)
        # arch_changes may only say what the outputs predict, drop the pooled text path or mask the text's attention.
        cfg = dataclasses.replace(entry.arch, inpaint=source.kind.endswith("-inpaint"), **source.arch_changes)
        weights = model.state_dict()
        if not cfg.xf_pooled:
            weights = {key: value for key, value in weights.items() if not key.startswith(POOLED_PROJECTION)}
        if cfg.inpaint and not entry.arch.inpaint:  # a new inpainting model from a base or upsampler
            weights = inpainting_weights(weights, entry.arch)
        return cfg, network_as(Text2ImUNet, network_from_weights(source.kind, cfg, weights, torch.device("cpu")))
    if ranks.is_main:
        build_caption_tokenizer([e.caption for e in dataset.examples], tokenizer_path, source.tokenizer_vocab)
    vocab = GlideTokenizer.from_file(tokenizer_path).max_token + 1
    try:
        cfg = preset_config(source.kind, source.preset or DEFAULT_PRESET, n_vocab=vocab, **source.arch_changes)
    except (TypeError, ValueError) as error:
        raise TrainingError(f"invalid model settings: {' '.join(str(error).split())}") from None
    return cfg, init_fresh_(network_as(Text2ImUNet, build_network(source.kind, cfg)), seed)
