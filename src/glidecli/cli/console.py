"""What a rendering command shows at the terminal: a progress bar per stage and one for the
pictures (ConsoleReporter, a render Reporter), and each written picture's line on stdout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from ..diffusion.samplers import StepInfo
    from ..render.engine import RenderedImage
    from ..render.session import Reporter
    from ..render.shard import Split
else:
    Reporter = object  # render.session loads torch, which the CLI leaves until it renders


def announce(
    path: Path, rendered: RenderedImage, as_json: bool, split: Split | None = None, peak_memory: int | None = None
) -> None:
    """A written picture on stdout: its path, or with --json its record (and, on a GPU, the
    most memory the run has held so far, in bytes)."""
    if as_json:
        job = rendered.job
        record = {"path": str(path), "prompt": job.prompt, "seed": job.seed, "index": job.index, "settings": rendered.meta}
        if split is not None and split.active:  # which process wrote it: rank k of N parts
            record.update(rank=split.index, ranks=split.parts)
        if peak_memory is not None:
            record["peak_gpu_memory_bytes"] = peak_memory
        line = json.dumps(record, ensure_ascii=False)
    else:
        line = str(path)
    if sys.stdout is None:  # stdout closed (>&-): the files are written, nobody reads their names
        return
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a caller reading the pipe sees each file as it lands


class ConsoleReporter(Reporter):
    """A render.Reporter: warnings on stderr and, on a terminal unless --quiet, a progress
    bar per stage plus one for the pictures. The bars start with the first sampling step,
    after the models are loaded, so that download bars (download.py) never overlap them."""

    def __init__(self, console: Console, quiet: bool, total: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.total = total
        self.bars: Progress | None = None
        if console.is_terminal and not quiet:
            self.bars = Progress(
                TextColumn("{task.description:>16}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                refresh_per_second=4,  # each redraw holds the GIL for some ms: fewer spare the sampling loop
                # Paths printed to a terminal go above the bars; piped, stdout is left alone.
                redirect_stdout=sys.stdout.isatty(),
                redirect_stderr=False,
            )
        self._tasks: dict[str, TaskID] = {}
        self._updated = 0.0

    def __enter__(self) -> ConsoleReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._tasks and self.bars is not None:
            self.bars.stop()

    def _task(self, bars: Progress, name: str, total: int) -> TaskID:
        if not self._tasks:
            bars.start()
            self._tasks["images"] = bars.add_task("images", total=self.total)
        if name not in self._tasks:
            self._tasks[name] = bars.add_task(name, total=total)
        return self._tasks[name]

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", style="yellow", highlight=False, markup=False, emoji=False, soft_wrap=True)  # user text: no :emoji: codes, one line

    def step(self, stage: str, info: StepInfo) -> None:
        if self.bars is None:
            return
        # The bars redraw 4 times a second on their own thread; more updates than that only
        # cost the sampling loop time, so between a batch's first and last step at most one
        # every 50 ms. (Progress.reset would redraw at once, a few ms each batch: update it.)
        now = time.monotonic()
        if 1 < info.index < info.total and now - self._updated < 0.05:
            return
        self._updated = now
        self.bars.update(self._task(self.bars, stage, info.total), total=info.total, completed=info.index)

    def image_done(self) -> None:
        if self.bars is not None:
            self.bars.advance(self._task(self.bars, "images", self.total))
