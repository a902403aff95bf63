"""`--batch-size auto`: the largest batch that fits the GPU's free memory, measured.

Each stage's work for b pictures (the guided base pair is a network batch of 2b) runs once at
b = 1 and once at b = 2 on inputs of the real shapes; the growth of the peak allocated memory
between them is what one more picture costs, the rest is the fixed cost. The batch is then
the largest that fits, with a margin, when every stage's activations are held at once (CUDA
graphs keep a captured stage's memory while the next stage warms up), and is evened out so
that -n 64 with room for 40 runs two batches of 32, one shape to capture or compile.
On the CPU (and MPS) `auto` means 1: batching there gains little and costs memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from ..nets.clip import NoisedClip
from ..nets.prior import ClipText, PriorTransformer
from ..nets.unclip import ImprovedSuperRes
from ..nets.unet import Text2ImUNet, TextEmbedding

MARGIN = 0.85  # share of the free memory a plan may use: fragmentation, cuDNN workspaces, outputs

Probe = Callable[[int], object]  # runs one stage's network work for b pictures


class StageMemory(NamedTuple):
    fixed: int  # bytes a call needs whatever the batch
    per_picture: int  # bytes each picture adds


def plan_batch_size(count: int, free_bytes: int, stages: Sequence[StageMemory], margin: float = MARGIN) -> int:
    """The batch for `count` pictures: the largest that fits `free_bytes * margin` with all
    stages' memory held at once (at least 1, at most `count`), then evened out over the
    passes it needs."""
    if count < 1:
        raise ValueError(f"nothing to render (count {count})")
    budget = free_bytes * margin - sum(stage.fixed for stage in stages)
    per_picture = sum(stage.per_picture for stage in stages)
    fits = count if per_picture <= 0 else int(budget // per_picture)
    fits = max(1, min(count, fits))
    passes = math.ceil(count / fits)
    return math.ceil(count / passes)


def measure_stage(probe: Probe, device: torch.device, evict: Callable[[], None] | None = None) -> StageMemory:
    """Peak memory of `probe` at 1 and 2 pictures, above what was allocated before (with
    `evict`, before the probe's network came onto the device: its weights count as fixed)."""
    peaks = []
    for pictures in (1, 2):
        if evict is not None:
            evict()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            probe(pictures)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
    per_picture = max(0, peaks[1] - peaks[0])
    return StageMemory(max(0, peaks[0] - per_picture), per_picture)


def free_memory(device: torch.device) -> int:
    """Bytes free on the device, counting what PyTorch's allocator holds but does not use."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def unet_probe(
    model: Text2ImUNet, guided: bool, size: tuple[int, int] | None = None, *, low_res_factor: int = 4,
    device: torch.device | None = None,
) -> Probe:
    """One network call for b pictures on zero inputs of the real shapes (2b when guided);
    `size` is the pictures' (height, width), by default the model's square. An upsampler's
    low_res is `low_res_factor` times smaller (GLIDE's 4; unCLIP's SR gets it resized to
    full size, 1). unCLIP's decoder gets its text from `encode_clip`, mask included."""
    cfg = model.config
    device = device or next(model.parameters()).device  # offloaded weights may be elsewhere: pass it
    height, width = size or (cfg.image_size, cfg.image_size)

    def run(pictures: int) -> object:
        batch = pictures * (2 if guided else 1)

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(batch, *shape, device=device, dtype=dtype)

        text = None
        if cfg.clip_dim:
            mask = torch.ones(batch, cfg.text_ctx, dtype=torch.bool, device=device)
            text = model.encode_clip(zeros(cfg.clip_dim), zeros(cfg.text_ctx, cfg.clip_dim), mask, zeros(cfg.clip_dim))
        elif cfg.xf_width:
            words = None if cfg.xf_attend_padding else torch.ones(batch, cfg.text_ctx, dtype=torch.bool, device=device)
            text = TextEmbedding(zeros(cfg.time_embed_dim, dtype=model.dtype), zeros(cfg.text_ctx, cfg.xf_width, dtype=model.dtype), words)
        images = {}
        if cfg.super_res:
            images["low_res"] = zeros(3, height // low_res_factor, width // low_res_factor)
        if cfg.inpaint:
            images.update(inpaint_image=zeros(3, height, width), inpaint_mask=zeros(1, height, width))
        return model(zeros(3, height, width), torch.zeros(batch, dtype=torch.long, device=device), text, **images)

    return run


def prior_probe(prior: PriorTransformer, guided: bool, device: torch.device | None = None) -> Probe:
    """One call of unCLIP's prior for b pictures (2b when guided) on zero inputs."""
    cfg = prior.config
    device = device or next(prior.parameters()).device

    def run(pictures: int) -> object:
        batch = pictures * (2 if guided else 1)
        text = ClipText(
            torch.zeros(batch, cfg.clip_dim, device=device),
            torch.zeros(batch, cfg.text_ctx, cfg.clip_dim, device=device),
            torch.ones(batch, cfg.text_ctx, dtype=torch.bool, device=device),
        )
        return prior(torch.zeros(batch, cfg.clip_dim, device=device), torch.zeros(batch, dtype=torch.long, device=device), text)

    return run


def sr_probe(sr: ImprovedSuperRes, device: torch.device | None = None) -> Probe:
    """One call of unCLIP's super-resolution for b pictures: its two U-Nets have one shape and
    take turns, so one of them stands for both."""
    return unet_probe(sr.model_first_steps, guided=False, low_res_factor=1, device=device)


def clip_probe(clip: NoisedClip, device: torch.device | None = None) -> Probe:
    """The CLIP gradient of b pictures (CLIP guidance runs it every step, with autograd)."""
    cfg = clip.image_encoder.config
    device = device or next(clip.image_encoder.parameters()).device

    def run(pictures: int) -> object:
        x = torch.zeros(pictures, 3, cfg.image_size, cfg.image_size, device=device)
        t = torch.zeros(pictures, dtype=torch.long, device=device)
        return clip.similarity_grad(x, t, torch.zeros(pictures, cfg.embed_dim, device=device))

    return run


def auto_batch_size(
    count: int, device: torch.device, probes: Sequence[Probe], evict: Callable[[], None] | None = None
) -> int:
    """`--batch-size auto` for `count` pictures: 1 off CUDA or for one picture, else measured.
    `evict`: the networks are offloaded (render/offload.py), one on the device at a time, so
    each stage is planned alone, its weights (moved in by its probe) among its fixed cost,
    against the memory free with none of them there."""
    if device.type != "cuda" or count <= 1:
        return 1
    stages = [measure_stage(probe, device, evict) for probe in probes]
    if evict is None:
        return plan_batch_size(count, free_memory(device), stages)
    evict()
    free = free_memory(device)
    return min(plan_batch_size(count, free, [stage]) for stage in stages)
