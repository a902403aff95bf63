"""The typed requests of the rendering commands: one frozen dataclass per command, one field
per option, with the command's default. The CLI fills one from its flags, the server from
JSON (`build`, `from_mapping`); `plan.py` turns it into jobs and stages.

A field's metadata holds its Option (options.py): flags, type, limits and help. Pictures are
file paths here; the server saves uploads under names of its own and puts those paths in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..files.vocabulary import DEFAULT_PATTERN, FitMode
from ..render import defaults
from . import options as o
from .options import Option, RequestError, ValueType, value_of

PROMPTS = Option((), ValueType.PROMPTS, "What to draw: one prompt, or several (each gets -n images).", name="prompt")
PROMPT = Option((), ValueType.STR, "What the picture shows.", name="prompt")


def uses(option: Option, default: Any) -> Any:
    """A request field declared by `option`, with this command's default."""
    return field(default=default, metadata={"option": option})


# --- field groups: the options several commands share, with the defaults they share ---------------
# A request lists its groups as bases; dataclasses order fields from the last base to the
# first, then the request's own (the CLI's positional pictures and prompts among them).


@dataclass(frozen=True)
class PromptLanguage:
    """How the prompts are read: A1111's language (emphasis, wildcards), or plain text."""

    literal_prompt: bool = uses(o.LITERAL_PROMPT, False)
    wildcards: Path | None = uses(o.WILDCARDS, None)


@dataclass(frozen=True)
class Output:
    """How many pictures, in which batches, from which seed."""

    num: int = uses(o.NUM, 1)
    batch_size: int | str = uses(o.BATCH_SIZE, "auto")
    seed: int | None = uses(o.SEED, None)


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
    rank_model: str = uses(o.RANK_MODEL, defaults.RANK_MODEL)


@dataclass(frozen=True)
class TextModels:
    """GLIDE's text-to-image base model and upsampler."""

    model: str = uses(o.BASE_MODEL, defaults.GENERATE_BASE.model)
    upsample_model: str = uses(o.UPSAMPLE_MODEL, defaults.GENERATE_UPSAMPLE.model)


@dataclass(frozen=True)
class InpaintModels:
    """GLIDE's inpainting models."""

    model: str = uses(o.INPAINT_MODEL, defaults.INPAINT_BASE.model)
    upsample_model: str = uses(o.INPAINT_UPSAMPLE_MODEL, defaults.INPAINT_UPSAMPLE.model)


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

    decoder_model: str = uses(o.DECODER_MODEL, defaults.UNCLIP_DECODER.model)
    sr_model: str = uses(o.SR_MODEL, defaults.UNCLIP_SR.model)
    clip_model: str = uses(o.CLIP_MODEL, defaults.UNCLIP_CLIP_MODEL)


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
class GenerateRequest(TextModels, Output, Frames, BestOfN, InitPicture, PictureSize, TextUpsampling, SamplerTuning, TextBaseSampling, PromptLanguage):
    """glide generate: the base model, then the upsampler; img2img, other sizes, best of N."""

    command: ClassVar[str] = "generate"
    prompts: tuple[str, ...] = uses(PROMPTS, ())


@dataclass(frozen=True)
class ClipGuideRequest(TextModels, Output, TextUpsampling, SamplerTuning, PromptLanguage):
    """glide clip-guide: the base model steered by the noised CLIP, then the upsampler."""

    command: ClassVar[str] = "clip-guide"
    prompts: tuple[str, ...] = uses(PROMPTS, ())
    clip_scale: float = uses(o.CLIP_SCALE, defaults.CLIP_GUIDE_SCALE)
    steps: str = uses(o.STEPS, defaults.CLIP_GUIDE_BASE.steps)
    sampler: str = uses(o.SAMPLER, defaults.CLIP_GUIDE_BASE.sampler)
    size: int | None = uses(o.SIZE, None)
    clip_image_model: str = uses(o.CLIP_IMAGE_MODEL, defaults.CLIP_IMAGE_MODEL)
    clip_text_model: str = uses(o.CLIP_TEXT_MODEL, defaults.CLIP_TEXT_MODEL)


@dataclass(frozen=True)
class UpsampleRequest(Output, PromptLanguage):
    """glide upsample: the text-conditional upsampler on a picture."""

    command: ClassVar[str] = "upsample"
    image: Path | None = uses(o.IMAGE, None)
    prompt: str | None = uses(PROMPT, None)
    steps: str = uses(o.UPSAMPLE_ONLY_STEPS, defaults.GENERATE_UPSAMPLE.steps)
    sampler: str = uses(o.UPSAMPLE_ONLY_SAMPLER, defaults.GENERATE_UPSAMPLE.sampler)
    temp: float = uses(o.UPSAMPLE_ONLY_TEMP, defaults.GENERATE_UPSAMPLE.temperature)
    fit: str = uses(o.FIT, FitMode.CROP)
    model: str = uses(o.UPSAMPLE_ONLY_MODEL, defaults.GENERATE_UPSAMPLE.model)


@dataclass(frozen=True)
class InpaintRequest(InpaintModels, Output, PictureSize, InpaintUpsampling, SamplerTuning, InpaintBaseSampling, PromptLanguage):
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
class OutpaintRequest(InpaintModels, Output, InpaintUpsampling, SamplerTuning, InpaintBaseSampling, PromptLanguage):
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
class UnclipRequest(DecoderModels, Output, BestOfN, DecoderSampling, PriorSampling, PromptLanguage):
    """glide unclip: prior -> CLIP image embedding -> decoder -> super-resolution."""

    command: ClassVar[str] = "unclip"
    prompts: tuple[str, ...] = uses(PROMPTS, ())
    negative: str | None = uses(o.NEGATIVE, None)
    prior_model: str = uses(o.PRIOR_MODEL, defaults.UNCLIP_PRIOR.model)
    clip_stats: str = uses(o.CLIP_STATS, defaults.UNCLIP_CLIP_STATS)


@dataclass(frozen=True)
class DecoderRequest(DecoderModels, Output, BestOfN, DecoderSampling, PromptLanguage):
    """The unCLIP commands that start from pictures' CLIP image embeddings (vary, blend): the
    decoder's and super-resolution's sampling, the output, the models, and the decoder's text."""

    prompt: str = uses(o.DECODER_PROMPT, "")


@dataclass(frozen=True)
class VaryRequest(DecoderRequest):
    """glide vary: variations of a picture from its CLIP image embedding."""

    command: ClassVar[str] = "vary"
    pattern: ClassVar[str] = "{index:05d}-{seed}-vary.png"
    image: Path | None = uses(o.IMAGE, None)


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


def build(request_type: RequestType, values: Mapping[str, Any]) -> Request:
    """A request from raw values by field name (CLI text, JSON values, or typed values);
    fields not given keep the command's default (a required picture or prompt is missing).
    Every value is converted and checked."""
    typed: dict[str, Any] = {}
    for name, option, default in option_fields(request_type):
        typed[name] = value_of(option, values.get(name, default))
    unknown = set(values) - set(typed)
    if unknown:
        raise RequestError(f"{request_type.command} has no option {sorted(unknown)[0]!r}")
    return request_type(**typed)


def field_names(request_type: RequestType) -> dict[str, str]:
    """Every name a field answers to in JSON -> the field: its flags without dashes
    ('cfg-scale', 'n'), and its Python name ('upsample_steps')."""
    names: dict[str, str] = {}
    for name, option, _ in option_fields(request_type):
        names[name] = name
        for key in option.keys:
            names[key] = name
    return names


def from_mapping(request_type: RequestType, data: Mapping[str, Any], pictures: Mapping[str, Path] = {}) -> Request:
    """A request from JSON by option names (`{"scale": 3, "upsample-steps": "fast27"}`);
    picture fields come from `pictures` (the server's saved uploads), never from `data`.
    Unknown names, and one option given under two names, are refused."""
    names = field_names(request_type)
    options = {name: option for name, option, _ in option_fields(request_type)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = names.get(key)
        if name is None:
            raise RequestError(f"{request_type.command} has no option {key!r}")
        if name in values:
            raise RequestError(f"option {key!r} is given twice (under two of its names)")
        if options[name].value_type == ValueType.PICTURE:
            raise RequestError(f"{key!r} is a picture: send it as an upload or base64, not as a value", options[name].flag)
        if options[name].value_type == ValueType.PATH:  # a client names no folder of the server's
            raise RequestError(f"{key!r} is a folder of the machine that renders: the server sets it where it starts", options[name].flag)
        values[name] = raw
    for name, path in pictures.items():
        if name not in names.values():
            raise RequestError(f"{request_type.command} takes no picture {name!r}")
        values[names[name]] = path
    return build(request_type, values)
