"""Stages from a request's options, checked against the manifest's models: samplers and
steps that fit each model's diffusion, the sizes asked for, img2img and best of N. Every
check runs before any model loads."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..diffusion.vocabulary import SamplerName
from ..files.manifest import Manifest
from ..nets.config import UNetConfig
from ..nets.kinds import ModelKind
from ..nets.unclip_config import PriorConfig
from ..render.defaults import glide_model
from .commands import ClipGuideRequest, GenerateRequest, InpaintRequest, OutpaintRequest, chosen
from .values import RequestError

if TYPE_CHECKING:
    from ..render.engine import Stage
    from ..render.img2img import InitImage
    from ..render.ranking import BestOf

# Multistep solvers amplify strong guidance: on the analytic test at scale 10 they are
# 17-27 levels off at 15 steps and within ~1 level from 25 (benchmarks/README.md).
STRONG_GUIDANCE = 5.0
STRONG_GUIDANCE_MIN_STEPS: Mapping[str, int] = {SamplerName.DPMPP_2M_SDE: 25, SamplerName.PLMS: 25}


@dataclass(frozen=True)
class StageSpec:
    """What a request asks of one stage, before it is checked against the manifest's model:
    the model and its kind, the sampler and steps (`steps_option` names them in messages),
    guidance, the starting noise's temperature, DDIM's eta and dynamic thresholding."""

    model: str
    kind: ModelKind
    sampler: str
    steps: str
    scale: float = 1.0
    temperature: float = 1.0
    eta: float = 0.0
    threshold: float | None = None
    steps_option: str = "--steps"


# The requests for a GLIDE base model and its upsampler.
GlideStagesRequest = GenerateRequest | ClipGuideRequest | InpaintRequest | OutpaintRequest


def glide_specs(r: GlideStagesRequest, base_kind: ModelKind, scale: float = 1.0) -> tuple[StageSpec, StageSpec]:
    """The base stage (of `base_kind`) and the upsampler stage a GLIDE request asks for."""
    base = StageSpec(chosen(r.model), base_kind, r.sampler, r.steps, scale=scale, eta=r.eta, threshold=r.threshold)
    upsampler = StageSpec(
        chosen(r.upsample_model), base_kind.upsampler, r.upsample_sampler, r.upsample_steps, temperature=r.upsample_temp, steps_option="--upsample-steps"
    )
    return base, upsampler


def glide_stages(manifest: Manifest, r: GlideStagesRequest, base_kind: ModelKind, warnings: list[str], scale: float = 1.0) -> tuple[Stage, Stage | None]:
    """A GLIDE request's base stage (of `base_kind`) and its upsampler stage, None when --size
    asks for the base model's pictures alone."""
    base, upsampler = glide_specs(r, base_kind, scale=scale)
    return build_stage(manifest, base, warnings), upsampler_stage(manifest, r.size, base, upsampler)


def build_stage(manifest: Manifest, spec: StageSpec, warnings: list[str] | None = None) -> Stage:
    """A render stage for `spec`'s model, with the sampler checked against its diffusion;
    a setting that may diverge adds a line to `warnings`."""
    from ..render.engine import Stage
    from ..render.pipeline import SamplerChoice

    arch = diffusion_arch(manifest, spec.model, spec.kind)
    try:
        choice = SamplerChoice(spec.sampler, spec.steps, spec.eta, spec.threshold)
    except ValueError as error:
        raise RequestError(str(error)) from None
    try:  # render.engine.check_sampler's check, which the prior's diffusion passes too
        count = len(choice.schedule(arch.noise_schedule, arch.diffusion_steps))
    except ValueError as error:
        raise RequestError(str(error), spec.steps_option) from None
    least = STRONG_GUIDANCE_MIN_STEPS.get(spec.sampler)
    if spec.scale > STRONG_GUIDANCE and least is not None and count < least and warnings is not None:
        warnings.append(
            f"--scale {spec.scale:g} with {count} {spec.sampler} steps may diverge; use {spec.steps_option} {least} or more (benchmarks/README.md)"
        )
    return Stage(spec.model, choice, scale=spec.scale, temperature=spec.temperature)


def diffusion_arch(manifest: Manifest, name: str, kind: ModelKind) -> UNetConfig | PriorConfig:
    """The settings of the manifest's model `name` (of `kind`) that sample a diffusion: a
    U-Net's or unCLIP's prior's."""
    from ..render.session import model_entry

    arch = model_entry(manifest, name, kind).arch
    if not isinstance(arch, (UNetConfig, PriorConfig)):
        raise RequestError(f"{manifest.path}: model {name!r} of kind {kind} has no diffusion to sample")
    return arch


def unet_arch(manifest: Manifest, name: str, kind: ModelKind) -> UNetConfig:
    """The U-Net settings of the manifest's model `name` (of `kind`): its sides among them."""
    arch = diffusion_arch(manifest, name, kind)
    if not isinstance(arch, UNetConfig):
        raise RequestError(f"{manifest.path}: model {name!r} of kind {kind} is not a U-Net")
    return arch


def upsampler_stage(manifest: Manifest, size: int | None, base: StageSpec, upsampler: StageSpec) -> Stage | None:
    """The upsampling stage of a two-stage command, or None when --size asks for the base
    model's pictures alone."""
    if not wants_upsampler(size, manifest, base, upsampler):
        return None
    return build_stage(manifest, upsampler)


def wants_upsampler(size: int | None, manifest: Manifest, base: StageSpec, upsampler: StageSpec) -> bool:
    """--size picks the base model's size (no upsampler) or the upsampler's (default). A
    manifest without the default upsampler (e.g. one written by `glide train` for a base
    model) gives the base model's pictures."""
    if size is None:
        return upsampler.model != glide_model(upsampler.kind) or upsampler.model in manifest.models
    base_size = unet_arch(manifest, base.model, base.kind).image_size
    if size == base_size:
        return False
    if upsampler.model not in manifest.models:
        raise RequestError(
            f"{size} is not {base_size}, the base model's size, and {manifest.path} has no upsampler {upsampler.model!r} for other sizes", "--size"
        )
    up_size = unet_arch(manifest, upsampler.model, upsampler.kind).image_size
    if size == up_size:
        return True
    raise RequestError(f"{size} is neither {base_size} (base model only) nor {up_size} (with the upsampler)", "--size")


def sized_stages(
    manifest: Manifest,
    base: Stage,
    upsample: Stage | None,
    base_kind: ModelKind,
    up_kind: ModelKind,
    width: int | None,
    height: int | None,
    option: str = "--width",
) -> tuple[Stage, Stage | None]:
    """The stages with the sides --width/--height ask for (the models' own when both are None)."""
    from ..render.sizes import stage_sizes

    base_arch = unet_arch(manifest, base.model, base_kind)
    up_arch = unet_arch(manifest, upsample.model, up_kind) if upsample is not None else None
    try:
        base_size, up_size = stage_sizes(width, height, base_arch, up_arch)
    except ValueError as error:
        raise RequestError(str(error), option) from None
    if base_size is not None:
        base = dataclasses.replace(base, height=base_size[0], width=base_size[1])
    if up_size is not None and upsample is not None:  # an upsampler's size needs one
        upsample = dataclasses.replace(upsample, height=up_size[0], width=up_size[1])
    return base, upsample


def sized_fit(fit: str, width: int | None, height: int | None) -> str:
    """glide inpaint's --fit with --width/--height: the whole picture is fitted to that
    rectangle, so 'auto' means crop and 'region' (which keeps the picture's size) is refused."""
    if width is None and height is None:
        return fit
    if fit == "region":
        raise RequestError("--width/--height fit the whole picture to a rectangle: use --fit crop, pad or stretch, not region")
    return "crop" if fit == "auto" else fit


def init_image(
    image: Path | None, strength: float | None, upsample_strength: float | None, fit: str, has_upsampler: bool
) -> InitImage | None:
    """The img2img settings, or None without --init-image; the picture is read once here, so
    an unreadable one fails before anything is written."""
    if image is None:
        if strength is not None or upsample_strength is not None:
            flag = "--strength" if strength is not None else "--upsample-strength"
            raise RequestError(f"{flag} needs --init-image")
        return None
    from ..diffusion.partial import check_strength
    from ..files.images import load_image
    from ..render.img2img import InitImage

    if strength is None and upsample_strength is None:
        raise RequestError("--init-image needs --strength S (0 < S <= 1), --upsample-strength S or both")
    for value, flag in ((strength, "--strength"), (upsample_strength, "--upsample-strength")):
        if value is not None:
            try:
                check_strength(value, flag)
            except ValueError as error:
                raise RequestError(str(error), flag) from None
    if upsample_strength is not None and not has_upsampler:
        raise RequestError("--upsample-strength needs the upsampler, but --size asks for the base model's pictures alone")
    load_image(image, 8, fit)  # readable, whole: ImageError (one line, exit 1) otherwise
    return InitImage(image, strength, upsample_strength, fit)


def best_of_choice(count: int, rank_model: str | None, init: InitImage | None) -> BestOf | None:
    """The best-of-N settings, or None for one candidate (plain generation)."""
    from ..render.defaults import MAX_BEST_OF
    from ..render.ranking import BestOf

    if count > MAX_BEST_OF:
        raise RequestError(f"{count} is more than {MAX_BEST_OF} candidates", "--best-of")
    if count == 1:
        return None
    if init is not None and init.skips_base:
        raise RequestError("--best-of compares the base model's pictures: with --init-image give --strength too")
    return BestOf(count, chosen(rank_model))
