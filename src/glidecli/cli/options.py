"""Options that several `glide` commands share, declared once (Typer's Annotated style)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..files.roles import PACKAGED_NAMES, Role
from ..render import defaults
from ..render.defaults import DeviceName, DtypeName, OffloadName
from ..request import options as o
from ..request import values
from ..request.commands import file_pattern, option_fields, role_help
from ..request.values import RequestError, ValueType
from .run import RunOptions, click_errors

OUTPUT = values.OUTPUT
MODELS = values.MODELS

# --- the options of every rendering command that are not part of its request ----------------------

PromptsFile = Annotated[
    Path | None,
    typer.Option("--prompts-file", help="One prompt per line ('-' reads stdin); blank lines are skipped. Each prompt gets -n images.", rich_help_panel=OUTPUT),
]
Out = Annotated[
    Path,
    typer.Option("--out", "-o", help="A directory, or a file name: .png, .jpg or .webp (its format unless --format says; several images get -1, -2... before the suffix).", rich_help_panel=OUTPUT),
]
Pattern = Annotated[str, typer.Option("--pattern", help="File names in --out: fields {index}, {seed}, {slug}, {prompt_hash}; the suffix follows --format.", rich_help_panel=OUTPUT)]
SkipExisting = Annotated[bool, typer.Option("--skip-existing", help="Skip images whose file exists (resume a batch run: give it the same --seed).", rich_help_panel=OUTPUT)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing files (default: refuse before any work).", rich_help_panel=OUTPUT)]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per written image instead of its path.", rich_help_panel=OUTPUT)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.", rich_help_panel=OUTPUT)]
Shard = Annotated[
    str | None,
    typer.Option("--shard", metavar="K/N", help="Render only task K's share of the images (K = 0..N-1): N independent processes (a job array) together write what one would. Needs --seed.", show_default=False, rich_help_panel=OUTPUT),
]
Device = Annotated[DeviceName, typer.Option("--device", help="auto: $GLIDE_DEVICE when set, else CUDA, then MPS, then CPU.", rich_help_panel=MODELS)]
Dtype = Annotated[DtypeName, typer.Option("--dtype", help="auto: $GLIDE_DTYPE when set, else fp16 on a GPU; on the CPU bf16 where the processor computes it natively (AVX512_BF16, AMX), else fp32 (norms stay fp32).", rich_help_panel=MODELS)]
Offload = Annotated[
    OffloadName,
    typer.Option("--offload", help="Weights off the GPU while they wait: none (fastest), model (only the running network on the GPU), sequential (block by block, the least memory).", rich_help_panel=MODELS),
]
Weights = Annotated[
    Path | None,
    typer.Option("--weights", envvar="GLIDE_WEIGHTS", help="Weights manifest (TOML); default: the packaged one.", show_default=False, rich_help_panel=MODELS),
]
Compile = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the U-Nets: slower start (cached between runs), faster sampling.", rich_help_panel=MODELS),
]
Offline = Annotated[bool, typer.Option("--offline", help="Never download; use cached or local weights only.", rich_help_panel=MODELS)]
Prompt = Annotated[str | None, typer.Argument(metavar="PROMPT", help="What to draw (optional with --prompts-file or --from).", show_default=False)]
FromImage = Annotated[
    Path | None,
    typer.Option("--from", metavar="IMAGE", help="Take this picture's recorded command settings (glide's, or A1111's 'parameters') as the defaults; flags given win. Same device and dtype: the same picture.", show_default=False, rich_help_panel=values.SAMPLING),
]
RankModel = Annotated[
    str | None,
    typer.Option("--rank-model", help=f"{o.RANK_MODEL.help} [default: the manifest's rank model; packaged: {PACKAGED_NAMES[Role.RANK]}]", rich_help_panel=MODELS),
]


# --- a request's options as typer parameters ---------------------------------------------------------

_METAVARS = {ValueType.INT: "<int>", ValueType.FLOAT: "<float>", ValueType.FLOATS: "<floats>", ValueType.STR: "<str>", ValueType.BATCH: "<auto|N>", ValueType.PICTURE: "<path>", ValueType.PATH: "<path>"}  # typer's own style


def request_parameters(request_type: type) -> list[inspect.Parameter]:
    """One typer option per flagged field of a request type (positional fields are the
    command's own arguments). Typer only collects each flag's text; `building.build`
    converts and checks it, as it does the server's JSON, so a rule and its message exist once."""
    parameters = []
    for name, option, default in option_fields(request_type):
        if not option.flags:
            continue
        text = option.help + role_help(request_type, name)  # a model field: the manifest's model for its role
        extra: dict[str, Any] = {}
        if option.value_type == ValueType.BOOL:
            annotation: Any = bool
        elif option.value_type == ValueType.ADAPTERS:  # a flag given again adds one
            annotation, default = Optional[list[str]], None  # noqa: UP045 - a runtime value typer reads
            extra["metavar"] = f"<{option.metavar}>"
        else:
            annotation = Optional[str] if default is None else str  # noqa: UP045 - a runtime value typer reads
            extra["metavar"] = f"<{option.metavar}>" if option.metavar else "<" + "|".join(option.choices) + ">" if option.choices else _METAVARS[option.value_type]
            if option.choices:  # tab completion offers them (the request checks them)
                extra["autocompletion"] = _completer(option.choices)
        info = typer.Option(*option.flags, help=text, rich_help_panel=option.panel, show_default=option.show_default, **extra)
        parameters.append(_option(name, Annotated[annotation, info], default))
    return parameters


# --- a rendering command: its request's options and the run options --------------------------------

RUN_OPTIONS: Any = object()  # placeholder default of a command's `opts` parameter
REQUEST: Any = object()  # placeholder default of a command's `values` parameter


def rendering_command(request_type: type, *, compile_networks: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a rendering command's options once, from its request type. Typer builds a
    command's options from its signature, so this swaps the command's `values=REQUEST`
    parameter for one option per request field and `opts=RUN_OPTIONS` for the options of
    RunOptions (--out ... --weights), then calls the command with the request's raw values
    (a dict by field name) and one RunOptions.

    The command's own parameters (its positional arguments, --prompts-file) come first.
    --compile (GLIDE's U-Nets only: compile_networks=True) and --offline go last. A
    RequestError the command raises leaves as a usage error (exit 2), its text unchanged.
    """
    shared = [
        _option("out", Out, Path("outputs")),
        _option("pattern", Pattern, file_pattern(request_type)),
        _option("skip_existing", SkipExisting, False),
        _option("overwrite", Overwrite, False),
        _option("json_output", Json, False),
        _option("quiet", Quiet, False),
        _option("shard", Shard, None),
        _option("device", Device, "auto"),
        _option("dtype", Dtype, "auto"),
        _option("offload", Offload, "none"),
        _option("weights", Weights, None),
        _option("from_image", FromImage, None),
    ]
    last = [_option("compile_networks", Compile, False)] if compile_networks else []
    last.append(_option("offline", Offline, False))
    run_names = [parameter.name for parameter in shared + last]
    fields = request_parameters(request_type)
    field_names = [parameter.name for parameter in fields]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name not in ("values", "opts")]

        @functools.wraps(command)
        def run_command(**arguments: Any) -> Any:
            opts = RunOptions(**{name: arguments.pop(name) for name in run_names})
            values = {name: arguments.pop(name) for name in field_names}
            try:
                return command(**arguments, values=values, opts=opts)
            except RequestError as error:
                raise click_errors.UsageError(str(error)) from None

        run_command.__signature__ = inspect.Signature(own + fields + shared + last)  # type: ignore[attr-defined]
        # The help names the defaults by their declarations ({GENERATE_BASE.steps}), never restates them.
        run_command.__doc__ = (command.__doc__ or "").format_map(vars(defaults))
        return run_command

    return decorate


def _completer(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)
