"""One diffusion stage from prompt to image tensor, usable from Python and driven by the CLI.

prompt -> tokens -> text embedding (once per batch) -> sampling loop (network + guidance)
-> image tensor in [-1, 1]. A full 256x256 picture is two stages: the base model at 64x64,
then the upsampler conditioned on the (8-bit quantized) base output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from ..diffusion.guidance import (
    chain_x0_transforms,
    clip_gradient,
    clip_guided_denoiser,
    composed_model_fn,
    guided_model_fn,
    keep_known_region,
)
from ..diffusion.inversion import invert_ddim
from ..diffusion.noise import ImageNoise
from ..diffusion.partial import partial_timesteps
from ..diffusion.samplers import (
    SAMPLERS,
    Callback,
    Denoiser,
    MeanShift,
    X0Transform,
    denoiser_from_model,
    dynamic_threshold,
    sample,
)
from ..diffusion.schedule import Schedule
from ..diffusion.vocabulary import SamplerName
from ..nets.clip import NoisedClip
from ..nets.tokenizer import GlideTokenizer
from ..nets.unet import Text2ImUNet, TextEmbedding
from .composition import is_composed, parse_prompt
from .emphasis import glide_batch, weigh
from .prompt_syntax import Emphasis, Segment, WeightedPrompt, prompt_warning, read_prompt


@dataclass(frozen=True)
class SamplerChoice:
    """Which sampler, how many steps, and how x0 estimates are kept in range.

    `steps` is a respacing spec for ddpm/ddim/plms ("100", "fast27", "ddim50", "10,10,5");
    a count given to a solver (plms, dpmpp_2m, dpmpp_2m_sde) means the solvers' own grid
    (`samplers.solver_timesteps`), evenly spaced in t ("time20") or in log-SNR ("logsnr20");
    a bare count takes the solver's default grid. DPM-Solver++ takes counts only.
    `threshold` is a dynamic-thresholding percentile (e.g. 0.995); None clips x0 to [-1, 1]."""

    name: str = SamplerName.DDPM
    steps: str = "100"
    eta: float = 0.0
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; choose from {', '.join(SAMPLERS)}")
        if self.eta and self.name != SamplerName.DDIM:
            raise ValueError("eta applies to the ddim sampler only")
        if self.threshold is not None and not 0.5 <= self.threshold <= 1.0:
            raise ValueError(f"threshold percentile must be in [0.5, 1], got {self.threshold}")

    def schedule(self, noise_schedule: str, diffusion_steps: int = 1000, strength: float = 1.0) -> Schedule:
        """The schedule this choice walks; `strength` < 1 starts it part-way (img2img)."""
        timesteps = partial_timesteps(self.name, noise_schedule, str(self.steps), strength, diffusion_steps)
        return Schedule.from_timesteps(noise_schedule, timesteps, diffusion_steps)


@dataclass(frozen=True)
class Inpainting:
    """The source image and its keep mask (1 = keep) at the stage's resolution, [B,3,H,W] / [B,1,H,W]."""

    source: Tensor
    keep_mask: Tensor


@dataclass(frozen=True)
class ClipGuidance:
    clip: NoisedClip
    text_embeddings: Tensor  # [B, D], normalized
    scale: float


@dataclass(frozen=True)
class Composition:
    """Which image each row of a composed batch's text belongs to, and its weight."""

    owner: Tensor  # [rows] image index
    weights: Tensor  # [rows]


@dataclass(frozen=True)
class Conditioning:
    """The encoded prompts of a batch: one row per image, or with `composition` one row per
    component of a composed prompt; `uncond` (one row per image) for classifier-free guidance."""

    text: TextEmbedding
    uncond: TextEmbedding | None
    truncated: list[bool]  # per text row
    composition: Composition | None = None
    texts: tuple[str, ...] = ()  # the text of each row
    ignored: tuple[str, ...] = ()  # warnings: what the rows' prompt syntax removed (BREAK, <tags>)

    @property
    def batch(self) -> int:
        if self.composition is not None and self.uncond is not None:
            return int(self.uncond.pooled.shape[0])
        return int(self.text.pooled.shape[0])


def encode_prompts(
    model: Text2ImUNet,
    tokenizer: GlideTokenizer,
    prompts: Sequence[str],
    *,
    guided: bool,
    negative: Sequence[str] | None = None,
    compose: bool = False,
    syntax: Sequence[bool] | None = None,
    emphasis: Sequence[Emphasis] | None = None,
) -> Conditioning:
    """Tokenize and encode a batch once. The unconditional half uses the empty prompt, or the
    negative prompts when given (one per image). When `compose` and a prompt is composed
    with AND (render/composition.py), every component gets a row, and the batch is guided
    whatever the scale. `syntax` (one per image; None: all False) says whose prompts, and
    negative prompt, are read in A1111's language: emphasis weighs their token features
    (render/emphasis.py), in the way `emphasis` gives for each image (None: A1111's)."""
    device = next(model.parameters()).device
    parsed = [parse_prompt(prompt) for prompt in prompts] if compose else None
    composition = None
    texts = list(prompts)
    owners = list(range(len(prompts)))
    if parsed is not None and any(is_composed(components) for components in parsed):
        texts = [component.text for components in parsed for component in components]
        owners = [b for b, components in enumerate(parsed) for _ in components]
        weights = [component.weight for components in parsed for component in components]
        composition = Composition(torch.tensor(owners, device=device), torch.tensor(weights, device=device))
        guided = True
    elif parsed is not None:
        texts = [components[0].text for components in parsed]
    reading = list(syntax) if syntax is not None else [False] * len(prompts)
    methods = list(emphasis) if emphasis is not None else [Emphasis.A1111] * len(prompts)
    rows = [_read(text, reading[owner]) for text, owner in zip(texts, owners)]
    with torch.no_grad():
        text = _encode(model, tokenizer, rows, [methods[owner] for owner in owners], device)
        uncond = None
        truncated = list(text.truncated)
        negatives: list[str] = []
        negative_rows: list[WeightedPrompt] = []
        if guided:
            negatives = list(negative) if negative is not None else [""] * len(prompts)
            negative_rows = [_read(text, on) for text, on in zip(negatives, reading)]
            uncond = _encode(model, tokenizer, negative_rows, methods, device).embedding
    read = zip([*texts, *negatives], [*rows, *negative_rows])
    ignored = tuple(dict.fromkeys(line for written, row in read if (line := prompt_warning(written, row))))
    return Conditioning(text.embedding, uncond, truncated, composition, tuple(texts), ignored)


def _read(text: str, syntax: bool) -> WeightedPrompt:
    """A row's prompt: in A1111's language, or its text as it is."""
    return read_prompt(text) if syntax else WeightedPrompt((Segment(text),))


class _Encoded(NamedTuple):
    embedding: TextEmbedding
    truncated: list[bool]


def _encode(model: Text2ImUNet, tokenizer: GlideTokenizer, rows: Sequence[WeightedPrompt], methods: Sequence[Emphasis], device: torch.device) -> _Encoded:
    """The text transformer's embedding of the rows; where a row has weights, its token
    sequence weighed in its method's way (the pooled embedding is the unweighted sequence's)."""
    batch, weights = glide_batch(tokenizer, rows)
    embedding = model.encode_text(batch.tokens.to(device), batch.mask.to(device))
    if weights is None:
        return _Encoded(embedding, list(batch.truncated))

    def empty() -> Tensor:
        blank = tokenizer.batch([""])
        return model.encode_text(blank.tokens.to(device), blank.mask.to(device)).tokens

    return _Encoded(embedding._replace(tokens=weigh(embedding.tokens, weights, methods, empty)), list(batch.truncated))


class SeededJob(Protocol):
    """A job as its noise sees it (engine.Job): its seed."""

    @property
    def seed(self) -> int: ...


def job_noise(jobs: Sequence[SeededJob]) -> ImageNoise:
    """The noise of a batch of jobs: each job's seed, turned by its seed walk's angle when it
    has one (engine.WalkJob)."""
    return ImageNoise([job.seed for job in jobs], [getattr(job, "angle", None) for job in jobs])


def quantize_to_8bit(x: Tensor) -> Tensor:
    """Round an image to the 256 levels a PNG holds (the reference does this before upsampling)."""
    return ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1


@dataclass(frozen=True, kw_only=True)
class StageInputs:
    """What a stage samples from besides its prompts and noise; each is optional."""

    low_res: Tensor | None = None  # an upsampler's low-resolution pictures [B, 3, h, w], 8-bit quantized
    inpainting: Inpainting | None = None
    clip_guidance: ClipGuidance | None = None
    # img2img: the picture [B, 3, H, W] to start from, diffused to fraction `strength` of the
    # sampler's grid; strength 1 ignores it.
    init: Tensor | None = None
    strength: float = 1.0
    size: tuple[int, int] | None = None  # the pictures' (height, width)
    # The x at the top of the schedule to sample from instead of the noise (an inversion's,
    # invert_stage); [B or 1, 3, H, W].
    start: Tensor | None = None

    @property
    def partial(self) -> bool:
        """Whether sampling starts part-way, from `init`."""
        return self.init is not None and self.strength < 1.0


NO_INPUTS = StageInputs()


def sample_stage(
    model: Text2ImUNet,
    conditioning: Conditioning,
    noise: ImageNoise,
    sampler: SamplerChoice,
    *,
    inputs: StageInputs = NO_INPUTS,
    scale: float = 1.0,
    temperature: float = 1.0,
    callback: Callback | None = None,
    network: Callable[..., Tensor] | None = None,
) -> Tensor:
    """Sample one batch of images [B, 3, H, W] in [-1, 1] from `model`.

    (H, W) is `inputs.size`, else the inpainting source's, else the model's square image
    size. With `inputs.init` [B, 3, H, W] and a strength < 1 (img2img), the picture is
    diffused to the timestep at fraction `strength` of the sampler's grid and sampled from
    there (diffusion/partial.py); strength 1 ignores `init`: plain generation. `network`,
    when given, is called in place of `model` with its signature (a CUDA-graphed or compiled
    version of it, render/accel.py)."""
    cfg = model.config
    device = next(model.parameters()).device
    batch = conditioning.batch
    if len(noise) != batch:
        raise ValueError(f"{len(noise)} seeds for a batch of {batch} prompts")
    schedule = sampler.schedule(cfg.noise_schedule, cfg.diffusion_steps, inputs.strength if inputs.partial else 1.0)
    denoise, mean_shift = _denoiser(network or model, conditioning, schedule, sampler, inputs, scale, cfg.prediction)
    if inputs.start is not None:
        x = inputs.start.to(device, torch.float32).expand(batch, -1, -1, -1)
    else:
        x = noise.initial((3, *_picture_size(inputs, cfg.image_size)), device, torch.float32) * temperature
    if inputs.init is not None and inputs.partial:
        # The same first draw as plain generation, as the noise of q(x_t | x0) at the top.
        x = schedule.q_sample(inputs.init.to(device, torch.float32), len(schedule) - 1, x)
    result = sample(
        sampler.name, denoise, x, schedule, noise=noise, eta=sampler.eta, mean_shift=mean_shift, callback=callback
    )
    # Multistep solvers may land a hair outside the clipped range; images live in [-1, 1].
    result = result.clamp(-1.0, 1.0)
    inpainting = inputs.inpainting
    if inpainting is not None:
        # The last x0 estimate already holds the source there; make it exact to the bit.
        result = result * (1 - inpainting.keep_mask) + inpainting.source * inpainting.keep_mask
    return result


def invert_stage(
    model: Text2ImUNet,
    conditioning: Conditioning,
    pictures: Tensor,
    sampler: SamplerChoice,
    *,
    scale: float = 1.0,
    refine: int = 0,
    callback: Callback | None = None,
    network: Callable[..., Tensor] | None = None,
) -> Tensor:
    """The x at the top of `sampler`'s schedule from which DDIM (eta 0) with the same
    conditioning and guidance draws `pictures` [B, 3, H, W] (diffusion/inversion.py); give it
    to sample_stage as `StageInputs(start=...)` with a ddim `sampler`."""
    cfg = model.config
    device = next(model.parameters()).device
    schedule = sampler.schedule(cfg.noise_schedule, cfg.diffusion_steps)
    denoise, _ = _denoiser(network or model, conditioning, schedule, sampler, NO_INPUTS, scale, cfg.prediction)
    return invert_ddim(denoise, pictures.to(device, torch.float32), schedule, refine=refine, callback=callback)


def _picture_size(inputs: StageInputs, side: int) -> tuple[int, int]:
    """(H, W): the inputs' size, else the inpainting source's, else the model's square."""
    if inputs.size is not None:
        return inputs.size
    if inputs.inpainting is not None:
        height, width = inputs.inpainting.source.shape[-2:]
        return int(height), int(width)
    return side, side


def _denoiser(
    network: Callable[..., Tensor],
    conditioning: Conditioning,
    schedule: Schedule,
    sampler: SamplerChoice,
    inputs: StageInputs,
    scale: float,
    prediction: str,
) -> tuple[Denoiser, MeanShift | None]:
    """The denoiser of a stage with its guidance and x0 transforms, and (CLIP guidance with
    DDPM) the shift of each step's mean."""
    images: dict[str, Tensor | None] = {"low_res": inputs.low_res}
    known_region = None
    if inputs.inpainting is not None:
        source, keep = inputs.inpainting.source, inputs.inpainting.keep_mask
        images.update(inpaint_image=source * keep, inpaint_mask=keep)
        known_region = keep_known_region(source, keep)
    parts, uncond = conditioning.composition, conditioning.uncond
    if parts is not None and uncond is not None:
        model_fn = composed_model_fn(network, conditioning.text, uncond, parts.owner, parts.weights, scale=scale, **images)
    else:
        model_fn = guided_model_fn(network, conditioning.text, uncond_text=uncond, scale=scale, **images)
    # Threshold first, then paste the source, so the known region stays exact.
    threshold = _dynamic_threshold(sampler.threshold) if sampler.threshold is not None else None
    denoise = denoiser_from_model(model_fn, schedule, x0_transform=chain_x0_transforms(threshold, known_region), prediction=prediction)
    guidance = inputs.clip_guidance
    if guidance is None:
        return denoise, None
    grad = clip_gradient(guidance.clip, guidance.text_embeddings, guidance.scale, schedule)
    if sampler.name == SamplerName.DDPM:
        return denoise, grad
    return clip_guided_denoiser(denoise, schedule, grad), None


def _dynamic_threshold(percentile: float) -> X0Transform:
    def threshold(x0: Tensor, step: int) -> Tensor:
        return dynamic_threshold(x0, percentile)

    return threshold
