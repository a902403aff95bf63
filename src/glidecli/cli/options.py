"""Options that several `glide` commands share, declared once (Typer's Annotated style)."""

from __future__ import annotations

import functools
import inspect
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

import typer

from .run import MAX_SEED, RunOptions, click_errors

# Mirrors of names defined in modules that import torch; tests keep them in sync.
SamplerName = Literal["ddpm", "ddim", "plms", "dpmpp_2m", "dpmpp_2m_sde"]
FitMode = Literal["crop", "pad", "stretch"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DtypeName = Literal["auto", "fp32", "fp16", "bf16"]

SAMPLING = "Sampling"
UPSAMPLING = "Upsampler"
OUTPUT = "Output"
MODELS = "Models and device"

# --- options shared by the rendering commands --------------------------------------------

Negative = Annotated[
    Optional[str],
    typer.Option("--negative", "--negative-prompt", help="Replaces the empty prompt of the unguided half (classifier-free guidance).", rich_help_panel=SAMPLING),
]
Steps = Annotated[
    str,
    typer.Option("--steps", help="Base steps: a count ('20'); ddpm/ddim/plms also take sections ('10,10,5'), 'ddimN' or 'fast27'; solvers also 'logsnr20' or 'time20' (the grid). The reference's: --sampler ddpm --steps 100.", rich_help_panel=SAMPLING),
]
Eta = Annotated[float, typer.Option("--eta", min=0.0, help="DDIM noise (0 = deterministic); ddim only.", rich_help_panel=SAMPLING)]
Threshold = Annotated[
    Optional[float],
    typer.Option("--threshold", help="Dynamic thresholding percentile of x0, e.g. 0.995 (off: clip to [-1, 1]).", rich_help_panel=SAMPLING),
]
UpsampleSteps = Annotated[str, typer.Option("--upsample-steps", help="Upsampler steps (same forms as --steps).", rich_help_panel=UPSAMPLING)]
UpsampleTemp = Annotated[
    float, typer.Option("--upsample-temp", min=0.0, help="Scales the upsampler's starting noise (the reference uses 0.997).", rich_help_panel=UPSAMPLING)
]
Size = Annotated[
    Optional[int],
    typer.Option("--size", help="64: base model only; 256 (default): base then upsampler (sizes of the configured models).", show_default=False, rich_help_panel=OUTPUT),
]
PromptsFile = Annotated[
    Optional[Path],
    typer.Option("--prompts-file", help="One prompt per line ('-' reads stdin); blank lines are skipped. Each prompt gets -n images.", rich_help_panel=OUTPUT),
]
Num = Annotated[int, typer.Option("-n", "--num", min=1, help="Images per prompt; image i uses seed + i.", rich_help_panel=OUTPUT)]


def parse_batch_size(value: str) -> "int | str":
    """--batch-size: 'auto' or a positive integer (returned as an int)."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise typer.BadParameter(f"expected 'auto' or a positive integer, got {value!r}")
    return number


BatchSize = Annotated[
    str,
    typer.Option("--batch-size", callback=parse_batch_size, metavar="auto|N", help="Images through the network at once: auto (on a GPU the most that fit its free memory, measured; on the CPU 1) or a number. Does not change the images.", rich_help_panel=OUTPUT),
]
Seed = Annotated[Optional[int], typer.Option("--seed", min=0, max=MAX_SEED, help="Seed of the first image (random when omitted; always printed and recorded).", show_default=False, rich_help_panel=OUTPUT)]
Out = Annotated[Path, typer.Option("--out", "-o", help="A directory, or a .png file name (several images get -1, -2... before .png).", rich_help_panel=OUTPUT)]
Pattern = Annotated[str, typer.Option("--pattern", help="File names in --out: fields {index}, {seed}, {slug}, {prompt_hash}.", rich_help_panel=OUTPUT)]
SkipExisting = Annotated[bool, typer.Option("--skip-existing", help="Skip images whose file exists (resume a batch run: give it the same --seed).", rich_help_panel=OUTPUT)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing files (default: refuse before any work).", rich_help_panel=OUTPUT)]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per written image instead of its path.", rich_help_panel=OUTPUT)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.", rich_help_panel=OUTPUT)]
Shard = Annotated[
    Optional[str],
    typer.Option("--shard", metavar="K/N", help="Render only task K's share of the images (K = 0..N-1): N independent processes (a job array) together write what one would. Needs --seed.", show_default=False, rich_help_panel=OUTPUT),
]
Device = Annotated[DeviceName, typer.Option("--device", help="auto: $GLIDE_DEVICE when set, else CUDA, then MPS, then CPU.", rich_help_panel=MODELS)]
Dtype = Annotated[DtypeName, typer.Option("--dtype", help="auto: fp32 on the CPU, fp16 on a GPU (GLIDE was trained in fp16; norms stay fp32).", rich_help_panel=MODELS)]
Weights = Annotated[
    Optional[Path],
    typer.Option("--weights", envvar="GLIDE_WEIGHTS", help="Weights manifest (TOML); default: the packaged one.", show_default=False, rich_help_panel=MODELS),
]
Compile = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the U-Nets: slower start (cached between runs), faster sampling.", rich_help_panel=MODELS),
]
Offline = Annotated[bool, typer.Option("--offline", help="Never download; use cached or local weights only.", rich_help_panel=MODELS)]
Fit = Annotated[FitMode, typer.Option("--fit", help="Making the picture square: crop (centre), pad (black borders, kept), stretch.", rich_help_panel=SAMPLING)]
Prompt = Annotated[Optional[str], typer.Argument(metavar="PROMPT", help="What to draw (optional with --prompts-file).", show_default=False)]
Scale = Annotated[float, typer.Option("--scale", "--cfg-scale", min=0.0, help="Classifier-free guidance scale (1 = off).", rich_help_panel=SAMPLING)]
Sampler = Annotated[SamplerName, typer.Option("--sampler", help="Base sampler.", rich_help_panel=SAMPLING)]
UpsampleSampler = Annotated[SamplerName, typer.Option("--upsample-sampler", help="Upsampler sampler.", rich_help_panel=UPSAMPLING)]
BaseModel = Annotated[str, typer.Option("--model", help="Base model (manifest name).", rich_help_panel=MODELS)]
UpsampleModel = Annotated[str, typer.Option("--upsample-model", help="Upsampler (manifest name).", rich_help_panel=MODELS)]


# --- the run options, declared once for every rendering command ----------------------------

DEFAULT_PATTERN = "{index:05d}-{seed}-{slug}.png"
RUN_OPTIONS: Any = object()  # placeholder default of a command's `opts` parameter (see with_run_options)


def with_run_options(
    *, pattern: str = DEFAULT_PATTERN, compile_networks: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a rendering command the options of RunOptions (--out ... --weights, --offline)
    without each command declaring them again: Typer builds a command's options from its
    signature, so this swaps the command's `opts: RunOptions = RUN_OPTIONS` parameter for
    them and calls the command with one RunOptions built from their values.

    They take the `opts` parameter's place in the signature (hence in --help), except
    --compile (GLIDE's U-Nets only: compile_networks=True) and --offline, which go last,
    after the command's model options. `pattern` is the command's default --pattern.
    """
    shared = [
        _option("out", Out, Path("outputs")),
        _option("pattern", Pattern, pattern),
        _option("skip_existing", SkipExisting, False),
        _option("overwrite", Overwrite, False),
        _option("json_output", Json, False),
        _option("quiet", Quiet, False),
        _option("shard", Shard, None),
        _option("device", Device, "auto"),
        _option("dtype", Dtype, "auto"),
        _option("weights", Weights, None),
    ]
    last = [_option("compile_networks", Compile, False)] if compile_networks else []
    last.append(_option("offline", Offline, False))
    names = [parameter.name for parameter in shared + last]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())
        at = [parameter.name for parameter in own].index("opts")

        flags = _option_flags(own)

        @functools.wraps(command)
        def run_command(**arguments: Any) -> Any:
            _check_finite(arguments, flags)
            opts = RunOptions(**{name: arguments.pop(name) for name in names})
            return command(**arguments, opts=opts)

        run_command.__signature__ = inspect.Signature(own[:at] + shared + own[at + 1 :] + last)  # type: ignore[attr-defined]
        return run_command

    return decorate


def _option_flags(parameters: list[inspect.Parameter]) -> dict[str, str]:
    """Each option parameter's first flag ('--scale'), for error messages."""
    flags = {}
    for parameter in parameters:
        for extra in typing.get_args(parameter.annotation)[1:]:
            if isinstance(extra, typer.models.OptionInfo):  # in Annotated, the first flag sits in `default`
                decls = [d for d in (extra.default, *extra.param_decls) if isinstance(d, str) and d.startswith("-")]
                flags[parameter.name] = decls[0] if decls else parameter.name
    return flags


def _check_finite(arguments: dict[str, Any], flags: dict[str, str]) -> None:
    """inf or nan in a float option would render black or saturated noise: refuse it (a
    NaN below a `min` is already refused by the option itself)."""
    for name, value in arguments.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise click_errors.BadParameter(f"{value} is not a finite number", param_hint=f"'{flags.get(name, name)}'")


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)
