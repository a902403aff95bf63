"""The words of `glide train`, each declared once: the kinds of model it trains, the size
presets of fresh networks and the dtypes of its mixed precision and of the exported weights.
torch-free, so that the request layer and `glide train --help` read them without loading it."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

from ..nets.kinds import ModelKind


class TrainKind(StrEnum):
    """What `glide train --kind` trains; its value is the word the flag takes. Each kind but
    `clip` is the ModelKind of the manifest entry it exports (a CLIP exports an openclip entry)."""

    BASE = ModelKind.BASE.value
    UPSAMPLE = ModelKind.UPSAMPLE.value
    BASE_INPAINT = ModelKind.BASE_INPAINT.value
    UPSAMPLE_INPAINT = ModelKind.UPSAMPLE_INPAINT.value
    CLIP = "clip"
    UNCLIP_PRIOR = ModelKind.UNCLIP_PRIOR.value
    UNCLIP_DECODER = ModelKind.UNCLIP_DECODER.value
    UNCLIP_SR = ModelKind.UNCLIP_SR.value


# The families of kinds, each trained by its own recipe (loop.recipe_for) from its own request
# (request/train.py): GLIDE's U-Nets, unCLIP's prior and decoder, which learn from a CLIP, and
# unCLIP's super-resolution, which enlarges a decoder's pictures (no CLIP: Karlo's SR sees only them).
GlideKind = Literal[TrainKind.BASE, TrainKind.UPSAMPLE, TrainKind.BASE_INPAINT, TrainKind.UPSAMPLE_INPAINT]
UnclipKind = Literal[TrainKind.UNCLIP_PRIOR, TrainKind.UNCLIP_DECODER]

# Sizes of a fresh network (settings.PRESETS, clip_recipe.CLIP_PRESETS, unclip_recipes'); full
# is GLIDE's own, for its U-Nets only.
PresetName = Literal["micro", "tiny", "small", "full"]
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)
DEFAULT_PRESET: PresetName = "tiny"

# Autocast's dtype during a run (Hyper.amp; fp32: off), and --dtype, which may leave it to the device.
MixedPrecision = Literal["fp32", "bf16", "fp16"]
MIXED_PRECISIONS: tuple[MixedPrecision, ...] = get_args(MixedPrecision)
AmpName = Literal["auto", MixedPrecision]
AMP_NAMES: tuple[str, ...] = get_args(AmpName)

# The dtype of the exported weights (--save-dtype).
SaveDtypeName = Literal["fp32", "fp16", "bf16"]
SAVE_DTYPE_NAMES: tuple[SaveDtypeName, ...] = get_args(SaveDtypeName)

# How far from the centre a shapes scene's shape may sit (each axis), as a share of the side
# (shapes.draw_scene, `glide dataset shapes --spread`): the default keeps every shape near the
# middle, as models/ was trained; at most half the side, a centre on the edge.
SHAPE_SPREAD = 0.08
MAX_SHAPE_SPREAD = 0.5
