"""`glide unclip`, `glide vary` and `glide blend`: pictures with unCLIP (Karlo v1.0 alpha).

unCLIP draws from a CLIP image embedding: the prior makes one from the prompt (`unclip`), or
it comes from a picture (`vary`) or from between two pictures (`blend`). The decoder paints
64x64 from it; the super-resolution U-Nets make 256x256 (`--size 64` stops before them).
--best-of N ranks N decoder pictures per picture by a CLIP score for the prompt (render/ranking.py)
and super-resolves the winner only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..files.manifest import Manifest, load_manifest
from . import editing
from . import options as opt
from .run import RunOptions, build_stage, check_image_count, click_errors, collect_prompts, make_jobs, render_to_files

PRIOR = "Prior"

PriorScale = Annotated[float, typer.Option("--prior-scale", min=0.0, help="Classifier-free guidance of the prior (1 = off).", rich_help_panel=PRIOR)]
PriorSteps = Annotated[str, typer.Option("--prior-steps", help="Prior steps (same forms as --steps).", rich_help_panel=PRIOR)]
PriorSampler = Annotated[opt.SamplerName, typer.Option("--prior-sampler", help="Prior sampler.", rich_help_panel=PRIOR)]
DecoderScale = Annotated[float, typer.Option("--scale", "--cfg-scale", min=0.0, help="Classifier-free guidance of the decoder (1 = off).", rich_help_panel=opt.SAMPLING)]
DecoderSteps = Annotated[
    str,
    typer.Option("--steps", help="Decoder steps: a count ('25'); ddpm/ddim/plms also take sections ('10,10,5') or 'ddimN'; solvers also 'logsnr20'/'time20'.", rich_help_panel=opt.SAMPLING),
]
DecoderSampler = Annotated[opt.SamplerName, typer.Option("--sampler", help="Decoder sampler.", rich_help_panel=opt.SAMPLING)]
SrSteps = Annotated[
    str,
    typer.Option("--sr-steps", help="Super-resolution steps (same forms as --steps); the last always runs the fine-tuned last-step U-Net.", rich_help_panel=opt.SAMPLING),
]
SrSampler = Annotated[opt.SamplerName, typer.Option("--sr-sampler", help="Super-resolution sampler.", rich_help_panel=opt.SAMPLING)]
Size = Annotated[
    Optional[int],
    typer.Option("--size", help="64: the decoder's pictures; 256 (default): then super-resolution.", show_default=False, rich_help_panel=opt.OUTPUT),
]
PriorModel = Annotated[str, typer.Option("--prior-model", help="unCLIP prior (manifest name).", rich_help_panel=opt.MODELS)]
DecoderModel = Annotated[str, typer.Option("--decoder-model", help="unCLIP decoder (manifest name).", rich_help_panel=opt.MODELS)]
SrModel = Annotated[str, typer.Option("--sr-model", help="unCLIP super-resolution (manifest name).", rich_help_panel=opt.MODELS)]
ClipModel = Annotated[str, typer.Option("--clip-model", help="CLIP ViT the networks were trained with (manifest name).", rich_help_panel=opt.MODELS)]
ClipStats = Annotated[str, typer.Option("--clip-stats", help="The prior's CLIP embedding statistics (manifest name).", rich_help_panel=opt.MODELS)]
DecoderPrompt = Annotated[str, typer.Option("--prompt", help="Text for the decoder (empty by default, as the reference's variations).", rich_help_panel=opt.SAMPLING)]
ImageArg = Annotated[Path, typer.Argument(metavar="IMAGE", help="A picture (any format Pillow reads).", show_default=False)]


def _stages(
    manifest: Manifest, size: Optional[int], decoder_model: str, sampler: str, steps: str, scale: float, sr_model: str,
    sr_sampling: tuple[str, str],
):
    """The decoder stage and the SR stage (None with --size at the decoder's size)."""
    from ..render.engine import model_entry

    decoder = build_stage(manifest, decoder_model, "unclip-decoder", sampler, steps, scale=scale)
    decoder_size = model_entry(manifest, decoder_model, "unclip-decoder").arch.image_size
    if size == decoder_size:
        return decoder, None
    sr_arch = model_entry(manifest, sr_model, "unclip-sr").arch
    if size is not None and size != sr_arch.image_size:
        raise click_errors.BadParameter(
            f"{size} is neither {decoder_size} (decoder only) nor {sr_arch.image_size} (with super-resolution)", param_hint="'--size'"
        )
    return decoder, build_stage(manifest, sr_model, "unclip-sr", *sr_sampling, steps_option="--sr-steps")


def _clip_models(manifest: Manifest, clip_model: str, clip_stats: Optional[str]):
    from ..render.engine import model_entry
    from ..render.unclip import ClipModels

    model_entry(manifest, clip_model, "openclip")
    if clip_stats is not None:
        model_entry(manifest, clip_stats, "clip-stats")
    return ClipModels(clip_model, clip_stats or ClipModels.stats)


def _best_of(count: int, rank_model: str, prompt: str):
    """The best-of-N settings (None for one candidate); the judge needs text to score against."""
    ranking = editing.best_of_choice(count, rank_model, None)
    if ranking is not None and not prompt.strip():
        raise click_errors.UsageError("--best-of ranks the pictures by a CLIP score for the prompt: give --prompt TEXT")
    return ranking


def _check_picture(path: Path) -> None:
    """Refuse a missing or unreadable picture before any model loads."""
    from ..files.images import open_rgb

    open_rgb(path)


@opt.with_run_options()
def unclip(
    prompt: opt.Prompt = None,
    prior_scale: PriorScale = 4.0,
    prior_steps: PriorSteps = "25",
    prior_sampler: PriorSampler = "ddpm",
    scale: DecoderScale = 8.0,
    negative: opt.Negative = None,
    steps: DecoderSteps = "25",
    sampler: DecoderSampler = "ddpm",
    sr_steps: SrSteps = "7",
    sr_sampler: SrSampler = "ddpm",
    size: Size = None,
    best_of: editing.BestOfOption = 1,
    rank_model: editing.RankModel = "ViT-B-32:laion2b_s34b_b79k",
    prompts_file: opt.PromptsFile = None,
    num: opt.Num = 1,
    batch_size: opt.BatchSize = "auto",
    seed: opt.Seed = None,
    opts: RunOptions = opt.RUN_OPTIONS,
    prior_model: PriorModel = "karlo-prior",
    decoder_model: DecoderModel = "karlo-decoder",
    sr_model: SrModel = "karlo-sr",
    clip_model: ClipModel = "clip-vit-l-14",
    clip_stats: ClipStats = "karlo-clip-stats",
) -> None:
    """Draw PROMPT with unCLIP: the prior turns its CLIP text embedding into a CLIP image
    embedding, the decoder paints 64x64 from it, super-resolution makes 256x256.

    Defaults are the reference's "fast" setting: prior ddpm 25 steps at guidance 4, decoder
    ddpm 25 steps at guidance 8, super-resolution ddpm 7 steps (--sr-steps, --sr-sampler).
    Image i of each prompt uses seed + i, whatever --batch-size is. --best-of N keeps the
    best of N decoder pictures by a CLIP score (compared at the decoder's 64x64); only the
    winner is super-resolved.
    """
    from ..render.unclip import render_unclip

    manifest = load_manifest(opts.weights)
    clip = _clip_models(manifest, clip_model, clip_stats)
    prior = build_stage(manifest, prior_model, "unclip-prior", prior_sampler, prior_steps, scale=prior_scale, steps_option="--prior-steps")
    decoder, sr = _stages(manifest, size, decoder_model, sampler, steps, scale, sr_model, (sr_sampler, sr_steps))
    ranking = editing.best_of_choice(best_of, rank_model, None)
    jobs = make_jobs(collect_prompts(prompt, prompts_file), num, seed, negative, shard=opts.shard)
    render_to_files(
        "unclip",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_unclip(
            session, todo, prior, decoder, sr, clip=clip, batch_size=batch_size, reporter=reporter, extra_meta=meta,
            best_of=ranking,
        ),
    )


@opt.with_run_options(pattern="{index:05d}-{seed}-vary.png")
def vary(
    image: ImageArg,
    prompt: DecoderPrompt = "",
    scale: DecoderScale = 8.0,
    steps: DecoderSteps = "25",
    sampler: DecoderSampler = "ddpm",
    sr_steps: SrSteps = "7",
    sr_sampler: SrSampler = "ddpm",
    size: Size = None,
    best_of: editing.BestOfOption = 1,
    rank_model: editing.RankModel = "ViT-B-32:laion2b_s34b_b79k",
    num: opt.Num = 1,
    batch_size: opt.BatchSize = "auto",
    seed: opt.Seed = None,
    opts: RunOptions = opt.RUN_OPTIONS,
    decoder_model: DecoderModel = "karlo-decoder",
    sr_model: SrModel = "karlo-sr",
    clip_model: ClipModel = "clip-vit-l-14",
) -> None:
    """Variations of IMAGE: its CLIP image embedding drives the decoder, then super-resolution.

    -n 4 gives four different variations (seeds S..S+3). The decoder's text is empty unless
    --prompt gives one. The PNGs record the source's path and sha256. --best-of N (with
    --prompt) keeps the decoder picture CLIP scores highest for the prompt.
    """
    from ..render.unclip import render_vary

    manifest = load_manifest(opts.weights)
    clip = _clip_models(manifest, clip_model, None)
    decoder, sr = _stages(manifest, size, decoder_model, sampler, steps, scale, sr_model, (sr_sampler, sr_steps))
    _check_picture(image)
    ranking = _best_of(best_of, rank_model, prompt)
    jobs = make_jobs([prompt], num, seed, None, shard=opts.shard)
    render_to_files(
        "vary",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_vary(
            session, todo, image, decoder, sr, clip=clip, batch_size=batch_size, reporter=reporter, extra_meta=meta,
            best_of=ranking,
        ),
    )


@opt.with_run_options(pattern="{index:05d}-{seed}-blend.png")
def blend(
    image_a: Annotated[Path, typer.Argument(metavar="IMAGE_A", help="The picture at --mix 0.", show_default=False)],
    image_b: Annotated[Path, typer.Argument(metavar="IMAGE_B", help="The picture at --mix 1.", show_default=False)],
    mix: Annotated[Optional[float], typer.Option("--mix", min=0.0, max=1.0, help="Where between A (0) and B (1); default 0.5.", show_default=False, rich_help_panel=opt.SAMPLING)] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", min=2, help="A sequence of N pictures from A to B with one seed (instead of --mix).", rich_help_panel=opt.SAMPLING)] = None,
    prompt: DecoderPrompt = "",
    scale: DecoderScale = 8.0,
    steps: DecoderSteps = "25",
    sampler: DecoderSampler = "ddpm",
    sr_steps: SrSteps = "7",
    sr_sampler: SrSampler = "ddpm",
    size: Size = None,
    best_of: editing.BestOfOption = 1,
    rank_model: editing.RankModel = "ViT-B-32:laion2b_s34b_b79k",
    num: opt.Num = 1,
    batch_size: opt.BatchSize = "auto",
    seed: opt.Seed = None,
    opts: RunOptions = opt.RUN_OPTIONS,
    decoder_model: DecoderModel = "karlo-decoder",
    sr_model: SrModel = "karlo-sr",
    clip_model: ClipModel = "clip-vit-l-14",
) -> None:
    """Blend IMAGE_A and IMAGE_B: the spherical interpolation of their CLIP image embeddings
    drives the decoder, as in the unCLIP paper's Figure 4.

    --mix 0.5 (default) gives the halfway picture; --frames N gives N pictures from A (mix 0)
    to B (mix 1), all with the same seed, so only the embedding changes. With -n, sequence
    (or picture) i uses seed + i. --best-of N (with --prompt and --mix) keeps the decoder
    picture CLIP scores highest for the prompt.
    """
    from ..render.unclip import BlendJob, render_blend

    manifest = load_manifest(opts.weights)
    if frames is not None and mix is not None:
        raise click_errors.UsageError("give --mix or --frames, not both")
    clip = _clip_models(manifest, clip_model, None)
    decoder, sr = _stages(manifest, size, decoder_model, sampler, steps, scale, sr_model, (sr_sampler, sr_steps))
    _check_picture(image_a)
    _check_picture(image_b)
    ranking = _best_of(best_of, rank_model, prompt)
    if ranking is not None and frames is not None:
        raise click_errors.UsageError("--frames keeps one seed for the whole sequence; --best-of would pick one per frame: use --mix")
    if frames is not None:
        check_image_count(frames * num, "--frames")
    mixes = [k / (frames - 1) for k in range(frames)] if frames is not None else [0.5 if mix is None else mix]
    seeds = make_jobs([prompt], num, seed, None, shard=opts.shard)
    jobs = [
        BlendJob(prompt, base.seed, i * len(mixes) + k, None, value)
        for i, base in enumerate(seeds)
        for k, value in enumerate(mixes)
    ]
    render_to_files(
        "blend",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_blend(
            session, todo, image_a, image_b, decoder, sr, clip=clip, batch_size=batch_size, reporter=reporter,
            extra_meta=meta, best_of=ranking,
        ),
    )
