"""`glide train` and `glide dataset`: training or fine-tuning a model on captioned pictures,
and making the generated shapes data set. torch is imported only when training starts."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from ..request.train_options import SHAPES_SPREAD
from ..request.train_start import command_options, finish_training, start_training, train_request
from ..request.values import Option, RequestError, ValueType
from ..train.vocabulary import SHAPE_SPREAD, TrainKind
from .run import click_errors

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as Bars
    from rich.progress import TaskID

    from ..train.loop import Progress, Trainer
    from ..train.settings import ModelSource
else:
    Progress = object  # train.loop loads torch, which the CLI leaves until training starts


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
    spread: Annotated[
        float, typer.Option(*SHAPES_SPREAD.flags, help=SHAPES_SPREAD.help, min=SHAPES_SPREAD.minimum, max=SHAPES_SPREAD.maximum)
    ] = SHAPE_SPREAD,
) -> None:
    """Write N pictures of a coloured circle, square or triangle on a coloured background,
    each with its caption ("a red circle on a blue background") in a same-name .txt file.

    For trying `glide train`: a small model learns the colours in minutes.
    """
    from ..train.shapes import write_shapes

    count = sum(1 for _ in write_shapes(out, num, size=size, seed=seed, jsonl=jsonl, overwrite=overwrite, spread=spread))
    typer.echo(f"wrote {count} pictures with captions to {out}", err=True)
    typer.echo(str(out / "captions.jsonl") if jsonl else str(out))


FLAGS: Any = object()  # placeholder default of train_command's `values`
_TYPES: dict[ValueType, Any] = {ValueType.INT: int, ValueType.FLOAT: float, ValueType.STR: str, ValueType.BOOL: bool, ValueType.PATH: Path}


def _parameter(name: str, option: Option, default: Any) -> inspect.Parameter:
    """The typer parameter of a request option, with its type, limits and choices: typer parses
    and checks the flag as it did before requests."""
    annotation: Any = Literal[option.choices] if option.choices else _TYPES[option.value_type]
    if option.optional:
        annotation = Optional[annotation]  # noqa: UP045 - a runtime value typer reads
    if option.flags:
        info = typer.Option(
            *option.flags, help=option.help, rich_help_panel=option.panel, show_default=option.show_default,
            min=option.minimum, max=option.maximum, envvar=option.envvar,
        )
    else:
        info = typer.Argument(metavar=option.metavar, help=option.help, show_default=option.show_default)
    required = default is dataclasses.MISSING
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[annotation, info], default=inspect.Parameter.empty if required else default)


def _request_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Declare `glide train`'s flags from its requests' options (request/train.py) and call
    `command` with their values by field name; a RequestError leaves as a usage error (exit 2)."""

    @functools.wraps(command)
    def run_command(**flags: Any) -> None:
        try:
            command(values=flags)
        except RequestError as error:
            raise click_errors.UsageError(str(error)) from None

    run_command.__signature__ = inspect.Signature([_parameter(*item) for item in command_options()])  # type: ignore[attr-defined]
    return run_command


@_request_flags
def train_command(values: Any = FLAGS) -> None:
    """Train a model on DATA: fine-tune a manifest model (--model NAME) or train a fresh
    network (--preset SIZE --model NEW-NAME). --kind clip trains a CLIP of your own, then
    --kind unclip-prior and unclip-decoder --clip NAME an unCLIP on it, and --kind unclip-sr
    --decoder NAME its 4x super-resolution (docs/training.md).

    GLIDE's recipe: random crops resized to the model's size, captions dropped for 20% of
    examples (classifier-free guidance), the hybrid loss (eps MSE + variational bound for
    the learned variance), AdamW, EMA of the weights. Checkpoints let a stopped run
    (Ctrl-C, or killed) continue exactly with --resume. The result is DIR/NAME.safetensors
    (the EMA weights) and DIR/weights.toml:

        glide generate "a red circle on a blue background" --weights DIR/weights.toml --model NAME
    """
    from rich.console import Console

    from ..render.shard import torchrun_ranks
    from ..train.loop import TrainingStopped

    request = train_request(values)
    ranks = torchrun_ranks()  # under torchrun: data parallel, rank 0 reports and writes
    quiet = request.quiet or not ranks.is_main
    console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line
    command_line = shlex.join(["glide", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else ""
    trainer = start_training(request, ranks, _ConsoleProgress(console, quiet, request.log_every), command_line)
    if not quiet:
        _report_start(console, trainer, request.resume)
    try:
        result = finish_training(trainer)
    except TrainingStopped as stop:
        raise Stopped(str(stop)) from None
    if result is None:  # not rank 0
        return
    if not quiet:
        loss = f", loss {result.last_loss:.4f}" if math.isfinite(result.last_loss) else ""  # nan: no step ran
        console.print(f"done: step {result.step}{loss}. Try it:  {_try_command(trainer.source, trainer.cfg, result.manifest)}",
                      highlight=False, markup=False)
    typer.echo(str(result.weights))
    typer.echo(str(result.manifest))


def _report_start(console: Console, trainer: Trainer, resume: bool) -> None:
    """The data set, the captions cut to the model's context, and what trains where."""
    console.print(trainer.dataset.report(), highlight=False, markup=False)
    if trainer.recipe.truncated():
        console.print(f"warning: {trainer.recipe.truncated()} captions are longer than the model's {trainer.cfg.text_ctx} tokens and were cut", style="yellow", highlight=False)
    params = sum(p.numel() for p in trainer.model.parameters())
    size = f"{trainer.cfg.image_size}px, " if hasattr(trainer.cfg, "image_size") else ""
    start = f"resuming at step {trainer.step}" if resume else "starting"
    ranks = trainer.ranks
    where = f" x {ranks.world} processes" if ranks.launched else ""
    console.print(
        f"{start}: {trainer.source.name} ({trainer.source.kind}, {size}{params / 1e6:.1f}M parameters) on"
        f" {trainer.device.type}{where}, batch {trainer.hyper.batch_size}, lr {trainer.hyper.lr:g}, seed {trainer.hyper.seed}",
        highlight=False,
    )


def _try_command(source: ModelSource, cfg: Any, manifest: Path) -> str:
    """The glide command that uses a freshly trained model."""
    where = f"--weights {manifest} --model {source.name}"
    if source.kind == TrainKind.CLIP:
        return f"glide train DATA --kind unclip-prior --clip {source.name} --weights {manifest} --preset tiny --model NAME --out DIR"
    if source.kind == TrainKind.UNCLIP_PRIOR:
        return f"glide train DATA --kind unclip-decoder --clip {source.clip} --weights {manifest} --preset tiny --model NAME --out DIR"
    if source.kind == TrainKind.UNCLIP_DECODER:
        return (f'glide unclip "..." --weights {manifest} --decoder-model {source.name} --clip-model {source.clip}'
                " --prior-model PRIOR --clip-stats PRIOR-stats")
    if source.kind == TrainKind.UNCLIP_SR:
        return (f'glide unclip "..." --weights {manifest} --sr-model {source.name} --decoder-model {source.decoder}'
                " --clip-model CLIP --prior-model PRIOR --clip-stats PRIOR-stats")
    if source.kind == TrainKind.BASE:
        return f'glide generate "..." {where} --size {cfg.image_size}'
    if source.kind == TrainKind.UPSAMPLE:
        return f'glide upsample IMAGE "..." {where}'
    if source.kind == TrainKind.BASE_INPAINT:
        return f'glide inpaint IMAGE MASK "..." {where} --size {cfg.image_size}'
    return f'glide inpaint IMAGE MASK "..." --weights {manifest} --upsample-model {source.name} (with a base-inpaint model in that manifest)'


class _ConsoleProgress(Progress):
    """A training.Progress: a bar with loss and pictures per second on a terminal, else a
    log line every `every` steps; nothing with --quiet."""

    def __init__(self, console: Console, quiet: bool, every: int):
        self.console, self.quiet, self.every = console, quiet, every
        self.bar: Bars | None = None
        self.task: TaskID | None = None
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

        bar = self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss (smoothed) {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.1f} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        bar.start()
        self.task = bar.add_task("train", total=total, completed=step, loss=float("nan"), rate=0.0)

    def update(self, step: int, loss: float, images_per_second: float) -> None:
        if self.bar is not None and self.task is not None:  # the task is added with the bar
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
