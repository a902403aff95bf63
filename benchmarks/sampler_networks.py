"""The network parts of benchmarks/sampler_steps.py: each sampler's images against the converged
ODE solution from the same start noise, through a tiny random-weight GLIDE U-Net (the tests'
tiny configuration) and through the trained shapes model in models/, and the shapes model's
pictures scored by their colours."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import harness
from glidecli.diffusion.samplers import denoiser_from_model, sample
from glidecli.diffusion.schedule import Schedule, betas_for
from glidecli.diffusion.solver_steps import timesteps_for
from harness import log
from sampler_variants import (
    DDIM,
    DPMPP,
    DPMPP_FAST27,
    DPMPP_LAMBDA,
    GUIDANCE,
    LEVEL,
    LINEAR,
    ODE_VARIANTS,
    PLMS,
    PLMS_FAST27,
    Row,
    limit_schedule,
)

# --- networks: ODE agreement with the converged solution ------------------------------------


def shapes(count: int, size: int, seed: int) -> tuple[Tensor, list[str]]:
    """Pictures of the shapes data set in [-1, 1] and their captions."""
    from glidecli.train.shapes import shape_scene

    rng = random.Random(seed)
    scenes = [shape_scene(rng, size) for _ in range(count)]
    pixels = [torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32)) for picture, _ in scenes]
    images = torch.stack([(p.permute(2, 0, 1) / 127.5 - 1).contiguous() for p in pixels])
    return images, [caption for _, caption in scenes]


def residual_model_fn(model_fn, schedule_name: str, prior_mean: Tensor, prior_std: float, scale: float):
    """x0_hat = w (prior_mean + scale * net) + gain * x_t, the exact denoiser of the prior
    N(prior_mean + scale * net, prior_std^2), w = sigma^2 / (alpha^2 prior_std^2 + sigma^2):
    the network matters at high and medium noise and fades at low noise, where any good
    denoiser tends to x_t / alpha (a term that does not fade makes the ODE stiff near t=0).
    Returns eps for x0_hat and the network's variance channels. Linear in the network's
    eps channels, so guiding the network first equals guiding the two residual models."""
    ab = np.cumprod(1.0 - betas_for(schedule_name))

    def fn(x: Tensor, t: Tensor) -> Tensor:
        out = model_fn(x, t)
        channels = x.shape[1]
        a, s = math.sqrt(ab[int(t[0])]), math.sqrt(1 - ab[int(t[0])])
        gain = a * prior_std**2 / (a**2 * prior_std**2 + s**2)
        x0 = (1 - a * gain) * (prior_mean + scale * out[:, :channels]) + gain * x
        return torch.cat([(x - a * x0) / s, out[:, channels:]], dim=1)

    return fn


def run_network(model_fn, sampler: str, schedule: Schedule, start: Tensor, noise=None) -> Tensor:
    """What sample_stage does for text-to-image sampling (x0 clipped, result clamped)."""
    denoise = denoiser_from_model(model_fn, schedule)
    return sample(sampler, denoise, start.clone(), schedule, noise=noise).clamp(-1.0, 1.0)


def rms_levels(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt()) / LEVEL


def ode_agreement_rows(case: str, model_fn, schedule_name: str, start: Tensor, variants, check_ddim: bool = True):
    """RMS (8-bit levels) from each sampler's images to the converged ODE solution from the
    same start noise and top timestep; returns rows, notes and the images."""
    references: dict[int, Tensor] = {}
    outputs: dict[tuple[str, int], Tensor] = {}

    def reference(top: int) -> Tensor:
        if top not in references:
            t0 = time.perf_counter()
            references[top] = run_network(model_fn, "dpmpp_2m", limit_schedule(top, schedule_name), start)
            log(f"  {case}: ODE reference from t={top} ({top + 1} steps): {time.perf_counter() - t0:.0f} s")
        return references[top]

    rows = []
    for variant in variants:
        if variant.linear_only and schedule_name != LINEAR:
            continue
        row = Row(case, variant.label, "RMS to converged ODE")
        for count in variant.counts:
            schedule = variant.schedule(schedule_name, count)
            out = run_network(model_fn, variant.sampler, schedule, start)
            outputs[(variant.label, count)] = out
            row.put(count, rms_levels(out, reference(schedule.timestep(-1))))
        rows.append(row)
    notes = []
    top = max(references)
    saturated = float((references[top].abs() > 0.999).float().mean())
    if check_ddim:
        ddim_full = run_network(model_fn, "ddim", limit_schedule(top, schedule_name), start)
        notes.append(
            f"{case}: DDIM on all {top + 1} steps lies {rms_levels(ddim_full, references[top]):.3f} levels RMS "
            f"from the reference (DPM-Solver++(2M) on the same steps); {saturated:.1%} of the reference pixels at +-1"
        )
    else:
        notes.append(f"{case}: {saturated:.1%} of the reference pixels at +-1")
    return rows, notes, outputs


def random_model_rows(seeds: int) -> tuple[list[Row], list[str]]:
    from glidecli.diffusion.guidance import guided_model_fn
    from glidecli.diffusion.noise import ImageNoise
    from glidecli.nets.checkpoint import build_network, random_init_

    rows: list[Row] = []
    notes: list[str] = []
    for kind in ("base", "upsample"):
        t0 = time.perf_counter()
        cfg = harness.tiny_unet_config(kind)  # the tests' tiny U-Net
        net = random_init_(build_network(kind, cfg), seed=0, std=0.1).eval()
        generator = torch.Generator().manual_seed(7)
        tokens = torch.randint(1, cfg.n_vocab, (seeds, cfg.text_ctx), generator=generator)
        other_tokens = torch.randint(1, cfg.n_vocab, (seeds, cfg.text_ctx), generator=generator)
        mask = torch.ones(seeds, cfg.text_ctx, dtype=torch.bool)
        size = cfg.image_size
        start = ImageNoise(list(range(seeds))).initial((3, size, size))
        with torch.no_grad():
            text = net.encode_text(tokens, mask)
            if kind == "base":
                fn = guided_model_fn(net, text, uncond_text=net.encode_text(other_tokens, mask), scale=GUIDANCE)
                prior_mean, prior_std = torch.zeros(1, 3, 1, 1), 0.5
                guidance = f"guided s={GUIDANCE:g}"
            else:  # GLIDE samples its upsampler without guidance
                low_res, _ = shapes(seeds, size // 4, seed=11)
                fn = guided_model_fn(net, text, low_res=low_res)
                prior_mean = torch.nn.functional.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
                prior_std = 0.2
                guidance = "unguided"
            probe = fn(start, torch.full((seeds,), 500, dtype=torch.long))[:, :3]

        def fixed_t(x: Tensor, t: Tensor, fn: Any = fn) -> Tensor:
            return fn(x, torch.full_like(t, 500))

        model_fn = residual_model_fn(fixed_t, cfg.noise_schedule, prior_mean, prior_std, 0.25 / float(probe.std()))
        case = f"tiny random U-Net {kind} ({'cosine' if kind == 'base' else 'linear'}), {guidance}"
        new_rows, new_notes, _ = ode_agreement_rows(case, model_fn, cfg.noise_schedule, start, ODE_VARIANTS)
        rows += new_rows
        notes += new_notes
        log(f"{case}: {time.perf_counter() - t0:.0f} s")
    return rows, notes



# --- a trained model, when there is one ------------------------------------------------------


def trained_rows(models_dir: Path, seeds: int, budget_s: float) -> tuple[list[Row], list[str]]:
    manifest_path = models_dir / "weights.toml"
    if not manifest_path.is_file() or not any(models_dir.glob("*.safetensors")):
        return [], [f"trained: no trained model in {models_dir} (looked for weights.toml and *.safetensors); skipped"]
    from glidecli.files.manifest import load_manifest

    manifest = load_manifest(manifest_path)
    session = harness.offline_session(manifest_path, dtype=torch.float32)
    rows: list[Row] = []
    notes: list[str] = []
    for entry in manifest.models.values():
        if entry.kind not in ("base", "upsample"):
            continue
        new_rows, new_notes = trained_case(session, entry, seeds, budget_s)
        rows += new_rows
        notes += new_notes
    return rows, notes


def trained_case(session, entry, seeds: int, budget_s: float) -> tuple[list[Row], list[str]]:
    """One trained base or upsampler: ODE agreement, and image statistics against ddpm-100."""
    from glidecli.diffusion.guidance import guided_model_fn
    from glidecli.diffusion.noise import ImageNoise
    from glidecli.render.pipeline import encode_prompts

    t0 = time.perf_counter()
    net = session.unet(entry.name, entry.kind)
    cfg = net.config
    tokenizer = session.tokenizer(cfg.text_ctx, entry.name)
    base = entry.kind == "base"
    size = cfg.image_size

    def setup(count: int):
        low_res, captions = shapes(count, max(1, size // 4), seed=21)
        conditioning = encode_prompts(net, tokenizer, captions, guided=base)
        return guided_model_fn(
            net, conditioning.text, uncond_text=conditioning.uncond, scale=GUIDANCE if base else 1.0,
            low_res=None if base else low_res,
        )

    # Plan: one ODE reference (two for an upsampler: ddim's fast27 starts at t=997),
    # the solver rows, and ddpm-100 twice; scale the seeds down to the time budget.
    variants = (PLMS, DPMPP, DPMPP_LAMBDA) if base else (DDIM, PLMS, DPMPP, DPMPP_LAMBDA, PLMS_FAST27, DPMPP_FAST27)
    calls = (1 if base else 2) * 1000 + sum(sum(v.counts) for v in variants) + 200
    per_image_call = call_seconds(setup(1), size)
    fit = int(budget_s / max(per_image_call * calls, 1e-9))
    count = min(seeds, fit)
    case = f"trained {entry.name} ({entry.kind}, {size}px, {cfg.noise_schedule}), {'guided s=3' if base else 'unguided'}"
    if count < 1:
        return [], [
            f"{case}: skipped; it needs about {per_image_call * calls:.0f} s per seed and the budget is "
            f"{budget_s:.0f} s (--trained-budget)"
        ]
    model_fn = setup(count)
    start = ImageNoise(list(range(count))).initial((3, size, size))
    rows, notes, outputs = ode_agreement_rows(case, model_fn, cfg.noise_schedule, start, variants, check_ddim=False)
    rows += statistics_rows(case, model_fn, cfg.noise_schedule, size, count, outputs)
    notes.append(f"{case}: {count} seeds (one prompt each); {time.perf_counter() - t0:.0f} s")
    log(notes[-1])
    return rows, notes


def call_seconds(model_fn, size: int) -> float:
    """Seconds of one call on one image (after a first, untimed one)."""
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        model_fn(x, torch.tensor([500]))
        tick = time.perf_counter()
        model_fn(x, torch.tensor([500]))
        return time.perf_counter() - tick


def statistics_rows(case: str, model_fn, schedule_name: str, size: int, count: int, outputs: dict) -> list[Row]:
    """The per-channel mean and std of the images over all seeds against ddpm-100's from the
    same start noise; the floor is ddpm-100 on other seeds."""
    from glidecli.diffusion.noise import ImageNoise

    ddpm = Schedule.from_timesteps(schedule_name, timesteps_for("ddpm", schedule_name, "100"))
    noise_a, noise_b = ImageNoise(list(range(count))), ImageNoise(list(range(1000, 1000 + count)))
    ddpm_a = run_network(model_fn, "ddpm", ddpm, noise_a.initial((3, size, size)), noise=noise_a)
    ddpm_b = run_network(model_fn, "ddpm", ddpm, noise_b.initial((3, size, size)), noise=noise_b)

    def stats_distance(images: Tensor, reference: Tensor = ddpm_a) -> float:
        mean_gap = (images.mean((0, 2, 3)) - reference.mean((0, 2, 3))).abs()
        std_gap = (images.std((0, 2, 3)) - reference.std((0, 2, 3))).abs()
        return float((mean_gap + std_gap).max()) / LEVEL

    rows = []
    for variant in (PLMS, DPMPP):
        row = Row(case, variant.label, "channel mean+std vs ddpm-100")
        for steps in variant.counts:
            row.put(steps, stats_distance(outputs[(variant.label, steps)]))
        rows.append(row)
    floor = Row(case, "ddpm-100, other seeds", "channel mean+std vs ddpm-100")
    floor.put(100, stats_distance(ddpm_b))
    rows.append(floor)
    return rows


def colour_rows(models_dir: Path, seeds: int) -> tuple[list[Row], list[str]]:
    """For a base model trained on `glide dataset shapes`: how many pictures of the fixed
    EVAL_SCENES prompts (guidance 3) show both prompted colours, per sampler and step count,
    rendered exactly as `glide generate` renders them. A real measure of picture quality."""
    manifest_path = models_dir / "weights.toml"
    if not manifest_path.is_file():
        return [], [f"colours: no trained model in {models_dir}; skipped"]
    from glidecli.files.manifest import load_manifest
    from glidecli.render.engine import Job, RenderOptions, Stage, render_generate
    from glidecli.render.pipeline import SamplerChoice
    from glidecli.train.shapes import EVAL_SCENES, colour_hits, shape_caption

    manifest = load_manifest(manifest_path)
    session = harness.offline_session(manifest_path)
    scenes = [scene for scene in EVAL_SCENES for _ in range(seeds)]
    jobs = [Job(shape_caption(*scene), seed % seeds, index) for index, (seed, scene) in enumerate(enumerate(scenes))]
    plan = [
        ("ddpm (learned var.)", "ddpm", (25, 50, 100)),
        ("dpmpp_2m_sde, log-SNR grid", "dpmpp_2m_sde", (10, 15, 20, 25, 50)),
        ("dpmpp_2m, log-SNR grid", "dpmpp_2m", (15, 25, 50)),
        ("plms", "plms", (15, 25, 50)),
        ("ddim", "ddim", (25, 50)),
    ]
    rows, notes = [], []
    for entry in manifest.models.values():
        if entry.kind != "base":
            continue
        t0 = time.perf_counter()
        case = f"trained {entry.name}: shapes prompts, guided s=3"
        for label, sampler, counts in plan:
            row = Row(case, label, f"pictures with both colours right, of {len(jobs)}")
            for count in counts:
                stage = Stage(entry.name, SamplerChoice(sampler, str(count)), scale=GUIDANCE)
                done = render_generate(session, jobs, stage, None, options=RenderOptions(batch_size=len(jobs)))
                pictures = [harness.rgb_pixels(item.image) for item in done]
                both, _ = colour_hits(pictures, scenes)
                row.put(count, float(both))
                row.cells[count] = str(both)
            rows.append(row)
        notes.append(f"{case}: {len(EVAL_SCENES)} prompts x {seeds} seeds; {time.perf_counter() - t0:.0f} s")
        log(notes[-1])
    return rows, notes

