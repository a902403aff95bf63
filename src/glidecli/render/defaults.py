"""The rendering commands' defaults, each declared once and free of torch: the render engine
builds its default stages from them, the requests (request/commands.py) take them as their
fields' defaults, and the server and the page read them through the requests.

Text-to-image uses fast solvers where benchmarks/README.md shows they match the reference
notebook's sampling: SDE-DPM-Solver++(2M) with 20 steps for ddpm-100 (guided),
DPM-Solver++(2M) with 15 steps for ddim-fast27. Inpainting keeps the notebook's settings
(no evidence yet); unCLIP is Karlo's "fast" template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..diffusion.vocabulary import FAST27, SamplerName
from ..files.roles import PACKAGED_NAMES, Role
from ..nets.kinds import ModelKind


@dataclass(frozen=True)
class StageDefaults:
    """One stage's defaults: the manifest model, its sampler and steps, guidance and the
    starting noise's temperature."""

    model: str
    sampler: SamplerName
    steps: str
    scale: float = 1.0
    temperature: float = 1.0


# The reference scales the upsamplers' starting noise by this.
UPSAMPLE_TEMPERATURE = 0.997


def glide_model(kind: ModelKind) -> str:
    """The packaged manifest names GLIDE's models after their kinds. A command that names no
    model takes its manifest's role (files/roles.py), which is this name in the packaged one."""
    return kind.value


GENERATE_BASE = StageDefaults(glide_model(ModelKind.BASE), SamplerName.DPMPP_2M_SDE, "20", scale=3.0)
GENERATE_UPSAMPLE = StageDefaults(glide_model(ModelKind.UPSAMPLE), SamplerName.DPMPP_2M, "15", temperature=UPSAMPLE_TEMPERATURE)
# The reference notebooks' text-to-image sampling.
REFERENCE_BASE = StageDefaults(glide_model(ModelKind.BASE), SamplerName.DDPM, "100", scale=3.0)
REFERENCE_UPSAMPLE = StageDefaults(glide_model(ModelKind.UPSAMPLE), SamplerName.DDIM, FAST27, temperature=UPSAMPLE_TEMPERATURE)
INPAINT_BASE = StageDefaults(glide_model(ModelKind.BASE_INPAINT), SamplerName.DDPM, "100", scale=5.0)
INPAINT_UPSAMPLE = StageDefaults(glide_model(ModelKind.UPSAMPLE_INPAINT), SamplerName.DDPM, FAST27, temperature=UPSAMPLE_TEMPERATURE)
# CLIP guidance shifts each step's mean: only ddpm takes it.
CLIP_GUIDE_BASE = StageDefaults(glide_model(ModelKind.BASE), SamplerName.DDPM, "100")
CLIP_GUIDE_SCALE = 3.0
CLIP_IMAGE_MODEL = glide_model(ModelKind.CLIP_IMAGE)
CLIP_TEXT_MODEL = glide_model(ModelKind.CLIP_TEXT)

# unCLIP, Karlo's "fast" template (karlo/sampler/template.py): prior 25 steps at guidance 4,
# decoder 25 at guidance 8, both ancestral over respaced steps; super-resolution 7 steps.
UNCLIP_PRIOR = StageDefaults(PACKAGED_NAMES[Role.UNCLIP_PRIOR], SamplerName.DDPM, "25", scale=4.0)
UNCLIP_DECODER = StageDefaults(PACKAGED_NAMES[Role.UNCLIP_DECODER], SamplerName.DDPM, "25", scale=8.0)
UNCLIP_SR = StageDefaults(PACKAGED_NAMES[Role.UNCLIP_SR], SamplerName.DDPM, "7")
UNCLIP_CLIP_MODEL = PACKAGED_NAMES[Role.CLIP]
UNCLIP_CLIP_STATS = PACKAGED_NAMES[Role.CLIP_STATS]

# Best of N: the open_clip model that judges the candidates, and the most candidates a picture takes.
RANK_MODEL = PACKAGED_NAMES[Role.RANK]
MAX_BEST_OF = 64

# --device, --dtype and --offload: the choices, typed for the CLI's flags, and as tuples.
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DtypeName = Literal["auto", "fp32", "fp16", "bf16"]
OffloadName = Literal["none", "model", "sequential"]  # render/offload.py
DEVICES: tuple[str, ...] = get_args(DeviceName)
DTYPE_NAMES: tuple[str, ...] = get_args(DtypeName)
OFFLOAD_CHOICES: tuple[str, ...] = get_args(OffloadName)
MAX_CANVAS = 8192  # pixels per side of an outpainted canvas; a bigger one is refused before any work

# GLIDE's upsamplers (and Karlo's super-resolution) make pictures this many times wider than
# the ones they are given: 64 -> 256, the shapes set's 16 -> 64.
UPSAMPLE_FACTOR = 4
