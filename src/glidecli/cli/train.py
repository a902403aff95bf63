"""`glide train` and `glide dataset`: training or fine-tuning a model on captioned pictures,
and making the generated shapes data set. torch is imported only when training starts."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from ..nets.kinds import ModelKind
from ..render.defaults import DeviceName
from .run import click_errors

TRAINING = "Training"
SCHEDULE = "Checkpoints and samples"
MODEL = "Model and device"

PresetName = Literal["micro", "tiny", "small", "full"]
KindName = Literal["base", "upsample", "base-inpaint", "upsample-inpaint", "clip", "unclip-prior", "unclip-decoder"]
PredictionName = Literal["eps", "v"]
AmpName = Literal["auto", "fp32", "bf16", "fp16"]
SaveDtype = Literal["fp32", "fp16", "bf16"]


class Stopped(Exception):
    """Training stopped by Ctrl-C after saving a checkpoint; the message says how to resume."""


dataset_app = typer.Typer(help="Make training data sets.", no_args_is_help=True)


@dataset_app.command("shapes")
def shapes_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write (created; must not hold a data set yet).", show_default=False)],
    num: Annotated[int, typer.Option("-n", "--num", min=1, help="Number of pictures.")] = 1000,
    size: Annotated[int, typer.Option("--size", min=8, max=1024, help="Picture side in pixels.")] = 64,
    seed: Annotated[int, typer.Option("--seed", min=0, help="The same seed gives the same data set.")] = 0,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Write captions to one captions.jsonl instead of .txt files.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a folder that already holds pictures.")] = False,
) -> None:
    """Write N pictures of a coloured circle, square or triangle on a coloured background,
    each with its caption ("a red circle on a blue background") in a same-name .txt file.

    For trying `glide train`: a small model learns the colours in minutes.
    """
    from ..train.dataset import write_shapes

    count = sum(1 for _ in write_shapes(out, num, size=size, seed=seed, jsonl=jsonl, overwrite=overwrite))
    typer.echo(f"wrote {count} pictures with captions to {out}", err=True)
    typer.echo(str(out / "captions.jsonl") if jsonl else str(out))


def train_command(
    data: Annotated[Path, typer.Argument(metavar="DATA", help="A folder of pictures with same-name .txt captions, or a .jsonl of {\"path\", \"caption\"} lines.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: weights, weights.toml, checkpoints/, samples/.", show_default=False)],
    model: Annotated[str | None, typer.Option("--model", help="Manifest model to fine-tune; with --preset, the new model's name.", rich_help_panel=MODEL)] = None,
    preset: Annotated[PresetName | None, typer.Option("--preset", help="Train a fresh network of this size instead (micro 16px, tiny 32px, small 64px, full = GLIDE's).", rich_help_panel=MODEL)] = None,
    kind: Annotated[KindName | None, typer.Option("--kind", help="Kind of a fresh network (--preset; default base). clip: a CLIP of your own; unclip-prior, unclip-decoder: unCLIP's, learning from --clip. With a base or upsample --model, base-inpaint or upsample-inpaint starts an inpainting model from it.", show_default=False, rich_help_panel=MODEL)] = None,
    clip: Annotated[str | None, typer.Option("--clip", help="unclip-prior and unclip-decoder: the CLIP (an openclip entry of --weights) whose embeddings they learn.", show_default=False, rich_help_panel=MODEL)] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the trained model (default: --model).", rich_help_panel=MODEL)] = None,
    prediction: Annotated[PredictionName | None, typer.Option("--prediction", help="What the network predicts: eps (GLIDE's models) or v, which learns the prompt's colours far better where the picture is almost pure noise. Given with --model, the model is converted and learns the new target. [default: the model's own; eps for --preset]", show_default=False, rich_help_panel=MODEL)] = None,
    tokenizer_vocab: Annotated[int, typer.Option("--tokenizer-vocab", min=260, help="Vocabulary of the tokenizer a fresh network gets, built from the captions.", rich_help_panel=MODEL)] = 512,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Train up to this step (total, counting resumed steps).", rich_help_panel=TRAINING)] = 1000,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Pictures per step.  [default: 8]", show_default=False, rich_help_panel=TRAINING)] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="AdamW learning rate.  [default: 1e-4]", show_default=False, rich_help_panel=TRAINING)] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", min=0.0, help="AdamW weight decay.  [default: 0]", show_default=False, rich_help_panel=TRAINING)] = None,
    ema: Annotated[float | None, typer.Option("--ema", min=0.0, max=0.999999, help="Decay of the weights' moving average (what is exported).  [default: 0.9999]", show_default=False, rich_help_panel=TRAINING)] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", min=0, help="Steps of linear learning-rate warm-up.  [default: 0]", show_default=False, rich_help_panel=TRAINING)] = None,
    grad_clip: Annotated[float | None, typer.Option("--grad-clip", min=0.0, help="Clip the gradient norm (0 = off).  [default: 1]", show_default=False, rich_help_panel=TRAINING)] = None,
    caption_dropout: Annotated[float | None, typer.Option("--caption-dropout", min=0.0, max=1.0, help="Share of examples trained without caption (for classifier-free guidance).  [default: 0.2]", show_default=False, rich_help_panel=TRAINING)] = None,
    crop_min: Annotated[float | None, typer.Option("--crop-min", min=0.05, max=1.0, help="Random crops keep this much of the short side, or more.  [default: 0.8]", show_default=False, rich_help_panel=TRAINING)] = None,
    min_snr: Annotated[float | None, typer.Option("--min-snr", min=0.0, help="Weight the eps loss by min(SNR, GAMMA)/SNR (Min-SNR-gamma): noisy steps, which decide layout and colour, count relatively more. 0 = GLIDE's plain loss.  [default: 0]", show_default=False, rich_help_panel=TRAINING)] = None,
    noisy_share: Annotated[float | None, typer.Option("--noisy-share", min=0.0, max=1.0, help="Share of examples whose timestep is drawn from the noisiest 15% (t >= 850 of 1000), where the prompt alone decides colour and layout; the rest stay uniform. 0 = GLIDE's uniform timesteps.  [default: 0]", show_default=False, rich_help_panel=TRAINING)] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Seeds the data order, crops, noise and a fresh network.  [default: 0]", show_default=False, rich_help_panel=TRAINING)] = None,
    save_every: Annotated[int, typer.Option("--save-every", min=0, help="Checkpoint every N steps (0: only at the end).", rich_help_panel=SCHEDULE)] = 500,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Checkpoints to keep.", rich_help_panel=SCHEDULE)] = 2,
    sample_every: Annotated[int, typer.Option("--sample-every", min=0, help="Sample pictures every N steps into samples/ (0: only at the end).", rich_help_panel=SCHEDULE)] = 0,
    no_samples: Annotated[bool, typer.Option("--no-samples", help="Write no sample pictures.", rich_help_panel=SCHEDULE)] = False,
    log_every: Annotated[int, typer.Option("--log-every", min=1, help="Write the loss to log.jsonl (and, without a terminal, stderr) every N steps.", rich_help_panel=SCHEDULE)] = 50,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint, exactly.", rich_help_panel=SCHEDULE)] = False,
    save_dtype: Annotated[SaveDtype | None, typer.Option("--save-dtype", help="Precision of the exported weights.  [default: fp32; on --resume, the run's]", show_default=False, rich_help_panel=SCHEDULE)] = None,
    device: Annotated[DeviceName, typer.Option("--device", help="auto: $GLIDE_DEVICE when set, else CUDA, then MPS, then CPU.", rich_help_panel=MODEL)] = "auto",
    dtype: Annotated[AmpName, typer.Option("--dtype", help="Mixed precision (autocast); auto: bf16 (or fp16) on CUDA, fp32 elsewhere.", rich_help_panel=MODEL)] = "auto",
    grad_checkpointing: Annotated[bool, typer.Option("--grad-checkpointing", help="Recompute activations in the backward pass: less memory, more time.", rich_help_panel=MODEL)] = False,
    weights: Annotated[Path | None, typer.Option("--weights", envvar="GLIDE_WEIGHTS", help="Weights manifest (TOML) holding --model; default: the packaged one.", show_default=False, rich_help_panel=MODEL)] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never download; use cached or local weights only.", rich_help_panel=MODEL)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or log lines.")] = False,
) -> None:
    """Train a model on DATA: fine-tune a manifest model (--model NAME) or train a fresh
    network (--preset SIZE --model NEW-NAME). --kind clip trains a CLIP of your own, then
    --kind unclip-prior and unclip-decoder --clip NAME an unCLIP on it (docs/training.md).

    GLIDE's recipe: random crops resized to the model's size, captions dropped for 20% of
    examples (classifier-free guidance), the hybrid loss (eps MSE + variational bound for
    the learned variance), AdamW, EMA of the weights. Checkpoints let a stopped run
    (Ctrl-C, or killed) continue exactly with --resume. The result is DIR/NAME.safetensors
    (the EMA weights) and DIR/weights.toml:

        glide generate "a red circle on a blue background" --weights DIR/weights.toml --model NAME
    """
    from rich.console import Console

    from ..files.manifest import load_manifest
    from ..render.shard import join_group, leave_group, rank_device, torchrun_ranks
    from ..train.loop import Trainer, TrainingStopped
    from ..train.settings import Hyper, ModelSource, RunPlan

    console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line
    ranks = torchrun_ranks()  # under torchrun: data parallel, rank 0 reports and writes
    quiet = quiet or not ranks.is_main
    given = {
        key: value
        for key, value in dict(
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, ema=ema, warmup=warmup, grad_clip=grad_clip,
            caption_dropout=caption_dropout, crop_min=crop_min, min_snr=min_snr, noisy_share=noisy_share, seed=seed,
        ).items()
        if value is not None
    }
    resolved_device = rank_device(device, ranks)
    if dtype == "auto":
        import torch

        amp = "fp32"
        if resolved_device.type == "cuda":
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        amp = dtype
        given["amp"] = amp
    # unCLIP's decoder drops the caption for half of its examples (DALL-E 2), Karlo's prior for 20%.
    kind_defaults = {"caption_dropout": 0.5} if kind == ModelKind.UNCLIP_DECODER else {}
    hyper = Hyper(**{**kind_defaults, **given, "amp": amp})
    try:
        hyper.check()
    except ValueError as error:
        raise click_errors.UsageError(str(error)) from None

    manifest = None
    if resume:
        source = ModelSource(name="")  # replaced by the checkpoint's
        if preset is not None or model is not None or name is not None or kind is not None or prediction is not None or clip is not None:
            raise click_errors.UsageError(
                "--resume continues the run in --out; leave out --model, --preset, --name, --kind, --prediction and --clip"
            )
    else:
        if model is None:
            raise click_errors.UsageError("missing --model NAME (the model to fine-tune, or with --preset the new model's name)")
        new_name = name or model
        if not new_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise click_errors.BadParameter(f"{new_name!r}: use letters, digits, '-', '_' and '.'", param_hint="'--name'")
        changes = {"prediction": prediction} if prediction is not None else {}
        if clip is not None and kind not in (ModelKind.UNCLIP_PRIOR, ModelKind.UNCLIP_DECODER):
            raise click_errors.UsageError("--clip goes with --kind unclip-prior or unclip-decoder")
        if kind in (ModelKind.UNCLIP_PRIOR, ModelKind.UNCLIP_DECODER):
            if clip is None:
                raise click_errors.UsageError(f"--kind {kind} needs --clip NAME: the CLIP (an openclip entry of --weights) it learns from")
            manifest = load_manifest(weights)
        if preset is not None:
            source = ModelSource(name=new_name, kind=kind or ModelKind.BASE, preset=preset, tokenizer_vocab=tokenizer_vocab, arch_changes=changes, clip=clip)
        else:
            manifest = load_manifest(weights)
            entry = manifest.model(model)
            if kind is not None and kind not in (entry.kind, f"{entry.kind}-inpaint"):
                raise click_errors.BadParameter(
                    f"{model!r} is a {entry.kind} model; it trains as {entry.kind}"
                    + ("" if entry.kind.endswith("-inpaint") else f" or, to start an inpainting model, {entry.kind}-inpaint"),
                    param_hint="'--kind'",
                )
            source = ModelSource(name=new_name, kind=kind or entry.kind, entry=model, arch_changes=changes)
    plan = RunPlan(
        steps=steps, save_every=save_every, sample_every=sample_every, samples=not no_samples, keep_checkpoints=keep,
        log_every=log_every, grad_checkpointing=grad_checkpointing, save_dtype=save_dtype,
    )
    progress = _ConsoleProgress(console, quiet, log_every)
    join_group(ranks, "nccl" if resolved_device.type == "cuda" else "gloo")
    trainer = Trainer(
        data, out, source, hyper, plan, manifest=manifest, resume=resume, device=resolved_device, offline=offline or None,
        progress=progress, command_line=shlex.join(["glide", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else "",
        hyper_given=set(given), ranks=ranks,
    )
    if not quiet:
        dataset = trainer.dataset
        console.print(dataset.report(), highlight=False, markup=False)
        if trainer.recipe.truncated():
            console.print(f"warning: {trainer.recipe.truncated()} captions are longer than the model's {trainer.cfg.text_ctx} tokens and were cut", style="yellow", highlight=False)
        params = sum(p.numel() for p in trainer.model.parameters())
        size = f"{trainer.cfg.image_size}px, " if hasattr(trainer.cfg, "image_size") else ""
        start = f"resuming at step {trainer.step}" if resume else "starting"
        where = f" x {ranks.world} processes" if ranks.launched else ""
        console.print(
            f"{start}: {trainer.source.name} ({trainer.source.kind}, {size}{params / 1e6:.1f}M parameters) on"
            f" {resolved_device.type}{where}, batch {trainer.hyper.batch_size}, lr {trainer.hyper.lr:g}, seed {trainer.hyper.seed}",
            highlight=False,
        )
    try:
        result = trainer.run()
    except TrainingStopped as stop:
        leave_group()
        if not ranks.is_main:  # rank 0 says how to resume
            return
        raise Stopped(str(stop)) from None
    leave_group()
    if not ranks.is_main:
        return
    if not quiet:
        loss = f", loss {result.last_loss:.4f}" if math.isfinite(result.last_loss) else ""  # nan: no step ran
        console.print(f"done: step {result.step}{loss}. Try it:  {_try_command(trainer.source, trainer.cfg, result.manifest)}",
                      highlight=False, markup=False)
    typer.echo(str(result.weights))
    typer.echo(str(result.manifest))


def _try_command(source, cfg, manifest: Path) -> str:
    """The glide command that uses a freshly trained model."""
    where = f"--weights {manifest} --model {source.name}"
    if source.kind == "clip":
        return f"glide train DATA --kind unclip-prior --clip {source.name} --weights {manifest} --preset tiny --model NAME --out DIR"
    if source.kind == ModelKind.UNCLIP_PRIOR:
        return f"glide train DATA --kind unclip-decoder --clip {source.clip} --weights {manifest} --preset tiny --model NAME --out DIR"
    if source.kind == ModelKind.UNCLIP_DECODER:
        return (f'glide unclip "..." --weights {manifest} --decoder-model {source.name} --clip-model {source.clip}'
                " --prior-model PRIOR --clip-stats PRIOR-stats")
    if source.kind == ModelKind.BASE:
        return f'glide generate "..." {where} --size {cfg.image_size}'
    if source.kind == ModelKind.UPSAMPLE:
        return f'glide upsample IMAGE "..." {where}'
    if source.kind == ModelKind.BASE_INPAINT:
        return f'glide inpaint IMAGE MASK "..." {where} --size {cfg.image_size}'
    return f'glide inpaint IMAGE MASK "..." --weights {manifest} --upsample-model {source.name} (with a base-inpaint model in that manifest)'


class _ConsoleProgress:
    """A training.Progress: a bar with loss and pictures per second on a terminal, else a
    log line every `every` steps; nothing with --quiet."""

    def __init__(self, console, quiet: bool, every: int):
        self.console, self.quiet, self.every = console, quiet, every
        self.bar = None
        self.task = None
        self.total = 0

    def start(self, step: int, total: int) -> None:
        self.total = total
        if self.quiet or not self.console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss (smoothed) {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.1f} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=step, loss=float("nan"), rate=0.0)

    def update(self, step: int, loss: float, images_per_second: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss, rate=images_per_second)
        elif not self.quiet and (step % self.every == 0 or step == self.total):
            self.console.print(f"step {step}/{self.total}  loss (smoothed) {loss:.4f}  {images_per_second:.1f} img/s", highlight=False)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
