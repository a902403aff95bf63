#!/usr/bin/env python
"""How many DPM-Solver++(2M) / SDE-DPM-Solver++(2M) / PLMS steps match GLIDE's samplers?

Evidence for choosing sampler defaults. GLIDE's defaults: the base model samples ancestrally
(ddpm, learned variance) with 100 steps on the cosine schedule, with classifier-free
guidance 3; the upsampler samples with DDIM on the "fast27" timesteps of the linear
schedule, unguided. The script prints ONE markdown table. Every number is in 8-bit levels:
1 level = 1/127.5 on the [-1, 1] image scale, so "below 1" means "below one PNG level".
All sampling goes through glidecli's own code: denoiser_from_model (x0 clipped to [-1, 1]
every step, as the reference does), glidecli.diffusion.samplers.sample, timesteps_for, and
guided_model_fn for the networks; the result is clamped to [-1, 1] as sample_stage does.

analytic  Data with an exactly known noise predictor: a mixture of two Gaussians in 8
          dimensions (modes at +-0.4; the ODE is curved where the mode is decided).
          Unconditional data: 50/50, std 0.2; conditional data: 80/20, std 0.15. Guided
          rows use eps = eps_u + s (eps_c - eps_u) with s = 3. "ddpm (learned var.)" is
          what a network with GLIDE's learned variance converges to: per dimension the
          optimal Var[x_{t-1} | x_t] = posterior variance + coef1^2 Var[x0 | x_t] of the
          1000-step process, as GLIDE's interpolation value v (from the conditional half),
          used on the respaced schedule as GLIDE does. "posterior var." drops it. All
          samplers start from the same N(0, I) noise (scrambled Sobol points, so the
          deterministic samplers' outputs carry little sampling noise), float64.
          Measure: sliced Wasserstein-1, SW1 (the mean over 64 fixed random directions of
          the 1-D W1 distance between the sorted projections of two N-point sets).
            target: unguided, the data (N quasi-random exact samples). Guided, the guided
              process is not the score of any distribution and its ancestral and ODE limits
              differ; the target is then the ancestral limit (ddpm on all 1000 steps,
              learned variance), i.e. what GLIDE's default converges to.
            (in parentheses, ODE samplers only): SW1 to their own limit, DPM-Solver++(2M)
              on every timestep from the same start noise and top timestep: the pure
              discretisation error, free of sampling noise.
          "noise floor": SW1 between an independent N-sample of the target and the target
          (how far a perfect sampler's N points land, by chance). "ODE limit": SW1 from
          the ODE solution (all steps, from t=999) to the target.
          A last analytic case repeats the ODE samplers with guidance s = 10 (own limit
          only): high-order multistep methods are known to turn unstable as guidance grows.
model     A tiny random-weight GLIDE U-Net (the tests' tiny configuration; weights
          std 0.1), guided like the base model (s = 3) or conditioned on a low-resolution
          shapes picture like the upsampler. Random weights alone predict eps unrelated to
          x_t: x0 = (x - sigma eps) / alpha saturates, and so do the images (54% of the
          pixels at +-1 with weights of std 0.1, 93% with 0.02): agreement would mostly
          measure the clipping. The network therefore supplies a nonlinear, text-
          and image-dependent prior mean m(x_t) = m0 + c net(x_t): x0_hat = w m + gain x_t,
          the exact denoiser of a Gaussian prior N(m, p^2), with w = sigma^2 / (alpha^2
          p^2 + sigma^2) (p = 0.5, m0 = 0 for the base; p = 0.2, m0 = the upsampled
          low-resolution image for the upsampler; c sets the network term's std to 0.25).
          The network sees a fixed timestep (500): random weights are rough functions of
          t (one step changes the output by ~30% of its spread), trained ones are not.
          Measure: RMS over pixels and seeds from each sampler's images to the converged
          ODE solution from the same start noise and top timestep (DPM-Solver++(2M) on
          every timestep; DDIM on every timestep is checked against it below the table).
trained   Only when a trained model exists (DIR/weights.toml, as `glide train` writes it;
          DIR is models/ in the repository unless --models says otherwise): the same ODE
          agreement through the real network (no residual trick, guidance 3 for a base
          model), and the per-channel mean and std of the images over all seeds compared
          with ddpm-100 from the same start noise (max over channels of |d mean| +
          |d std|); "floor" is ddpm-100 on other seeds.

colours   Only for a base model trained on `glide dataset shapes` (models/ by default): the
          fixed EVAL_SCENES prompts ("a red circle on a blue background", ...) times
          --colour-seeds seeds, guidance 3, rendered exactly as `glide generate` renders them;
          the count of pictures whose object and background colours are both the prompted
          ones (glidecli.train.shapes.scene_colours). A measure of the pictures themselves.

Solvers run on the time-uniform grid unless the row says "log-SNR grid" (timesteps nearest
to evenly spaced lambda between the solver's top timestep and t=0, glide's default for
DPM-Solver++). Rows marked "what-if" are not reachable through `glide`: DPM-Solver++ on
GLIDE's fast27 timesteps (glide accepts fast27 for plms only).

Below the table, per case: the smallest step count whose error is at most the default's,
and the smallest that lands within one 8-bit level.

    python benchmarks/sampler_steps.py                    # everything: ~12 min on one core
    python benchmarks/sampler_steps.py --quick            # fewer points and seeds (~2.5 min)
    python benchmarks/sampler_steps.py --only analytic    # or: model, trained, colours
    python benchmarks/sampler_steps.py --models runs/shapes   # a `glide train --out` folder
"""

# The parts of this script: sampler_variants.py (the samplers compared, the table's row),
# sampler_analytic.py (the analytic rows), sampler_networks.py (the tiny U-Net's, the trained
# model's and the colour rows) and sampler_report.py (the table and the summary below it).

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import harness
from sampler_analytic import analytic_rows
from sampler_networks import colour_rows, random_model_rows, trained_rows
from sampler_report import markdown_table, summary
from sampler_variants import Row

# The parts of the table, in order, and how each runs from the options.
PARTS = {
    "analytic": lambda args: analytic_rows(args.samples or (16384 if args.quick else 32768)),
    "model": lambda args: random_model_rows(args.seeds or (1 if args.quick else 2)),
    "trained": lambda args: trained_rows(args.models, args.trained_seeds, args.trained_budget),
    "colours": lambda args: colour_rows(args.models, args.colour_seeds),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evidence for sampler defaults: how many DPM-Solver++(2M) / PLMS steps match ddpm-100 "
        "(GLIDE base) and ddim-fast27 (GLIDE upsampler), on analytic data, a tiny random U-Net and, "
        "when present, a trained model. Prints one markdown table (8-bit levels).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--only", choices=tuple(PARTS), action="append", help="run only these parts (repeatable)")
    parser.add_argument("--colour-seeds", type=int, default=6, help="seeds per shapes prompt for the colour measure (default 6)")
    parser.add_argument("--samples", type=int, default=None, help="analytic points per sampler run (default 32768; --quick 16384)")
    parser.add_argument("--seeds", type=int, default=None, help="images per tiny-network case (default 2; --quick 1)")
    parser.add_argument("--models", type=Path, default=harness.MODELS_DIR, help="folder of a trained model: weights.toml + .safetensors (default: %(default)s)")
    parser.add_argument("--trained-seeds", type=int, default=8, help="images per trained model, if the budget allows (default 8)")
    parser.add_argument("--trained-budget", type=float, default=120.0, help="seconds a trained model may take; fewer seeds otherwise (default 120)")
    harness.add_threads_option(parser, 1, "torch threads (default 1: steady on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="fewer analytic points and network seeds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = set(args.only or PARTS)
    started = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    for name, run in PARTS.items():
        if name in parts:
            new_rows, new_notes = run(args)
            rows += new_rows
            notes += new_notes

    print(
        f"Sampler step counts against GLIDE's defaults (torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.machine()}). Units: 8-bit levels (1/127.5). Column = steps (network calls). "
        f"ddim's 27 is fast27 on the linear schedule. Solvers without 'log-SNR grid' use the time-uniform grid."
    )
    print()
    print("\n".join(markdown_table(rows)))
    print()
    print("\n".join(summary(rows)))
    print()
    for note in notes:
        print(f"- {note}")
    print(f"- total time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
