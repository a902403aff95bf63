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
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from . import cli_options as opt
from .cli_run import Interrupted, RunOptions, build_stage, click_errors, collect_prompts, make_jobs, render_to_files, wants_upsampler
from .cli_train import Stopped, dataset_app, train_command
from .cli_weights import info_command, weights_app
from .manifest import load_manifest

app = typer.Typer(
    name="glide",
    help="Generate and edit pictures from text with OpenAI's GLIDE diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(weights_app, name="weights")
app.command("info")(info_command)
app.command("train")(train_command)
app.add_typer(dataset_app, name="dataset")

def _version(value: bool) -> None:
    if value:
        typer.echo(f"glide (glidecli) {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Generate and edit pictures from text with OpenAI's GLIDE diffusion models.

    Written files go to stdout (one path per line, or JSON with --json); progress and
    messages go to stderr. Weights are fetched on first use (see `glide weights`).
    """


@app.command()
def generate(
    prompt: opt.Prompt = None,
    scale: opt.Scale = 3.0,
    negative: opt.Negative = None,
    steps: opt.Steps = "20",
    sampler: opt.Sampler = "dpmpp_2m_sde",
    eta: opt.Eta = 0.0,
    threshold: opt.Threshold = None,
    upsample_steps: opt.UpsampleSteps = "15",
    upsample_sampler: opt.UpsampleSampler = "dpmpp_2m",
    upsample_temp: opt.UpsampleTemp = 0.997,
    size: opt.Size = None,
    prompts_file: opt.PromptsFile = None,
    num: opt.Num = 1,
    batch_size: opt.BatchSize = 1,
    seed: opt.Seed = None,
    out: opt.Out = Path("outputs"),
    pattern: opt.Pattern = "{index:05d}-{seed}-{slug}.png",
    skip_existing: opt.SkipExisting = False,
    overwrite: opt.Overwrite = False,
    json_output: opt.Json = False,
    quiet: opt.Quiet = False,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    weights: opt.Weights = None,
    model: opt.BaseModel = "base",
    upsample_model: opt.UpsampleModel = "upsample",
    offline: opt.Offline = False,
) -> None:
    """Draw PROMPT: the base model at 64x64, then the upsampler to 256x256.

    The base model uses classifier-free guidance (--scale 3). Default sampling is fast and
    matches the reference notebook's on the project's measures: dpmpp_2m_sde with 20 steps,
    then the upsampler with dpmpp_2m, 15 steps, temperature 0.997. The notebook's own:
    --sampler ddpm --steps 100 --upsample-sampler ddim --upsample-steps fast27.
    Image i of each prompt uses seed + i, whatever --batch-size is.
    """
    from .render import render_generate

    opts = RunOptions(
        out=out, pattern=pattern, skip_existing=skip_existing, overwrite=overwrite, json_output=json_output,
        quiet=quiet, device=device, dtype=dtype, weights=weights, offline=offline,
    )
    manifest = load_manifest(weights)
    base = build_stage(manifest, model, "base", sampler, steps, eta=eta, threshold=threshold, scale=scale)
    upsample = None
    if wants_upsampler(size, manifest, model, "base", upsample_model, "upsample"):
        upsample = build_stage(
            manifest, upsample_model, "upsample", upsample_sampler, upsample_steps,
            temperature=upsample_temp, steps_option="--upsample-steps",
        )
    jobs = make_jobs(collect_prompts(prompt, prompts_file), num, seed, negative)
    render_to_files(
        "generate",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_generate(
            session, todo, base, upsample, batch_size=batch_size, reporter=reporter, extra_meta=meta
        ),
    )


@app.command("clip-guide")
def clip_guide(
    prompt: opt.Prompt = None,
    clip_scale: Annotated[float, typer.Option("--clip-scale", min=0.0, help="Strength of the CLIP gradient.", rich_help_panel=opt.SAMPLING)] = 3.0,
    steps: opt.Steps = "100",
    sampler: opt.Sampler = "ddpm",
    eta: opt.Eta = 0.0,
    threshold: opt.Threshold = None,
    upsample_steps: opt.UpsampleSteps = "15",
    upsample_sampler: opt.UpsampleSampler = "dpmpp_2m",
    upsample_temp: opt.UpsampleTemp = 0.997,
    size: opt.Size = None,
    prompts_file: opt.PromptsFile = None,
    num: opt.Num = 1,
    batch_size: opt.BatchSize = 1,
    seed: opt.Seed = None,
    out: opt.Out = Path("outputs"),
    pattern: opt.Pattern = "{index:05d}-{seed}-{slug}.png",
    skip_existing: opt.SkipExisting = False,
    overwrite: opt.Overwrite = False,
    json_output: opt.Json = False,
    quiet: opt.Quiet = False,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    weights: opt.Weights = None,
    model: opt.BaseModel = "base",
    upsample_model: opt.UpsampleModel = "upsample",
    clip_image_model: Annotated[str, typer.Option("--clip-image-model", help="Noised CLIP image encoder.", rich_help_panel=opt.MODELS)] = "clip-image",
    clip_text_model: Annotated[str, typer.Option("--clip-text-model", help="Noised CLIP text encoder.", rich_help_panel=opt.MODELS)] = "clip-text",
    offline: opt.Offline = False,
) -> None:
    """Draw PROMPT with the base model steered by the noised CLIP, then upsample.

    The gradient of CLIP's image-text similarity shifts every step (--clip-scale); there
    is no classifier-free guidance, as in the reference notebook (ddpm, 100 steps; CLIP
    guidance needs ddpm). The upsampler runs as in `glide generate`.
    """
    from .render import ClipSteering, model_entry, render_generate

    opts = RunOptions(
        out=out, pattern=pattern, skip_existing=skip_existing, overwrite=overwrite, json_output=json_output,
        quiet=quiet, device=device, dtype=dtype, weights=weights, offline=offline,
    )
    manifest = load_manifest(weights)
    model_entry(manifest, clip_image_model, "clip-image")
    model_entry(manifest, clip_text_model, "clip-text")
    if sampler != "ddpm":
        raise click_errors.BadParameter("CLIP guidance shifts each step's mean: use --sampler ddpm", param_hint="'--sampler'")
    base = build_stage(manifest, model, "base", sampler, steps, eta=eta, threshold=threshold)
    upsample = None
    if wants_upsampler(size, manifest, model, "base", upsample_model, "upsample"):
        upsample = build_stage(
            manifest, upsample_model, "upsample", upsample_sampler, upsample_steps,
            temperature=upsample_temp, steps_option="--upsample-steps",
        )
    steering = ClipSteering(clip_image_model, clip_text_model, clip_scale)
    jobs = make_jobs(collect_prompts(prompt, prompts_file), num, seed, None)
    render_to_files(
        "clip-guide",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_generate(
            session, todo, base, upsample, clip=steering, batch_size=batch_size, reporter=reporter, extra_meta=meta
        ),
    )


@app.command()
def upsample(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="The picture to upsample (any size).", show_default=False)],
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What the picture shows.", show_default=False)],
    steps: Annotated[str, typer.Option("--upsample-steps", "--steps", help="Steps: a count, sections, 'ddimN' or 'fast27' (the reference's, with ddim).", rich_help_panel=opt.SAMPLING)] = "15",
    sampler: Annotated[opt.SamplerName, typer.Option("--upsample-sampler", "--sampler", help="Sampler.", rich_help_panel=opt.SAMPLING)] = "dpmpp_2m",
    temp: Annotated[float, typer.Option("--upsample-temp", "--temp", min=0.0, help="Scales the starting noise.", rich_help_panel=opt.SAMPLING)] = 0.997,
    fit: opt.Fit = "crop",
    num: opt.Num = 1,
    batch_size: opt.BatchSize = 1,
    seed: opt.Seed = None,
    out: opt.Out = Path("outputs"),
    pattern: opt.Pattern = "{index:05d}-{seed}-{slug}.png",
    skip_existing: opt.SkipExisting = False,
    overwrite: opt.Overwrite = False,
    json_output: opt.Json = False,
    quiet: opt.Quiet = False,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    weights: opt.Weights = None,
    model: Annotated[str, typer.Option("--upsample-model", "--model", help="Upsampler (manifest name).", rich_help_panel=opt.MODELS)] = "upsample",
    offline: opt.Offline = False,
) -> None:
    """Upsample IMAGE 4x (64 -> 256) with the text-conditional upsampler.

    IMAGE may be any size: it is fitted (--fit) to 64x64 and rounded to 8 bits, like the
    base model's output, before upsampling.
    """
    from .images import load_image
    from .render import model_entry, render_upsample

    opts = RunOptions(
        out=out, pattern=pattern, skip_existing=skip_existing, overwrite=overwrite, json_output=json_output,
        quiet=quiet, device=device, dtype=dtype, weights=weights, offline=offline,
    )
    manifest = load_manifest(weights)
    stage = build_stage(manifest, model, "upsample", sampler, steps, temperature=temp, steps_option="--upsample-steps")
    # GLIDE's upsampler was trained on 4x (64 -> 256).
    picture = load_image(image, max(1, model_entry(manifest, model, "upsample").arch.image_size // 4), fit)
    jobs = make_jobs([prompt], num, seed, None)
    extra = {"image": str(image), "fit": fit}
    render_to_files(
        "upsample",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_upsample(
            session, todo, picture, stage, batch_size=batch_size, reporter=reporter, extra_meta={**meta, **extra}
        ),
    )


@app.command()
def inpaint(
    arguments: Annotated[list[str], typer.Argument(metavar="IMAGE [MASK] PROMPT", help="The picture, an optional mask the same size (WHITE = repaint, black = keep), and the prompt. Without MASK, IMAGE's transparent pixels are repainted.", show_default=False)],
    scale: opt.Scale = 5.0,
    negative: opt.Negative = None,
    steps: opt.Steps = "100",
    sampler: opt.Sampler = "ddpm",
    eta: opt.Eta = 0.0,
    threshold: opt.Threshold = None,
    invert_mask: Annotated[bool, typer.Option("--invert-mask", help="Repaint the black (or opaque) part instead.", rich_help_panel=opt.SAMPLING)] = False,
    fit: opt.Fit = "crop",
    upsample_steps: opt.UpsampleSteps = "fast27",
    upsample_sampler: opt.UpsampleSampler = "ddpm",
    upsample_temp: opt.UpsampleTemp = 0.997,
    size: opt.Size = None,
    num: opt.Num = 1,
    batch_size: opt.BatchSize = 1,
    seed: opt.Seed = None,
    out: opt.Out = Path("outputs"),
    pattern: opt.Pattern = "{index:05d}-{seed}-{slug}.png",
    skip_existing: opt.SkipExisting = False,
    overwrite: opt.Overwrite = False,
    json_output: opt.Json = False,
    quiet: opt.Quiet = False,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    weights: opt.Weights = None,
    model: Annotated[str, typer.Option("--model", help="Base inpainting model (manifest name).", rich_help_panel=opt.MODELS)] = "base-inpaint",
    upsample_model: Annotated[str, typer.Option("--upsample-model", help="Inpainting upsampler (manifest name).", rich_help_panel=opt.MODELS)] = "upsample-inpaint",
    offline: opt.Offline = False,
) -> None:
    """Repaint part of IMAGE from PROMPT (inpainting at 64x64, then 256x256).

    MASK is a picture the size of IMAGE: WHITE = repaint, BLACK = keep (the usual
    convention; --invert-mask swaps them). Without MASK, IMAGE's transparent pixels are
    repainted. IMAGE may be any size; --fit makes it square. The kept part of the result
    is the source's pixels exactly. Defaults follow the reference notebook: scale 5, ddpm
    100 steps; upsampler ddpm fast27, temperature 0.997.
    """
    from .render import InpaintSource, render_inpaint

    if len(arguments) not in (2, 3):
        raise click_errors.UsageError(f"expected IMAGE [MASK] PROMPT, got {len(arguments)} arguments")
    image, mask, prompt = (arguments[0], None, arguments[1]) if len(arguments) == 2 else arguments
    opts = RunOptions(
        out=out, pattern=pattern, skip_existing=skip_existing, overwrite=overwrite, json_output=json_output,
        quiet=quiet, device=device, dtype=dtype, weights=weights, offline=offline,
    )
    manifest = load_manifest(weights)
    base = build_stage(manifest, model, "base-inpaint", sampler, steps, eta=eta, threshold=threshold, scale=scale)
    upsample = None
    if wants_upsampler(size, manifest, model, "base-inpaint", upsample_model, "upsample-inpaint"):
        upsample = build_stage(
            manifest, upsample_model, "upsample-inpaint", upsample_sampler, upsample_steps,
            temperature=upsample_temp, steps_option="--upsample-steps",
        )
    source = InpaintSource(Path(image), Path(mask) if mask else None, fit, invert_mask)
    jobs = make_jobs([prompt], num, seed, negative)
    render_to_files(
        "inpaint",
        opts,
        manifest,
        jobs,
        lambda session, todo, reporter, meta: render_inpaint(
            session, todo, source, base, upsample, batch_size=batch_size, reporter=reporter, extra_meta=meta
        ),
    )


# --- entry point ------------------------------------------------------------------------------

# Exceptions whose message is a complete one-line explanation for the user, by module; a
# module that was never imported cannot have raised its error, so none is imported here.
_FAILURES = (
    ("glidecli.manifest", "ManifestError"),
    ("glidecli.fetch", "WeightsError"),
    ("glidecli.checkpoint", "CheckpointError"),
    ("glidecli.pngfile", "ImageError"),
    ("glidecli.tokenizer", "TokenizerFileError"),
    ("glidecli.session", "RenderError"),
    ("glidecli.cli_run", "CommandError"),
    ("glidecli.dataset", "DatasetError"),
    ("glidecli.training", "TrainingError"),
)


# click >= 8.2 reports "no arguments, show the help" as an error carrying the help text.
_NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())


def _is_known_failure(error: BaseException) -> bool:
    for module_name, class_name in _FAILURES:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, getattr(module, class_name)):
            return True
    return False


def _error(message: str) -> None:
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


def run(argv: Optional[list[str]] = None) -> int:
    """Run `glide` with `argv` (default: sys.argv[1:]) and return the exit status."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="glide", standalone_mode=False)
    except _NO_ARGS_IS_HELP as help_request:
        text = help_request.format_message()  # empty when Typer has printed the help itself
        if text:
            typer.echo(text)
        return 0
    except click_errors.UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        _error(error.format_message() + hint)
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
        if _is_known_failure(error):
            _error(str(error))
            return 1
        if isinstance(error, ValueError):  # option values checked deeper down
            _error(str(error))
            return 2
        if isinstance(error, OSError):
            _error(f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}")
            return 1
        raise
    if result == 130:  # Ctrl-C while click itself was running
        sys.stderr.write("interrupted; 0 images written\n")
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())
