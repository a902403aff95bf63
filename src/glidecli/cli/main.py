"""The `glide` command line: generate, upsample, inpaint and clip-guide pictures with GLIDE,
read back a PNG's settings, and manage weights.

torch is imported only by the commands that render (through `glidecli.render`), so
`--help`, `info` and `weights list` answer quickly. Every expected failure reaches `run()`
as an exception and leaves as ONE "error: ..." line on stderr: exit 2 for usage errors,
1 for failures, 130 for Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

try:  # Ctrl-C while the command is still loading its modules: one line too, not a traceback
    import typer

    from .. import __version__
    from ..request.failures import failure_message, is_known_failure
    from ..request.values import RequestError
    from .completion import completion
    from .edit import inpaint, outpaint, upsample
    from .generate import clip_guide, generate
    from .grid import grid
    from .mcp import mcp_command
    from .run import Interrupted, click_errors
    from .score import score
    from .serve import serve
    from .train import Stopped, dataset_app, train_command
    from .unclip import blend, unclip, vary
    from .weights import info_command, weights_app
except KeyboardInterrupt:
    sys.stderr.write("interrupted; 0 images written\n")
    raise SystemExit(130) from None

app = typer.Typer(
    name="glide",
    help="Generate and edit pictures from text with OpenAI's GLIDE diffusion models.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(generate)
app.command("clip-guide")(clip_guide)
app.command()(upsample)
app.command()(inpaint)
app.command()(score)
app.command()(outpaint)
app.add_typer(weights_app, name="weights")
app.command("info")(info_command)
app.command("train")(train_command)
app.add_typer(dataset_app, name="dataset")
app.command()(unclip)
app.command()(vary)
app.command()(blend)
app.command()(serve)
app.command("mcp")(mcp_command)
app.command()(completion)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(grid)

def _version(value: bool) -> None:
    if value:
        typer.echo(f"glide (glidecli) {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Generate and edit pictures from text with OpenAI's GLIDE diffusion models.

    Written files go to stdout (one path per line, or JSON with --json); progress and
    messages go to stderr. Weights are fetched on first use (see `glide weights`).
    """


# --- entry point ------------------------------------------------------------------------------

# The CLI's own expected failures, besides those of request.failures.
_FAILURES = (
    ("glidecli.cli.run", "CommandError"),
    ("glidecli.train.dataset", "DatasetError"),
    ("glidecli.train.start", "TrainingError"),
)


# click >= 8.2 reports "no arguments, show the help" as an error carrying the help text.
_NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())


def _is_peer_failure(error: BaseException) -> bool:
    shard = sys.modules.get("glidecli.render.shard")  # imported by every command that joins ranks
    return shard is not None and "torch.distributed" in sys.modules and shard.peer_failure(error)


def _error(message: str, usage: bool = False) -> None:
    rank = _torchrun_rank()
    if rank and usage:  # every rank meets the same usage error: rank 0 says it once
        return
    where = f"rank {rank}: " if rank is not None and not usage else ""
    sys.stderr.write(f"error: {where}{' '.join(str(message).split())}\n")
    sys.stderr.flush()


def _torchrun_rank() -> int | None:
    """This process's rank when torchrun started several, else None."""
    from ..render.shard import ShardError, torchrun_ranks  # no torch import

    try:
        ranks = torchrun_ranks()
    except ShardError:  # an incomplete torchrun environment: the error says so, once
        return None
    return ranks.rank if ranks.launched else None


def _without_flag_metavars(command):
    """Flags take no value, so --help shows none beside them (typer 0.29 prints `<bool>`)."""
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    make_help_option = command.get_help_option  # click builds --help itself, per command

    def help_option(ctx):
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _without_flag_metavars(sub)
    return command


def run(argv: list[str] | None = None) -> int:
    """Run `glide` with `argv` (default: sys.argv[1:]) and return the exit status."""
    command = _without_flag_metavars(typer.main.get_command(app))
    try:
        result = command.main(args=argv, prog_name="glide", standalone_mode=False)
    except _NO_ARGS_IS_HELP as help_request:
        text = help_request.format_message()  # empty when Typer has printed the help itself
        if text:
            typer.echo(text)
        return 0
    except click_errors.UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        _error(error.format_message() + hint, usage=True)
        return 2
    except click_errors.ClickException as error:
        _error(error.format_message())
        return error.exit_code
    except Interrupted as stop:
        sys.stderr.write(f"interrupted; {stop.written} image{'s' if stop.written != 1 else ''} written\n")
        return 130
    except Stopped as stop:
        sys.stderr.write(f"{stop}\n")
        return 130
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("interrupted; 0 images written\n")
        return 130
    except Exception as error:  # noqa: BLE001 - sorted below; the rest are bugs
        if os.environ.get("GLIDE_DEBUG"):
            raise
        if _is_peer_failure(error):
            _error("another rank of this run stopped (its error says why); this one stops too")
            return 1
        if isinstance(error, RequestError) or (isinstance(error, ValueError) and not is_known_failure(error, _FAILURES)):  # option values
            _error(str(error), usage=True)
            return 2
        message = failure_message(error, _FAILURES)  # out of memory keeps the pictures written before it (render_to_files)
        if message is None:
            raise
        _error(message)
        return 1
    if result == 130:  # Ctrl-C while click itself was running
        sys.stderr.write("interrupted; 0 images written\n")
    return result if isinstance(result, int) else 0


def main() -> None:
    code = run()
    if "torch.distributed" in sys.modules and os.environ.get("TORCHELASTIC_RUN_ID"):
        # A rank of a torchrun: leave without the interpreter's teardown, where gloo's worker
        # threads, destroyed in no particular order, sometimes abort the process (SIGABRT).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
