"""What a picture records in its PNG: the typed record behind the `glide` JSON chunk and
A1111's `parameters` text (pngfile.py writes both from it).

A record is its job (prompt, seed, index...), its size, the settings of each stage and of
the command in the order they are recorded, where it was made, the command's extras and
the best-of pick. Each stage's keys carry its role's prefix ("" for the base model,
"upsample_", "prior_", "decoder_", "sr_"), computed here and nowhere else: `glide info`,
`--from` (request/replay.py) and the A1111 text read these keys back, so `as_meta` must
keep every key, value and their order exactly as glide has always written them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# A command's own settings (its source picture, canvas, CLIP steering...) under their own keys.
Settings = Mapping[str, Any]


class StageRole(StrEnum):
    """Which stage of a command a recorded setting belongs to."""

    BASE = "base"
    UPSAMPLE = "upsample"
    PRIOR = "prior"
    DECODER = "decoder"
    SR = "sr"

    @property
    def prefix(self) -> str:
        """The prefix of the role's keys: none for the base model, which came first."""
        return "" if self is StageRole.BASE else f"{self.value}_"

    def key(self, setting: StageKey) -> str:
        """The record key of one of the stage's settings, e.g. "upsample_steps"."""
        return f"{self.prefix}{setting.value}"


class StageKey(StrEnum):
    """The settings a stage records, by the key they take (after the role's prefix)."""

    MODEL = "model"
    SAMPLER = "sampler"
    STEPS = "steps"
    ETA = "eta"
    THRESHOLD = "threshold"
    MODEL_HASH = "model_hash"
    SCALE = "scale"
    TEMPERATURE = "temp"


@dataclass(frozen=True, kw_only=True)
class StageRecord:
    """One stage's model and sampling: eta, threshold and the hash when set; the guidance
    scale and starting-noise temperature for the stages that record them."""

    role: StageRole
    model: str
    sampler: str
    steps: str
    eta: float = 0.0
    threshold: float | None = None
    model_hash: str | None = None
    scale: float | None = None
    temperature: float | None = None

    def fields(self) -> dict[str, Any]:
        key = self.role.key
        record: dict[str, Any] = {key(StageKey.MODEL): self.model, key(StageKey.SAMPLER): self.sampler, key(StageKey.STEPS): self.steps}
        if self.eta:
            record[key(StageKey.ETA)] = self.eta
        if self.threshold is not None:
            record[key(StageKey.THRESHOLD)] = self.threshold
        if self.model_hash:
            record[key(StageKey.MODEL_HASH)] = self.model_hash
        if self.scale is not None:
            record[key(StageKey.SCALE)] = self.scale
        if self.temperature is not None:
            record[key(StageKey.TEMPERATURE)] = self.temperature
        return record


@dataclass(frozen=True, kw_only=True)
class WalkRecord:
    """A seed walk's frame: the seed its noise turns towards, and how far (radians)."""

    seed: int
    angle: float


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """The job a picture answers: its prompt (with its components when composed with AND),
    negative prompt, seed and output index; a seed walk's frame; a blend's mix or a text
    diff's amount (which the record holds last: PictureRecord.as_meta)."""

    prompt: str
    template: str | None = None  # the prompt with wildcards, when it had some
    components: list[dict[str, Any]] | None = None
    negative_prompt: str | None = None
    literal: bool = False  # --literal-prompt: the prompt was read without A1111's syntax
    emphasis: str | None = None  # --emphasis, when not A1111's: how the prompt's weights acted
    seed: int
    index: int
    walk: WalkRecord | None = None
    mix: float | None = None
    amount: float | None = None

    def fields(self) -> dict[str, Any]:
        """The job's keys that open the record (all but the mix and the amount)."""
        record: dict[str, Any] = {"prompt": self.prompt}
        if self.template is not None:
            record["prompt_template"] = self.template
        if self.components is not None:
            record["components"] = self.components
        if self.negative_prompt:
            record["negative_prompt"] = self.negative_prompt
        if self.literal:
            record["literal_prompt"] = True
        if self.emphasis is not None:
            record["emphasis"] = self.emphasis
        record.update(seed=self.seed, index=self.index)
        if self.walk is not None:
            record.update(walk_seed=self.walk.seed, walk_angle=self.walk.angle)
        return record


@dataclass(frozen=True, kw_only=True)
class MadeWith:
    """Where a picture was made: the same device, dtype and version give it again, bit for bit."""

    device: str
    dtype: str
    glidecli_version: str

    def fields(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, "glidecli_version": self.glidecli_version}


@dataclass(frozen=True, kw_only=True)
class PictureRecord:
    """Everything a picture records. `size` is its side, or (width, height); None where
    the settings give the picture's width and height (an outpainted canvas). `settings`
    hold the stages' and the command's settings in the order recorded; `extras` the
    command's name and whatever its caller adds; `pick` how best of N chose it."""

    job: JobRecord
    size: int | tuple[int, int] | None = None
    settings: tuple[StageRecord | Settings, ...] = ()
    made_with: MadeWith
    extras: Settings = field(default_factory=dict)
    pick: Settings | None = None

    def as_meta(self) -> dict[str, Any]:
        """The record as the PNG's JSON holds it. Later parts update earlier ones, so a key
        given twice keeps its first place and its last value."""
        record = self.job.fields()
        if self.size is not None:
            record["size"] = self.size if isinstance(self.size, int) else list(self.size)
        for part in self.settings:
            record.update(part.fields() if isinstance(part, StageRecord) else part)
        record.update(self.made_with.fields())
        record.update(self.extras)
        if self.pick is not None:
            record.update(self.pick)
        if self.job.mix is not None:
            record["mix"] = self.job.mix
        if self.job.amount is not None:
            record["amount"] = self.job.amount
        return record
