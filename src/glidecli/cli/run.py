"""What every rendering command of `glide` shares once its request is planned (glidecli.request):
reading prompts files, planning output files, and writing each picture as it arrives.

Everything that can be refused (bad options, files in the way, unwritable directories)
is checked before any model loads. torch is imported only once rendering starts.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

try:  # recent typer ships its own copy of click, and its commands raise that copy's errors
    from typer._click import exceptions as click_errors
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_errors  # type: ignore[no-redef]
    from click import get_current_context  # type: ignore[no-redef]
    from click.core import ParameterSource  # type: ignore[no-redef, assignment]

from ..files.text_file import TextFileError, read_text_file
from ..files.vocabulary import ImageFormat
from .console import ConsoleReporter, announce

if TYPE_CHECKING:
    from rich.console import Console

    from ..render.engine import Job, RenderedImage, Session
    from ..render.shard import Split
    from ..request.plan import RenderPlan


class CommandError(Exception):
    """A failure the user can fix that no other module names (unreadable prompts file...)."""


class Interrupted(Exception):
    """Ctrl-C during a render; `written` pictures were saved completely before it."""

    def __init__(self, written: int):
        super().__init__(f"interrupted; {written} images written")
        self.written = written


@dataclass(frozen=True)
class RunOptions:
    """Where and how a rendering command writes, and what it renders on."""

    out: Path
    pattern: str
    skip_existing: bool
    overwrite: bool
    json_output: bool
    quiet: bool
    device: str
    dtype: str
    weights: Path | None
    offline: bool
    compile_networks: bool = False  # --compile, on the commands that have it
    shard: str | None = None  # 'k/N': this task's part of a job array (render/shard.py)
    offload: str = "none"  # --offload: none, model or sequential (render/offload.py)
    from_image: Path | None = None  # --from: a picture whose recorded settings are the defaults


# --- prompts and seeds ---------------------------------------------------------------------------


def collect_prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """PROMPT, or the lines of --prompts-file; none when neither is given (--from may give
    one; the request says when none is missing)."""
    if prompt is not None and prompts_file is not None:
        raise click_errors.UsageError("give PROMPT or --prompts-file, not both")
    if str(prompts_file) == "-" and _launched():
        raise click_errors.UsageError("torchrun's ranks cannot share stdin: give --prompts-file a file")
    if prompts_file is None:
        return [] if prompt is None else [prompt]
    if str(prompts_file) == "-":
        text = _read_stdin()
    else:
        try:
            text = read_text_file(prompts_file, "prompts file")
        except TextFileError as error:
            raise CommandError(str(error)) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise CommandError(f"no prompts in {'stdin' if str(prompts_file) == '-' else prompts_file}")
    return prompts


def _read_stdin() -> str:
    """The prompts piped in: UTF-8 text, or CommandError (stdin closed, not text)."""
    if sys.stdin is None or sys.stdin.closed:
        raise CommandError("--prompts-file - reads stdin, but stdin is closed")
    stream = getattr(sys.stdin, "buffer", None)  # bytes, so that the encoding is ours to check
    try:
        data = stream.read() if stream is not None else sys.stdin.read()
    except OSError as error:
        raise CommandError(f"cannot read prompts from stdin: {error.strerror or error}") from None
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("the prompts on stdin are not UTF-8 text") from None


# --- output files ---------------------------------------------------------------------------------


def plan_outputs(
    opts: RunOptions, jobs: list[Job], console, part: range | None = None, label: str = "", image_format: ImageFormat = ImageFormat.PNG,
) -> list[tuple[Job, Path]]:
    """The jobs still to do with their files (pictures in `image_format`); refuses clashes
    before any work. With `part` (a process's share of a split run), only those jobs' files
    are checked and kept."""
    from ..files.pngfile import ImageError, render_output_path

    planned = [
        (job, render_output_path(opts.out, index=job.index, seed=job.seed, prompt=job.prompt, pattern=opts.pattern, count=len(jobs), image_format=image_format))
        for job in jobs
    ]
    seen: dict[Path, int] = {}
    for job, path in planned:
        if path in seen:
            raise click_errors.BadParameter(
                f"images {seen[path]} and {job.index} would both be written to {path}; put {{index}} or {{seed}} in it",
                param_hint="'--pattern'",
            )
        seen[path] = job.index
    if part is not None:
        planned = planned[part.start : part.stop]
    existing = [path for _, path in planned if path.exists()]
    if opts.skip_existing and opts.overwrite:
        raise click_errors.UsageError("--skip-existing and --overwrite exclude each other")
    if opts.skip_existing and not existing and (other := _same_pictures_other_seed(opts, planned, len(jobs), image_format)) is not None:
        console.print(
            f"{label}note: none of these files exist, but {other} is one of these pictures with another seed;"
            " to resume that run, give its --seed (`glide info` shows it)",
            highlight=False,
        )
    if existing and opts.skip_existing:
        console.print(f"{label}skipping {len(existing)} of {len(planned)} images that already exist", highlight=False)
        planned = [(job, path) for job, path in planned if not path.exists()]
    elif existing and not opts.overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ImageError(
            f"output file {existing[0]} already exists{more}; use --skip-existing to resume or --overwrite to replace"
        )
    for directory in sorted({path.parent for _, path in planned}):
        check_writable(directory)
    return planned


def _same_pictures_other_seed(opts: RunOptions, planned: list[tuple[Job, Path]], count: int, image_format: ImageFormat) -> Path | None:
    """A file of one of these pictures (same index and prompt) under another seed, if the
    names hold the seed: what `--skip-existing` without the first run's `--seed` misses."""
    from ..files.pngfile import render_output_path

    marker = str(10**15 + 7)  # a seed no run uses, turned into a wildcard
    for job, path in planned[:64]:
        probe = render_output_path(
            opts.out, index=job.index, seed=int(marker), prompt=job.prompt, pattern=opts.pattern, count=count, image_format=image_format,
        )
        if marker not in probe.name:
            return None
        for other in sorted(probe.parent.glob(glob.escape(probe.name).replace(marker, "*"))):
            if other != path:
                return other
    return None


def _launched() -> bool:
    from ..render.shard import torchrun_ranks

    return torchrun_ranks().launched


def check_writable(directory: Path) -> None:
    from ..files.pngfile import ImageError

    for folder in (directory, *directory.parents):
        if folder.is_dir():
            break
        if os.path.lexists(folder):  # a file, a pipe, a broken or looping link
            raise ImageError(f"cannot write into {directory}: {folder} exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageError(f"cannot create output directory {directory}: {error.strerror or error}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ImageError(f"cannot write to output directory {directory}: permission denied or a read-only file system")


# --- rendering ----------------------------------------------------------------------------------

CAPTURE = "glidecli.capture"  # a click context's meta key: where render_request leaves the request instead


def render_request(request_type: type, values: dict[str, Any], opts: RunOptions) -> int:
    """Build the request from a command's values (converted and checked; with --from, the
    picture's recorded settings fill what the command line leaves out), plan it against the
    manifest, and render it to files."""
    from ..files.manifest import load_manifest
    from ..request.building import build
    from ..request.planner import plan_request

    first_index = 0
    if opts.from_image is not None:
        values, first_index, opts = _with_recorded(request_type, values, opts.from_image, opts)
    capture = get_current_context().meta.get(CAPTURE)
    if capture is not None:  # glide grid asked what the command would render, not to render it
        capture.append((request_type, values, opts))
        return 0
    plan = plan_request(build(request_type, values), load_manifest(opts.weights), opts.shard)
    if first_index:  # the picture again under its own index (its record and its name hold it)
        plan.jobs = [dataclasses.replace(job, index=job.index + first_index) for job in plan.jobs]
    return render_to_files(plan, opts)


def _with_recorded(request_type: type[Any], values: dict[str, Any], picture: Path, opts: RunOptions) -> tuple[dict[str, Any], int, RunOptions]:
    """`values` with the --from picture's recorded settings where the command line gave none,
    the picture's index, and `opts` with its dtype when the command line and $GLIDE_DTYPE
    leave it to auto and this run is on the picture's device (so the picture comes back bit
    for bit); one warning line lists what the record holds that maps onto no option."""
    from ..files.pictures import read_picture_record
    from ..request.replay import recorded_values

    record = read_picture_record(picture)
    recorded, unmapped = recorded_values(record, request_type.command, str(picture))
    context = get_current_context()
    given = {
        name for name, value in values.items()
        if (context.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
            if name in context.params else value not in (None, (), []))
    }
    if unmapped:
        sys.stderr.write(f"warning: {picture} records settings that map onto no option of glide {request_type.command}: {', '.join(unmapped)}\n")
    index = record.get("index", 0)
    if opts.dtype == "auto" and not os.environ.get("GLIDE_DTYPE") and record.get("dtype") in ("fp32", "fp16", "bf16"):
        from ..render.session import resolve_device

        if resolve_device(opts.device).type == record.get("device"):
            opts = dataclasses.replace(opts, dtype=record["dtype"])
    merged = {**values, **{name: value for name, value in recorded.items() if name not in given}}
    if "lora" in recorded and "lora" not in given:
        _warn_changed_adapters(record, opts, str(picture))
    return merged, index if isinstance(index, int) and index >= 0 else 0, opts


def _warn_changed_adapters(record: dict[str, Any], opts: RunOptions, picture: str) -> None:
    """A warning line for each replayed adapter whose file changed since the picture was made;
    a manifest that cannot be read is left to the render's own error."""
    from ..files.manifest import ManifestError, load_manifest
    from ..request.replay import changed_adapters

    try:
        manifest = load_manifest(opts.weights)
    except ManifestError:
        return
    for warning in changed_adapters(record, manifest, picture):
        sys.stderr.write(f"warning: {warning}\n")


def run_session(manifest: Any, opts: RunOptions, console: Any, device: Any = None, label: str = "") -> Session:
    """The Session a command renders with: its options' device, dtype, offload and compile, notes on stderr."""
    from ..render.engine import Session

    return Session(
        manifest, device=device or opts.device, dtype=opts.dtype, offline=opts.offline or None, show_progress=not opts.quiet,
        compile=opts.compile_networks, offload=opts.offload,
        note=lambda text: console.print(f"{label}note: {text}", highlight=False, markup=False, soft_wrap=True),
    )


def render_to_files(plan: RenderPlan, opts: RunOptions) -> int:
    """Check outputs, load models, render, and write each picture as soon as it is ready;
    returns the number written. Ctrl-C raises Interrupted with that number."""
    from rich.console import Console

    from ..files.pictures import output_format, write_picture
    from ..files.writer import BackgroundWriter
    from ..render.shard import barrier, current_split, rank_device
    from .frames import StepFrames, write_animations, write_step_frames

    console = Console(stderr=True)
    for warning in plan.warnings:
        console.print(f"warning: {warning}", highlight=False, markup=False)
    jobs = plan.jobs
    split = current_split(opts.shard)  # this process's share of the jobs (torchrun, --shard)
    label = f"{split.label()}: " if split.active else ""
    part = split.of(len(jobs))
    image_format = output_format(plan.image_format, opts.out)
    planned = plan_outputs(opts, jobs, console, part, label, image_format)
    barrier(split.ranks)  # no rank writes before every rank has checked its files
    started = time.perf_counter()
    idle = _nothing_to_render(part, bool(planned), label, split.parts, len(jobs), console)
    if idle is not None:
        return _finish(split, opts, 0, idle, started)
    session = run_session(plan.manifest, opts, console, rank_device(opts.device, split.ranks), label)
    if split.ranks.is_main:
        _print_seeds(jobs, console)
    paths = {job.index: path for job, path in planned}
    # Encoding and writing run on a few threads of their own, so sampling never waits for
    # them; each file is announced in the order rendered, once it is written.
    writer = BackgroundWriter()

    written: set[int] = set()

    def save(rendered: RenderedImage, steps: list | None) -> Path:
        path = write_picture(rendered.image, paths[rendered.job.index], rendered.meta, image_format, plan.quality, overwrite=opts.overwrite)
        if steps:
            write_step_frames(path, rendered.image, steps, plan.animate or "gif", rendered.meta, opts.overwrite)
        return path

    def report(rendered: RenderedImage, reporter: ConsoleReporter, path: Path) -> None:
        reporter.image_done()
        written.add(rendered.job.index)
        announce(path, rendered, opts.json_output, split, session.peak_memory())

    try:
        with ConsoleReporter(console, opts.quiet, len(planned)) as reporter:
            frames = StepFrames(reporter, plan.show_steps) if plan.show_steps else None
            for rendered in plan.run(session, [job for job, _ in planned], frames or reporter):
                steps = frames.take() if frames is not None else None
                writer.submit(save, rendered, steps, report=functools.partial(report, rendered, reporter))
            writer.close()
        for path in write_animations(plan, paths, written, opts.overwrite, lambda text: console.print(f"{label}note: {text}", highlight=False)):
            _announce_animation(path, plan, opts)
    except KeyboardInterrupt:
        writer.close()  # the finished pictures still queued are written (again if Ctrl-C hit the wait)
        raise Interrupted(writer.done) from None
    finally:
        writer.finish()  # after any other failure too, the finished pictures are kept
    return _finish(split, opts, writer.done, len(part) - len(planned), started)


def _nothing_to_render(part: range, planned: bool, label: str, parts: int, count: int, console: Console) -> int | None:
    """When this process has no picture to make, says why and gives the pictures it skipped."""
    if not part:
        console.print(f"{label}no images for this process: {parts} processes share {count} images", highlight=False)
        return 0
    if not planned:
        console.print(f"{label}nothing to do: every image exists", highlight=False)
        return len(part)
    return None


def _print_seeds(jobs: list[Job], console: Console) -> None:
    seeds = sorted({job.seed for job in jobs})
    console.print(f"seed {seeds[0]}" + (f" (images use {seeds[0]}..{seeds[-1]})" if len(seeds) > 1 else ""), highlight=False)


def _announce_animation(path: Path, plan: RenderPlan, opts: RunOptions) -> None:
    if sys.stdout is not None:
        sys.stdout.write((json.dumps({"path": str(path), "animation": plan.animate}) if opts.json_output else str(path)) + "\n")


def _finish(split: Split, opts: RunOptions, written: int, skipped: int, started: float) -> int:
    """Under torchrun, wait for every rank; rank 0 then sums up the run in one line."""
    from ..render.shard import gather, leave_group

    if not split.ranks.launched:
        return written
    # gather hands back each rank's value as an object: here (written, skipped, seconds)
    counts = [cast(tuple[int, int, float], c) for c in gather(split.ranks, (written, skipped, time.perf_counter() - started))]
    leave_group()
    if split.ranks.is_main:
        total, skips, seconds = sum(c[0] for c in counts), sum(c[1] for c in counts), max(c[2] for c in counts)
        summary: dict[str, int | float | str | None] = {
            "ranks": split.ranks.world, "written": total, "skipped": skips, "seconds": round(seconds, 3),
            "images_per_second": round(total / seconds, 3) if seconds > 0 else None,
        }
        if split.shard:
            summary["shard"] = f"{split.shard[0]}/{split.shard[1]}"
        if opts.json_output:
            sys.stdout.write(json.dumps({"summary": summary}) + "\n")
            sys.stdout.flush()
        else:
            rate = f", {summary['images_per_second']} images/s" if summary["images_per_second"] else ""
            sys.stderr.write(f"all {split.ranks.world} ranks done: {total} images written, {skips} skipped, {seconds:.1f} s{rate}\n")
    return written
