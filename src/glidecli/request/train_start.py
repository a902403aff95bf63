"""From `glide train`'s flags to a run: the request the flags make (`train_request`, its family
chosen by --kind or by the adapted model's kind), the command line's options (`command_options`),
the Trainer that runs a request on this rank (`start_training`) and its end (`finish_training`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..files.manifest import load_manifest
from ..nets.kinds import ModelKind
from ..train.vocabulary import MixedPrecision, TrainKind
from .train import FAMILIES, FAMILY_OF_KIND, ONLY_WITH, RESUME_LEAVES_OUT, GlideTrainRequest, TrainRequest
from .train_options import HELP_ORDER, KIND
from .values import Option, RequestError

if TYPE_CHECKING:
    from ..render.shard import Ranks
    from ..train.loop import Progress, Trainer, TrainResult


def command_options() -> list[tuple[str, Option, Any]]:
    """Every option of `glide train` once, in the order its --help lists them, as (field name,
    Option, default on the command line): the first family's that has it, MISSING if required."""
    declared: dict[Option, tuple[str, Any]] = {}
    for family in FAMILIES:
        for item in dataclasses.fields(family):
            declared.setdefault(item.metadata["option"], (item.name, item.default))
    return [(declared[option][0], option, declared[option][1]) for option in HELP_ORDER]


def train_request(flags: Mapping[str, Any]) -> TrainRequest:
    """The request for `glide train`'s flags (field name -> value; None: not given): with
    --resume the bare TrainRequest, else the family of --kind (none: GLIDE's). An option its
    family has no field for must not be given, except one that always has a value
    (--tokenizer-vocab), which means nothing to the other families."""
    options = {name: option for name, option, _ in command_options()}
    unknown = sorted(set(flags) - set(options))
    if unknown:
        raise RequestError(f"glide train has no option {unknown[0]!r}")
    kind = _kind(flags.get("kind")) or _adapted_kind(flags)
    family: type[TrainRequest] = GlideTrainRequest if kind is None else FAMILY_OF_KIND.get(kind, GlideTrainRequest)
    if flags.get("resume"):
        family = TrainRequest
    fields = {item.name for item in dataclasses.fields(family)}
    request = family(**{name: value for name, value in {**flags, "kind": kind}.items() if name in fields})
    refused = [name for name, value in flags.items() if name not in fields and value is not None and options[name].optional]
    if refused:  # a fresh run's family lacks only unCLIP's --clip or --decoder among those
        if family is TrainRequest:
            raise RequestError(RESUME_LEAVES_OUT)
        raise RequestError(ONLY_WITH.get(refused[0]) or f"{options[refused[0]].flag} does not go with --kind {kind}")
    return request


def _adapted_kind(flags: Mapping[str, Any]) -> TrainKind | None:
    """The kind of the model a fresh `--lora` run without --kind adapts, where it picks the
    family (unCLIP's prior and decoder); None for the others, or a model the family's own
    checks will report on."""
    from ..files.manifest import ManifestError

    if flags.get("lora") is None or flags.get("resume") or not isinstance(flags.get("model"), str):
        return None
    try:
        entry = load_manifest(flags.get("weights")).models.get(flags["model"])
    except ManifestError:
        return None
    return TrainKind(entry.kind) if entry is not None and entry.kind in (ModelKind.UNCLIP_PRIOR, ModelKind.UNCLIP_DECODER) else None


def _kind(value: Any) -> TrainKind | None:
    try:
        return None if value is None else TrainKind(value)
    except ValueError:
        raise RequestError(f"{value!r} is not one of {', '.join(map(repr, KIND.choices))}", KIND.flag) from None


def start_training(request: TrainRequest, ranks: Ranks, progress: Progress, command_line: str = "") -> Trainer:
    """The Trainer of `request` on this rank's device, with the process group of a torchrun
    launch joined: what it trains is settled here (a manifest model must be of a kind it can
    become: RequestError), the data set, the folder and the network by the Trainer."""
    import torch

    from ..render.shard import join_group, rank_device
    from ..train.loop import Trainer

    device = rank_device(request.device, ranks)
    amp: MixedPrecision = "fp32" if request.dtype == "auto" else request.dtype
    if request.dtype == "auto" and device.type == "cuda":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    hyper = request.hyper(amp)
    source, manifest = request.source()
    join_group(ranks, "nccl" if device.type == "cuda" else "gloo")
    return Trainer(
        request.data, request.out, source, hyper, request.plan(), manifest=manifest, resume=request.resume, device=device,
        offline=request.offline or None, progress=progress, command_line=command_line, hyper_given=set(request.hyper_given()), ranks=ranks,
    )


def finish_training(trainer: Trainer) -> TrainResult | None:
    """Run `trainer` to its last step and leave the process group: the result on rank 0, None on
    the others. Stopped by Ctrl-C (after a checkpoint), rank 0 raises TrainingStopped, whose
    message says how to resume, and the others return None."""
    from ..render.shard import leave_group
    from ..train.loop import TrainingStopped

    try:
        result = trainer.run()
    except TrainingStopped:
        leave_group()
        if trainer.ranks.is_main:
            raise
        return None
    leave_group()
    return result if trainer.ranks.is_main else None
