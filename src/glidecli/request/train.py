"""`glide train`'s requests: one typed, frozen request per family of kinds (GLIDE's U-Nets, a
CLIP of one's own, unCLIP's prior and decoder, unCLIP's super-resolution) and the bare TrainRequest that continues a run
(--resume), each with its checks, whose messages are the one line the CLI shows. The families
share the fields every run takes (TrainRequest) and those of a run that starts (FreshTrainRequest).

train_start.py makes one from the command line's flags and the Trainer that runs it
(train/loop.py). The CLI builds its flags from these Options with their types and limits, so
that the flags are parsed and range-checked as typer always did; the rules between options,
and Hyper's, are checked here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Literal

from ..files.manifest import Manifest, load_manifest
from ..files.roles import Role
from ..nets.config import PredictionName
from ..nets.kinds import ModelKind
from ..render.defaults import DeviceName
from ..train.settings import Hyper, ModelSource, RunPlan
from ..train.vocabulary import AmpName, GlideKind, MixedPrecision, PresetName, SaveDtypeName, TrainKind, UnclipKind
from .commands import uses
from .train_options import (
    BATCH_SIZE,
    CAPTION_DROPOUT,
    CAUSAL_TEXT,
    CLIP,
    CROP_MIN,
    DATA,
    DECODER,
    DEVICE,
    DTYPE,
    EMA,
    GRAD_CHECKPOINTING,
    GRAD_CLIP,
    HIDE_TEXT_PADDING,
    KEEP,
    KIND,
    LOG_EVERY,
    LORA_ALPHA,
    LORA_DROPOUT,
    LORA_RANK,
    LORA_TARGETS,
    LR,
    MIN_SNR,
    MODEL,
    NAME,
    NO_POOLED_TEXT,
    NO_SAMPLES,
    NOISY_SHARE,
    OFFLINE,
    OUT,
    PREDICTION,
    PRESET,
    QUIET,
    RESUME,
    SAMPLE_EVERY,
    SAVE_DTYPE,
    SAVE_EVERY,
    SEED,
    STEPS,
    TEXT_LAYERS,
    TOKENIZER_VOCAB,
    WARMUP,
    WEIGHT_DECAY,
    WEIGHTS,
)
from .values import RequestError

MISSING_MODEL = "missing --model NAME (the model to fine-tune, or with --preset the new model's name)"
RESUME_LEAVES_OUT = (
    "--resume continues the run in --out; leave out --model, --preset, --name, --kind, --prediction, --clip, --decoder"
    " and the text options (--no-pooled-text, --text-layers, --causal-text, --hide-text-padding)"
)
GLIDE_ONLY = "goes with GLIDE's U-Nets (--kind base, upsample and their inpainting kinds)"
# What an option that only some families take says to the others.
ONLY_WITH: dict[str, str] = {
    "clip": "--clip goes with --kind unclip-prior or unclip-decoder",
    "decoder": "--decoder goes with --kind unclip-sr",
    **{name: f"{option.flag} {GLIDE_ONLY}" for name, option in
       (("no_pooled_text", NO_POOLED_TEXT), ("text_layers", TEXT_LAYERS), ("causal_text", CAUSAL_TEXT), ("hide_text_padding", HIDE_TEXT_PADDING))},
}


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """What every run takes: the data, the output folder, the optimization (None: the kind's
    default, Hyper's), the checkpoints and samples, and the machine. On its own (resume=True)
    it continues the run in `out`, whose checkpoint says what it trains; a run that starts is
    one of the families below."""

    data: Path = uses(DATA, MISSING)
    out: Path = uses(OUT, MISSING)
    steps: int = uses(STEPS, 1000)
    # The optimization: Hyper's fields, by their names.
    batch_size: int | None = uses(BATCH_SIZE, None)
    lr: float | None = uses(LR, None)
    weight_decay: float | None = uses(WEIGHT_DECAY, None)
    ema: float | None = uses(EMA, None)
    warmup: int | None = uses(WARMUP, None)
    grad_clip: float | None = uses(GRAD_CLIP, None)
    caption_dropout: float | None = uses(CAPTION_DROPOUT, None)
    crop_min: float | None = uses(CROP_MIN, None)
    min_snr: float | None = uses(MIN_SNR, None)
    noisy_share: float | None = uses(NOISY_SHARE, None)
    seed: int | None = uses(SEED, None)
    # Checkpoints and samples.
    save_every: int = uses(SAVE_EVERY, 500)
    keep: int = uses(KEEP, 2)
    sample_every: int = uses(SAMPLE_EVERY, 0)
    no_samples: bool = uses(NO_SAMPLES, False)
    log_every: int = uses(LOG_EVERY, 50)
    resume: bool = uses(RESUME, False)
    save_dtype: SaveDtypeName | None = uses(SAVE_DTYPE, None)
    # The machine and the weights.
    device: DeviceName = uses(DEVICE, "auto")
    dtype: AmpName = uses(DTYPE, "auto")
    grad_checkpointing: bool = uses(GRAD_CHECKPOINTING, False)
    weights: Path | None = uses(WEIGHTS, None)
    offline: bool = uses(OFFLINE, False)
    quiet: bool = uses(QUIET, False)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """RequestError for settings no run can use, in the order the command line always checked them."""
        try:
            self.hyper("fp32" if self.dtype == "auto" else self.dtype).check()
        except ValueError as error:
            raise RequestError(str(error)) from None
        self.check_source()

    def check_source(self) -> None:
        """That the request says what to train: on its own, only a resumed run's checkpoint does."""
        if not self.resume:
            raise RequestError(MISSING_MODEL)

    def hyper_defaults(self) -> dict[str, Any]:
        """Where this family's optimization differs from Hyper's defaults."""
        return {}

    def hyper_given(self) -> dict[str, Any]:
        """The optimization settings given (a resumed run's must agree with them), "amp" for --dtype."""
        given = {item.name: getattr(self, item.name, None) for item in dataclasses.fields(Hyper)}
        given["amp"] = None if self.dtype == "auto" else self.dtype
        return {name: value for name, value in given.items() if value is not None}

    def hyper(self, amp: MixedPrecision) -> Hyper:
        """The optimization, with `amp` as the run's autocast dtype (--dtype auto resolved)."""
        return Hyper(**{**self.hyper_defaults(), **self.hyper_given(), "amp": amp})

    def plan(self) -> RunPlan:
        return RunPlan(
            steps=self.steps, save_every=self.save_every, sample_every=self.sample_every, samples=not self.no_samples,
            keep_checkpoints=self.keep, log_every=self.log_every, grad_checkpointing=self.grad_checkpointing, save_dtype=self.save_dtype,
        )

    def source(self) -> tuple[ModelSource, Manifest | None]:
        """What the run trains and the manifest it reads: a resumed run's come from its checkpoint."""
        return ModelSource(name=""), None


@dataclass(frozen=True, kw_only=True)
class FreshTrainRequest(TrainRequest):
    """A run that starts: a manifest model to fine-tune (`model`), or a fresh network of a size
    (`preset`, with `model` its name), of a kind; `name` renames the result, `prediction`
    sets what it predicts."""

    model: str | None = uses(MODEL, None)
    preset: PresetName | None = uses(PRESET, None)
    kind: TrainKind | None = uses(KIND, None)
    name: str | None = uses(NAME, None)
    prediction: PredictionName | None = uses(PREDICTION, None)

    def check_source(self) -> None:
        if self.resume:
            raise RequestError(RESUME_LEAVES_OUT)
        if self.model is None:
            raise RequestError(MISSING_MODEL)
        name = self.new_name
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise RequestError(f"{name!r}: use letters, digits, '-', '_' and '.'", NAME.flag)

    @property
    def new_name(self) -> str:
        """The trained model's name (its file and manifest entry)."""
        return self.name or self.model or ""

    def arch_changes(self) -> dict[str, Any]:
        return {"prediction": self.prediction} if self.prediction is not None else {}

    def fresh_network(self) -> dict[str, Any]:
        """What this family adds to a fresh network's ModelSource."""
        return {}

    def source(self) -> tuple[ModelSource, Manifest | None]:
        """A fresh network of the preset, or the manifest model to fine-tune, of a kind it can become."""
        if self.preset is not None:
            source = ModelSource(
                name=self.new_name, kind=self.kind or TrainKind.BASE, preset=self.preset, arch_changes=self.arch_changes(), **self.fresh_network()
            )
            return source, None
        manifest = load_manifest(self.weights)
        model = self.model or ""
        entry = manifest.model(model)
        if self.kind is not None and self.kind not in (entry.kind, f"{entry.kind}-inpaint"):
            inpainting = "" if entry.kind.endswith("-inpaint") else f" or, to start an inpainting model, {entry.kind}-inpaint"
            raise RequestError(f"{model!r} is a {entry.kind} model; it trains as {entry.kind}{inpainting}", KIND.flag)
        return ModelSource(name=self.new_name, kind=self.kind or entry.kind, entry=model, arch_changes=self.arch_changes()), manifest


@dataclass(frozen=True, kw_only=True)
class LoraTrainRequest(FreshTrainRequest):
    """A family whose manifest models can also get a LoRA adapter (`lora`, its rank, with
    alpha, dropout and the layers it adapts) instead of a full fine-tune: GLIDE's U-Nets and
    unCLIP's prior and decoder."""

    lora: int | None = uses(LORA_RANK, None)
    lora_alpha: float | None = uses(LORA_ALPHA, None)
    lora_dropout: float | None = uses(LORA_DROPOUT, None)
    lora_targets: str = uses(LORA_TARGETS, "attention")

    @property
    def kind_given(self) -> bool:
        """Whether the request names a kind of its own (a LoRA run keeps the model's)."""
        return self.kind is not None

    def check_source(self) -> None:
        super().check_source()
        if self.lora is None:
            if self.lora_alpha is not None or self.lora_dropout is not None or self.lora_targets != "attention":
                raise RequestError("--lora-alpha, --lora-dropout and --lora-targets go with --lora RANK")
            return
        if self.preset is not None or self.prediction is not None or self.kind_given:
            raise RequestError("--lora trains an adapter of a manifest --model as it is: leave out --preset, --kind and --prediction", LORA_RANK.flag)
        if self.lora < 1:
            raise RequestError(f"{self.lora} is not a rank (1 or more)", LORA_RANK.flag)

    @property
    def new_name(self) -> str:
        """A LoRA run's adapter is named apart from its base model (both are in its manifest)."""
        if self.lora is not None and self.name is None and self.model:
            return f"{self.model}-lora"
        return super().new_name

    def adapter_source(self, source: ModelSource, manifest: Manifest | None) -> ModelSource:
        """`source` training a LoRA adapter of its entry: the layers --lora-targets names,
        which must be in the model, and the adapter's settings."""
        from ..nets.checkpoint import build_on_meta
        from ..nets.lora import matching_paths
        from ..train.lora_recipe import target_names

        rank = self.lora
        if rank is None:
            return source
        targets = target_names(self.lora_targets)
        entry = manifest.model(source.entry or "") if manifest is not None else None
        if not targets or (entry is not None and not matching_paths(build_on_meta(entry.kind, entry.arch), targets)):
            raise RequestError(f"{self.lora_targets!r} names no layer of {self.model!r}", LORA_TARGETS.flag)
        settings = {"rank": rank, "alpha": self.lora_alpha if self.lora_alpha is not None else float(rank),
                    "dropout": self.lora_dropout or 0.0, "targets": list(targets)}
        return dataclasses.replace(source, lora=settings)


@dataclass(frozen=True, kw_only=True)
class GlideTrainRequest(LoraTrainRequest):
    """GLIDE's U-Nets (kind None: base for a preset, the manifest model's own kind to fine-tune);
    a fresh one gets a tokenizer of its own, built from the captions."""

    kind: GlideKind | None = uses(KIND, None)
    tokenizer_vocab: int = uses(TOKENIZER_VOCAB, 512)
    # How the text reaches the U-Net (UNetConfig's xf_pooled, xf_layers, xf_causal, xf_attend_padding).
    no_pooled_text: bool = uses(NO_POOLED_TEXT, False)
    text_layers: int | None = uses(TEXT_LAYERS, None)
    causal_text: bool = uses(CAUSAL_TEXT, False)
    hide_text_padding: bool = uses(HIDE_TEXT_PADDING, False)

    def check_source(self) -> None:
        super().check_source()
        text_options = {NO_POOLED_TEXT: self.no_pooled_text, TEXT_LAYERS: self.text_layers is not None,
                        CAUSAL_TEXT: self.causal_text, HIDE_TEXT_PADDING: self.hide_text_padding}
        given = [option for option, on in text_options.items() if on]
        if self.lora is not None and given:
            raise RequestError(f"--lora adapts a model as it is: leave out {given[0].flag}", LORA_RANK.flag)
        if self.text_layers is not None and self.preset is None:
            raise RequestError("--text-layers sets a fresh network's text transformer: give --preset (a model's layers are its own)", TEXT_LAYERS.flag)

    def arch_changes(self) -> dict[str, Any]:
        """--prediction's change, and the text options' UNetConfig settings."""
        changes = super().arch_changes()
        if self.no_pooled_text:
            changes["xf_pooled"] = False
        if self.text_layers is not None:
            changes["xf_layers"] = self.text_layers
        if self.causal_text:
            changes["xf_causal"] = True
        if self.hide_text_padding:
            changes["xf_attend_padding"] = False
        return changes

    def fresh_network(self) -> dict[str, Any]:
        return {"tokenizer_vocab": self.tokenizer_vocab}

    def source(self) -> tuple[ModelSource, Manifest | None]:
        source, manifest = super().source()
        if self.lora is None:
            return source, manifest
        return self.adapter_source(source, manifest), manifest


@dataclass(frozen=True, kw_only=True)
class ClipTrainRequest(FreshTrainRequest):
    """A CLIP of one's own (open_clip's tokenizer), for unCLIP's prior and decoder to learn from."""

    kind: Literal[TrainKind.CLIP] = uses(KIND, TrainKind.CLIP)


@dataclass(frozen=True, kw_only=True)
class UnclipTrainRequest(LoraTrainRequest):
    """unCLIP's prior or decoder, learning from `clip` (an openclip entry of the manifest); with
    `lora`, an adapter of a manifest prior or decoder (the CLIP: `clip`, else the manifest's
    clip role)."""

    kind: UnclipKind = uses(KIND, MISSING)
    clip: str | None = uses(CLIP, None)

    @property
    def kind_given(self) -> bool:
        return False  # the family's kind: --kind's, or the --lora model's own (train_request)

    def check_source(self) -> None:
        super().check_source()
        if self.clip is None and self.lora is None:
            raise RequestError(f"--kind {self.kind} needs --clip NAME: the CLIP (an openclip entry of --weights) it learns from")

    def hyper_defaults(self) -> dict[str, Any]:
        # The decoder drops the caption for half of its examples (DALL-E 2), Karlo's prior for 20%.
        return {"caption_dropout": 0.5} if self.kind == TrainKind.UNCLIP_DECODER else {}

    def fresh_network(self) -> dict[str, Any]:
        return {"clip": self.clip}

    def source(self) -> tuple[ModelSource, Manifest | None]:
        manifest = load_manifest(self.weights)  # it holds the CLIP
        if self.lora is None:
            source, _ = super().source()  # a manifest model is refused by the recipe: these train fresh networks only
            return source, manifest
        entry = manifest.model(self.model or "")
        if entry.kind != ModelKind(self.kind):
            raise RequestError(f"{entry.name!r} is a {entry.kind} model; --lora trains an adapter of it as it is", KIND.flag)
        role = manifest.roles().choices[Role.CLIP]
        clip = self.clip or (role.model if role.present else None)
        if clip is None:
            raise RequestError(f"--lora of {self.kind} {entry.name!r} needs the CLIP it learns from: --clip NAME, or a clip role in {manifest.path}")
        source = ModelSource(name=self.new_name, kind=entry.kind, entry=entry.name, clip=clip)
        return self.adapter_source(source, manifest), manifest


@dataclass(frozen=True, kw_only=True)
class SuperResTrainRequest(FreshTrainRequest):
    """unCLIP's super-resolution for the pictures of `decoder` (an unclip-decoder entry of the manifest)."""

    kind: Literal[TrainKind.UNCLIP_SR] = uses(KIND, TrainKind.UNCLIP_SR)
    decoder: str | None = uses(DECODER, None)

    def check_source(self) -> None:
        super().check_source()
        if self.decoder is None:
            raise RequestError(f"--kind {self.kind} needs --decoder NAME: the unCLIP decoder (an unclip-decoder entry of --weights) it enlarges")

    def fresh_network(self) -> dict[str, Any]:
        return {"decoder": self.decoder}

    def source(self) -> tuple[ModelSource, Manifest | None]:
        manifest = load_manifest(self.weights)  # it holds the decoder
        source, _ = super().source()  # a manifest model is refused by the recipe: it trains a fresh network only
        return source, manifest


# The families in the order their options' defaults are taken for the command line.
FAMILIES: tuple[type[TrainRequest], ...] = (GlideTrainRequest, UnclipTrainRequest, SuperResTrainRequest, ClipTrainRequest, TrainRequest)
FAMILY_OF_KIND: dict[TrainKind, type[TrainRequest]] = {
    TrainKind.CLIP: ClipTrainRequest, TrainKind.UNCLIP_PRIOR: UnclipTrainRequest, TrainKind.UNCLIP_DECODER: UnclipTrainRequest,
    TrainKind.UNCLIP_SR: SuperResTrainRequest,
}
