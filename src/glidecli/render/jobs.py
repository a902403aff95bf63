"""What the render_* functions take and give back: the stages to run, the jobs (one picture
each), the options every render shares, and the finished pictures with their records.
render/engine.py re-exports these: the Python API lives there."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..files.record import PictureRecord
from . import defaults
from .pipeline import SamplerChoice
from .prompt_syntax import Emphasis
from .session import Reporter

# --- what to render ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One diffusion stage: which manifest model, how to sample it, how hard to guide it."""

    model: str
    sampler: SamplerChoice = SamplerChoice()
    scale: float = 1.0  # classifier-free guidance; 1 runs the conditional model alone
    temperature: float = 1.0  # multiplies the starting noise (defaults.UPSAMPLE_TEMPERATURE to upsample)
    # The pictures' sides when not the model's training size (render/sizes.py says which work).
    width: int | None = None
    height: int | None = None

    @classmethod
    def of(cls, stage: defaults.StageDefaults) -> Stage:
        """A command's default stage (render/defaults.py)."""
        return cls(stage.model, SamplerChoice(stage.sampler, stage.steps), scale=stage.scale, temperature=stage.temperature)


DEFAULT_BASE = Stage.of(defaults.GENERATE_BASE)
DEFAULT_UPSAMPLE = Stage.of(defaults.GENERATE_UPSAMPLE)
REFERENCE_BASE = Stage.of(defaults.REFERENCE_BASE)
REFERENCE_UPSAMPLE = Stage.of(defaults.REFERENCE_UPSAMPLE)
DEFAULT_INPAINT_BASE = Stage.of(defaults.INPAINT_BASE)
DEFAULT_INPAINT_UPSAMPLE = Stage.of(defaults.INPAINT_UPSAMPLE)


@dataclass(frozen=True)
class Job:
    """One picture: its prompt, its own seed and its output index. The prompt is read in
    A1111's language (render/prompt_syntax.py) unless `literal`, its weights acting in the
    `emphasis` way; `template` is the prompt with wildcards it was resolved from
    (request/wildcards.py), None when it had none."""

    prompt: str
    seed: int
    index: int = 0
    negative: str | None = None
    literal: bool = field(default=False, kw_only=True)
    template: str | None = field(default=None, kw_only=True)
    emphasis: Emphasis = field(default=Emphasis.A1111, kw_only=True)  # how its weights act (render/emphasis.py)

    def prompt_reading(self) -> dict[str, Any]:
        """How its prompt is read, as keywords for a job made from it (a walk's frame, a variation)."""
        return {"literal": self.literal, "template": self.template, "emphasis": self.emphasis}


@dataclass(frozen=True)
class WalkJob(Job):
    """A frame of a seed walk: its noise is turned by `angle` from seed's towards seed + 1's
    (diffusion/noise.py); angle 0 is the plain picture of `seed`."""

    angle: float = 0.0


@dataclass(frozen=True)
class BlendJob(Job):
    """A blend picture (render/unclip.py): `mix` 0 is picture A's embedding, 1 is picture B's."""

    mix: float = 0.5


@dataclass(frozen=True)
class VaryJob(Job):
    """A variation moved toward a text diff (render/unclip.py, `TextDiff`): `amount` 0 is the
    picture's own embedding, 1 the normalised difference of the captions' text embeddings."""

    amount: float = 0.5


# --- how to render it -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RenderOptions:
    """What every render_* call takes besides its stages: how many pictures a batch holds
    ("auto": the most that fit the GPU, measured; 1 on the CPU), who hears its warnings and
    progress (None: warnings go to the log), and settings to add to every picture's record
    (the command's name...)."""

    batch_size: int | str = 1
    reporter: Reporter | None = None
    extra_meta: Mapping[str, Any] | None = None

    def with_meta(self, more: Mapping[str, Any]) -> RenderOptions:
        """These options, with `more` settings recorded after the ones they hold."""
        return dataclasses.replace(self, extra_meta={**(self.extra_meta or {}), **more})


DEFAULT_OPTIONS = RenderOptions()


# --- what comes back ----------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedImage:
    """One finished picture, the job it answers, and what its PNG records."""

    image: Image.Image
    job: Job
    record: PictureRecord

    @property
    def meta(self) -> dict[str, Any]:
        """The record as the PNG's JSON holds it (files/pngfile.py writes it); a new dict at
        every call."""
        return self.record.as_meta()
