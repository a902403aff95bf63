"""The typed requests of the rendering commands: one frozen dataclass per command, one field
per option, with the command's default. The CLI fills one from its flags, the server from
JSON (building.py: `build`, `from_mapping`); `plan.py` turns it into jobs and stages.

A field's metadata holds its Option (options.py): flags, type, limits and help. Pictures are
file paths here; the server saves uploads under names of its own and puts those paths in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..files.roles import PACKAGED_NAMES, Role, Roles
from ..files.vocabulary import DEFAULT_PATTERN, DEFAULT_QUALITY, FitMode
from ..render import defaults
from ..render.prompt_syntax import Emphasis
from . import options as o
from .values import Option, ValueType

PROMPTS = Option((), ValueType.PROMPTS, "What to draw: one prompt, or several (each gets -n images).", name="prompt")
PROMPT = Option((), ValueType.STR, "What the picture shows.", name="prompt")


def uses(option: Option, default: Any) -> Any:
    """A request field declared by `option`, with this command's default."""
    return field(default=default, metadata={"option": option})


def uses_role(option: Option, role: Role) -> Any:
    """A model field declared by `option`: None (not named) takes the manifest's model for
    `role` when the request is planned (with_roles)."""
    return field(default=None, metadata={"option": option, "role": role})


# --- field groups: the options several commands share, with the defaults they share ---------------
# A request lists its groups as bases; dataclasses order fields from the last base to the
# first, then the request's own (the CLI's positional pictures and prompts among them).


@dataclass(frozen=True)
class PromptLanguage:
    """How the prompts are read: A1111's language (emphasis, weighed in the `emphasis` way,
    and wildcards), or plain text."""

    literal_prompt: bool = uses(o.LITERAL_PROMPT, False)
    wildcards: Path | None = uses(o.WILDCARDS, None)
    emphasis: Emphasis = uses(o.EMPHASIS, Emphasis.A1111)


@dataclass(frozen=True)
class Output:
    """How many pictures, in which batches, from which seed, in which file format."""

    num: int = uses(o.NUM, 1)
    batch_size: int | str = uses(o.BATCH_SIZE, "auto")
    seed: int | None = uses(o.SEED, None)
    format: str | None = uses(o.FORMAT, None)  # an ImageFormat; None: the front end's (files/pictures.output_format)
    quality: int = uses(o.QUALITY, DEFAULT_QUALITY)


@dataclass(frozen=True)
class SamplerTuning:
    """DDIM's noise and dynamic thresholding of a GLIDE base stage."""

    eta: float = uses(o.ETA, 0.0)
    threshold: float | None = uses(o.THRESHOLD, None)


@dataclass(frozen=True)
class TextBaseSampling:
    """generate's base stage."""

    scale: float = uses(o.SCALE, defaults.GENERATE_BASE.scale)
    negative: str | None = uses(o.NEGATIVE, None)
    steps: str = uses(o.STEPS, defaults.GENERATE_BASE.steps)
    sampler: str = uses(o.SAMPLER, defaults.GENERATE_BASE.sampler)


@dataclass(frozen=True)
class InpaintBaseSampling:
    """The base inpainting stage of inpaint and outpaint."""

    scale: float = uses(o.SCALE, defaults.INPAINT_BASE.scale)
    negative: str | None = uses(o.NEGATIVE, None)
    steps: str = uses(o.STEPS, defaults.INPAINT_BASE.steps)
    sampler: str = uses(o.SAMPLER, defaults.INPAINT_BASE.sampler)


@dataclass(frozen=True)
class TextUpsampling:
    """The upsampler after a text-to-image base stage (generate, clip-guide)."""

    upsample_steps: str = uses(o.UPSAMPLE_STEPS, defaults.GENERATE_UPSAMPLE.steps)
    upsample_sampler: str = uses(o.UPSAMPLE_SAMPLER, defaults.GENERATE_UPSAMPLE.sampler)
    upsample_temp: float = uses(o.UPSAMPLE_TEMP, defaults.GENERATE_UPSAMPLE.temperature)


@dataclass(frozen=True)
class InpaintUpsampling:
    """The inpainting upsampler (inpaint, outpaint)."""

    upsample_steps: str = uses(o.UPSAMPLE_STEPS, defaults.INPAINT_UPSAMPLE.steps)
    upsample_sampler: str = uses(o.UPSAMPLE_SAMPLER, defaults.INPAINT_UPSAMPLE.sampler)
    upsample_temp: float = uses(o.UPSAMPLE_TEMP, defaults.INPAINT_UPSAMPLE.temperature)


@dataclass(frozen=True)
class PictureSize:
    """--size picks the stages; --width/--height other sides than the models' own."""

    size: int | None = uses(o.SIZE, None)
    width: int | None = uses(o.WIDTH, None)
    height: int | None = uses(o.HEIGHT, None)


@dataclass(frozen=True)
class BestOfN:
    """Best of N candidates by a CLIP score."""

    best_of: int = uses(o.BEST_OF, 1)
    rank_model: str | None = uses_role(o.RANK_MODEL, Role.RANK)


@dataclass(frozen=True)
class TextModels:
    """GLIDE's text-to-image base model and upsampler."""

    model: str | None = uses_role(o.BASE_MODEL, Role.BASE)
    upsample_model: str | None = uses_role(o.UPSAMPLE_MODEL, Role.UPSAMPLE)


@dataclass(frozen=True)
class InpaintModels:
    """GLIDE's inpainting models."""

    model: str | None = uses_role(o.INPAINT_MODEL, Role.INPAINT)
    upsample_model: str | None = uses_role(o.INPAINT_UPSAMPLE_MODEL, Role.UPSAMPLE_INPAINT)


@dataclass(frozen=True)
class DecoderSampling:
    """unCLIP's decoder and super-resolution stages (unclip, vary, blend)."""

    scale: float = uses(o.DECODER_SCALE, defaults.UNCLIP_DECODER.scale)
    steps: str = uses(o.DECODER_STEPS, defaults.UNCLIP_DECODER.steps)
    sampler: str = uses(o.DECODER_SAMPLER, defaults.UNCLIP_DECODER.sampler)
    sr_steps: str = uses(o.SR_STEPS, defaults.UNCLIP_SR.steps)
    sr_sampler: str = uses(o.SR_SAMPLER, defaults.UNCLIP_SR.sampler)
    size: int | None = uses(o.UNCLIP_SIZE, None)


@dataclass(frozen=True)
class DecoderModels:
    """unCLIP's decoder, super-resolution and the CLIP that conditions them."""

    decoder_model: str | None = uses_role(o.DECODER_MODEL, Role.UNCLIP_DECODER)
    sr_model: str | None = uses_role(o.SR_MODEL, Role.UNCLIP_SR)
    clip_model: str | None = uses_role(o.CLIP_MODEL, Role.CLIP)


@dataclass(frozen=True)
class Adapters:
    """LoRA adapters on the command's networks (every rendering command; its last options)."""

    lora: tuple[str, ...] = uses(o.LORA, ())
    force: bool = uses(o.FORCE_LORA, False)


# --- the commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitPicture:
    """img2img: the stages start from a picture noised to a strength."""

    init_image: Path | None = uses(o.INIT_IMAGE, None)
    strength: float | None = uses(o.STRENGTH, None)
    upsample_strength: float | None = uses(o.UPSAMPLE_STRENGTH, None)
    init_fit: str = uses(o.INIT_FIT, FitMode.CROP)


@dataclass(frozen=True)
class Frames:
    """A seed walk, or the sampling steps, as frames and an animation."""

    seed_walk: int | None = uses(o.SEED_WALK, None)
    show_steps: int | None = uses(o.SHOW_STEPS, None)
    animate: str | None = uses(o.ANIMATE, None)


@dataclass(frozen=True)
class GenerateRequest(Adapters, TextModels, Output, Frames, BestOfN, InitPicture, PictureSize, TextUpsampling, SamplerTuning, TextBaseSampling, PromptLanguage):
    """glide generate: the base model, then the upsampler; img2img, other sizes, best of N."""

    command: ClassVar[str] = "generate"
    prompts: tuple[str, ...] = uses(PROMPTS, ())


@dataclass(frozen=True)
class ClipGuideRequest(Adapters, TextModels, Output, TextUpsampling, SamplerTuning, PromptLanguage):
    """glide clip-guide: the base model steered by the noised CLIP, then the upsampler."""

    command: ClassVar[str] = "clip-guide"
    prompts: tuple[str, ...] = uses(PROMPTS, ())
    clip_scale: float = uses(o.CLIP_SCALE, defaults.CLIP_GUIDE_SCALE)
    steps: str = uses(o.STEPS, defaults.CLIP_GUIDE_BASE.steps)
    sampler: str = uses(o.SAMPLER, defaults.CLIP_GUIDE_BASE.sampler)
    size: int | None = uses(o.SIZE, None)
    clip_image_model: str | None = uses_role(o.CLIP_IMAGE_MODEL, Role.CLIP_IMAGE)
    clip_text_model: str | None = uses_role(o.CLIP_TEXT_MODEL, Role.CLIP_TEXT)


@dataclass(frozen=True)
class UpsampleRequest(Adapters, Output, PromptLanguage):
    """glide upsample: the text-conditional upsampler on a picture."""

    command: ClassVar[str] = "upsample"
    image: Path | None = uses(o.IMAGE, None)
    prompt: str | None = uses(PROMPT, None)
    steps: str = uses(o.UPSAMPLE_ONLY_STEPS, defaults.GENERATE_UPSAMPLE.steps)
    sampler: str = uses(o.UPSAMPLE_ONLY_SAMPLER, defaults.GENERATE_UPSAMPLE.sampler)
    temp: float = uses(o.UPSAMPLE_ONLY_TEMP, defaults.GENERATE_UPSAMPLE.temperature)
    fit: str = uses(o.FIT, FitMode.CROP)
    model: str | None = uses_role(o.UPSAMPLE_ONLY_MODEL, Role.UPSAMPLE)


@dataclass(frozen=True)
class InpaintRequest(Adapters, InpaintModels, Output, PictureSize, InpaintUpsampling, SamplerTuning, InpaintBaseSampling, PromptLanguage):
    """glide inpaint: repaint the white part of a mask (or a picture's transparent pixels)."""

    command: ClassVar[str] = "inpaint"
    image: Path | None = uses(o.IMAGE, None)
    mask: Path | None = uses(o.MASK, None)
    prompt: str | None = uses(PROMPT, None)
    invert_mask: bool = uses(o.INVERT_MASK, False)
    fit: str = uses(o.INPAINT_FIT, "auto")
    context: int = uses(o.REGION_CONTEXT, 64)
    feather: int = uses(o.FEATHER, 8)


@dataclass(frozen=True)
class OutpaintRequest(Adapters, InpaintModels, Output, InpaintUpsampling, SamplerTuning, InpaintBaseSampling, PromptLanguage):
    """glide outpaint: grow the canvas and paint the new border in windows."""

    command: ClassVar[str] = "outpaint"
    image: Path | None = uses(o.IMAGE, None)
    prompt: str | None = uses(PROMPT, None)
    left: int = uses(o.LEFT, 0)
    right: int = uses(o.RIGHT, 0)
    top: int = uses(o.TOP, 0)
    bottom: int = uses(o.BOTTOM, 0)
    to: str | None = uses(o.TO, None)
    context: int | None = uses(o.WINDOW_CONTEXT, None)
    size: int | None = uses(o.WINDOW_SIZE, None)
    window: str | None = uses(o.WINDOW, None)


@dataclass(frozen=True)
class PriorSampling:
    """unCLIP's prior: text to a CLIP image embedding."""

    prior_scale: float = uses(o.PRIOR_SCALE, defaults.UNCLIP_PRIOR.scale)
    prior_steps: str = uses(o.PRIOR_STEPS, defaults.UNCLIP_PRIOR.steps)
    prior_sampler: str = uses(o.PRIOR_SAMPLER, defaults.UNCLIP_PRIOR.sampler)


@dataclass(frozen=True)
class UnclipRequest(Adapters, DecoderModels, Output, BestOfN, DecoderSampling, PriorSampling, PromptLanguage):
    """glide unclip: prior -> CLIP image embedding -> decoder -> super-resolution."""

    command: ClassVar[str] = "unclip"
    prompts: tuple[str, ...] = uses(PROMPTS, ())
    negative: str | None = uses(o.NEGATIVE, None)
    prior_model: str | None = uses_role(o.PRIOR_MODEL, Role.UNCLIP_PRIOR)
    clip_stats: str | None = uses_role(o.CLIP_STATS, Role.CLIP_STATS)


@dataclass(frozen=True)
class DecoderRequest(Adapters, DecoderModels, Output, BestOfN, DecoderSampling, PromptLanguage):
    """The unCLIP commands that start from pictures' CLIP image embeddings (vary, blend): the
    decoder's and super-resolution's sampling, the output, the models, and the decoder's text."""

    prompt: str = uses(o.DECODER_PROMPT, "")


@dataclass(frozen=True)
class VaryRequest(DecoderRequest):
    """glide vary: variations of a picture from its CLIP image embedding."""

    command: ClassVar[str] = "vary"
    pattern: ClassVar[str] = "{index:05d}-{seed}-vary.png"
    image: Path | None = uses(o.IMAGE, None)
    toward: str | None = uses(o.TOWARD, None)
    away: str | None = uses(o.AWAY, None)
    amount: tuple[float, ...] | None = uses(o.AMOUNT, None)
    keep_layout: bool = uses(o.KEEP_LAYOUT, False)
    layout_refine: int = uses(o.LAYOUT_REFINE, defaults.KEEP_LAYOUT_REFINE)
    animate: str | None = uses(o.ANIMATE, None)


@dataclass(frozen=True)
class BlendRequest(DecoderRequest):
    """glide blend: pictures between two others (slerp of their CLIP image embeddings)."""

    command: ClassVar[str] = "blend"
    pattern: ClassVar[str] = "{index:05d}-{seed}-blend.png"
    image_a: Path | None = uses(o.IMAGE_A, None)
    image_b: Path | None = uses(o.IMAGE_B, None)
    mix: float | None = uses(o.MIX, None)
    frames: int | None = uses(o.FRAMES, None)
    animate: str | None = uses(o.ANIMATE, None)
    keep_layout: bool = uses(o.KEEP_LAYOUT, False)
    layout_refine: int = uses(o.LAYOUT_REFINE, defaults.KEEP_LAYOUT_REFINE)


# Every rendering request, and the classes they are made from (a function that takes "a
# request type" takes one of these).
Request = GenerateRequest | ClipGuideRequest | UpsampleRequest | InpaintRequest | OutpaintRequest | UnclipRequest | VaryRequest | BlendRequest
RequestType = type[Request]
# The requests with several prompts (`prompts`); the others have one (`prompt`).
MANY_PROMPTS = (GenerateRequest, ClipGuideRequest, UnclipRequest)

REQUESTS: dict[str, RequestType] = {
    cls.command: cls
    for cls in (
        GenerateRequest, ClipGuideRequest, UpsampleRequest, InpaintRequest, OutpaintRequest, UnclipRequest, VaryRequest, BlendRequest,
    )
}


def file_pattern(request_type: RequestType) -> str:
    """The command's default file names in --out."""
    pattern: str = getattr(request_type, "pattern", DEFAULT_PATTERN)
    return pattern


def option_fields(request_type: RequestType) -> list[tuple[str, Option, Any]]:
    """(field name, Option, default) of each field of a request type, in order."""
    return [(f.name, f.metadata["option"], f.default) for f in dataclasses.fields(request_type)]


def field_roles(request_type: RequestType) -> dict[str, Role]:
    """The model fields of a request type (field name -> the role that fills it when None)."""
    return {f.name: f.metadata["role"] for f in dataclasses.fields(request_type) if "role" in f.metadata}


def with_roles(request: Request, roles: Roles) -> Request:
    """`request` with each model it leaves unnamed set to the manifest's model for that role."""
    named: dict[str, Any] = {name: roles[role] for name, role in field_roles(type(request)).items() if getattr(request, name) is None}
    return dataclasses.replace(request, **named)


def role_help(request_type: RequestType, name: str) -> str:
    """What field `name` takes when not given, for its help: its role's model ("" for a field no role fills)."""
    role = field_roles(request_type).get(name)
    return "" if role is None else f" [default: the manifest's {role} model; packaged: {PACKAGED_NAMES[role]}]"


def chosen(model: str | None) -> str:
    """A model field of a request whose models with_roles chose (every planned request's)."""
    if model is None:
        raise TypeError("a request's models are chosen (with_roles) before it is planned")
    return model


def packaged_model(request_type: RequestType, name: str) -> str | None:
    """The packaged manifest's model for field `name`, None for a field no role fills."""
    role = field_roles(request_type).get(name)
    return None if role is None else PACKAGED_NAMES[role]
