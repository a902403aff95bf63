"""`glide weights ...` and `glide info`: the commands that never run a network (and so
never import torch, except where a .pt must be read or a PNG opened)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypedDict

import typer

from ..files.convert import convert_pt_to_safetensors
from ..files.fetch import (
    cached_path,
    fetch_entry,
    verify_file,
)
from ..files.manifest import (
    Entry,
    Manifest,
    ManifestError,
    ModelEntry,
    load_manifest,
)
from ..files.roles import Role, Roles, RoleSource
from .run import CommandError, click_errors


class WeightRow(TypedDict):
    """One model or tokenizer as `glide weights list` shows it (each object of --json)."""

    name: str
    kind: str
    source: str
    cached: bool
    path: str | None
    size: int | None
    roles: list[str]  # the roles it plays when a command names no model (files/roles.py)

weights_app = typer.Typer(
    help="List, download, convert and verify model weights (see the manifest, weights.toml).",
    no_args_is_help=True,
)

Weights = Annotated[
    Path | None,
    typer.Option("--weights", envvar="GLIDE_WEIGHTS", help="Weights manifest (TOML); default: the packaged one.", show_default=False),
]


def _entries(manifest: Manifest) -> list[Entry]:
    return [*manifest.models.values(), *manifest.tokenizers.values()]


def _find(manifest: Manifest, name: str) -> Entry:
    if name in manifest.models:
        return manifest.models[name]
    if name in manifest.tokenizers:
        return manifest.tokenizers[name]
    known = ", ".join(entry.name for entry in _entries(manifest)) or "none"
    raise ManifestError(f"{manifest.path}: no model or tokenizer named {name!r}; known: {known}")


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    if size < 1000:
        return f"{size} B"
    scaled = float(size)
    for unit in ("KB", "MB", "GB"):
        scaled /= 1000
        if scaled < 1000 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"


@weights_app.command("list")
def list_weights(
    weights: Weights = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
) -> None:
    """List the manifest's models and tokenizers: kind, on disk or not, size, source, and the
    roles each plays when a command names no model (the manifest's [defaults], else its one
    model of a kind, else the packaged name)."""
    manifest = load_manifest(weights)
    roles = manifest.roles()
    rows: list[WeightRow] = []
    for entry in _entries(manifest):
        local = cached_path(entry)
        size = getattr(entry, "size", None)
        if size is None and local is not None:
            size = local.stat().st_size
        rows.append(
            WeightRow(
                name=entry.name,
                kind=entry.kind if isinstance(entry, ModelEntry) else "tokenizer",
                source=str(entry.source),
                cached=local is not None,
                path=str(local) if local else None,
                size=size,
                roles=[str(role) for role, choice in roles.choices.items() if choice.present and choice.model == entry.name],
            )
        )
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "kind", "cached", "size", "source"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["kind"], "yes" if row["cached"] else "no", _human_size(row["size"]), row["source"])
    console = Console(highlight=False)
    console.print(table)
    console.print()
    console.print(roles_table(roles))


ROLE_SOURCES = {RoleSource.DEFAULTS: "[defaults]", RoleSource.KIND: "its one model of the kind", RoleSource.PACKAGED: "the packaged name"}


def roles_table(roles: Roles) -> Any:
    """The model each role gets when a command names none, and how it was chosen; a packaged
    name the manifest lacks is marked (a command that needs it says so)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("role", "model", "from"):
        table.add_column(column, overflow="fold")
    for role, choice in roles.choices.items():
        how = ROLE_SOURCES[choice.source]
        if not choice.present:
            how += ", an open_clip model" if role == Role.RANK else ", not in this manifest"
        table.add_row(str(role), Text(choice.model), Text(how))  # Text: "[defaults]" is no markup
    return table


@weights_app.command("download")
def download(
    names: Annotated[list[str] | None, typer.Argument(help="Models or tokenizers to fetch (e.g. base upsample gpt2).", show_default=False)] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Fetch everything in the manifest.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Download and convert again even if cached.")] = False,
    weights: Weights = None,
    offline: Annotated[bool, typer.Option("--offline", help="Only check what is already cached.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Fetch weights ahead of time; prints the local path of each.

    .pt checkpoints are converted to safetensors once, in the cache.
    """
    manifest = load_manifest(weights)
    if all_entries == bool(names):
        raise click_errors.UsageError("give NAME... or --all (not both)")
    entries = _entries(manifest) if all_entries else [_find(manifest, name) for name in names or []]
    for entry in entries:
        path = fetch_entry(entry, offline=offline or None, progress=not quiet, force=force)
        typer.echo(str(path))


@weights_app.command("convert")
def convert(
    src: Annotated[Path, typer.Argument(help="A PyTorch checkpoint (.pt) of tensors.", show_default=False)],
    dst: Annotated[Path, typer.Argument(help="The .safetensors file to write.", show_default=False)],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DST if it exists.")] = False,
) -> None:
    """Convert a pickled PyTorch state dict to safetensors.

    The pickle is read with weights_only=True: a file holding anything but tensors is
    refused, and nothing in it runs.
    """
    if dst.exists() and not overwrite:
        raise CommandError(f"{dst} already exists; use --overwrite to replace it")
    if dst.is_dir():
        raise CommandError(f"{dst} is a directory; give a file name ending in .safetensors")
    typer.echo(str(convert_pt_to_safetensors(src, dst)))


@weights_app.command("verify")
def verify(
    names: Annotated[list[str], typer.Argument(help="Models or tokenizers to check.", show_default=False)],
    file: Annotated[Path | None, typer.Option("--file", help="Check this file instead of the cached one (one NAME only).")] = None,
    weights: Weights = None,
) -> None:
    """Hash weight files and compare them with the manifest's sha256.

    Without a sha256 in the manifest the hash is printed and marked unrecorded; pin it
    with sha256 = "..." in your manifest to check later runs against it.
    """
    manifest = load_manifest(weights)
    if file is not None and len(names) != 1:
        raise click_errors.UsageError("--file goes with exactly one NAME")
    for entry in [_find(manifest, name) for name in names]:
        digest = verify_file(entry, file)
        if entry.sha256:
            typer.echo(f"{entry.name}: ok, sha256 {digest}")
        else:
            typer.echo(f"{entry.name}: sha256 {digest} (unrecorded: the manifest gives no sha256 to check against)")


# --- glide info ---------------------------------------------------------------------------------

# Shown first, in this order; anything else follows alphabetically.
_INFO_ORDER = (
    "prompt", "prompt_template", "literal_prompt", "emphasis", "negative_prompt", "command", "seed", "index", "size", "model", "model_hash", "scale", "clip_scale",
    "sampler", "steps", "eta", "threshold", "upsample_model", "upsample_model_hash", "upsample_sampler",
    "upsample_steps", "upsample_temp", "init_image", "init_fit", "strength", "upsample_strength", "best_of", "rank_model",
    "rank_score", "candidate", "candidate_seed", "candidate_scores",
    "width", "height", "image", "image_sha256", "image_size", "mask", "mask_sha256", "invert_mask", "fit", "region",
    "context", "feather", "left", "right", "top", "bottom", "window", "windows",
)


def _format(key: str, value: Any) -> str:
    if key == "lora" and isinstance(value, list):  # each adapter: NAME:WEIGHT (its sha256's first 12)
        return ", ".join(f"{a.get('name')}:{a.get('weight')} ({str(a.get('sha256', ''))[:12]})" if isinstance(a, dict) else _format("", a)
                         for a in value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def info_command(
    images: Annotated[list[Path], typer.Argument(help="PNG, JPEG or WebP pictures written by glide (or with A1111's 'parameters').", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print the recorded settings as JSON (several pictures: one object per line, with its \"file\").")] = False,
    command: Annotated[bool, typer.Option("--command", help="Print the glide command line that makes the picture again (give it --weights if the models are not the packaged ones).")] = False,
) -> None:
    """Print the settings recorded in pictures made by glide, PNG, JPEG or WebP (--json: raw;
    --command: the command line that makes each again). A picture that holds none is named on
    stderr and the others are still printed (exit 1)."""
    from ..files.pictures import read_picture_record

    several = len(images) > 1
    missing = []
    for number, image in enumerate(images):
        meta = read_picture_record(image)
        if not meta:
            missing.append(image)
            typer.echo(f"error: {image} holds no recorded settings", err=True)
            continue
        if several and not json_output and not command:
            typer.echo(f"{'' if number == 0 else chr(10)}==> {image} <==")
        _print_record(image, meta, json_output=json_output, command=command, several=several)
    if missing:
        raise typer.Exit(1)


def _print_record(image: Path, meta: dict[str, Any], *, json_output: bool, command: bool, several: bool) -> None:
    from ..request.replay import command_line
    from ..request.values import RequestError

    if command:
        try:
            typer.echo(command_line(meta, str(image)))
        except RequestError as error:
            raise CommandError(f"{image}: {error}" if several else str(error)) from None
    elif json_output:
        typer.echo(json.dumps({"file": str(image), **meta}, ensure_ascii=False) if several else json.dumps(meta, indent=2, ensure_ascii=False))
    else:
        keys = [key for key in _INFO_ORDER if key in meta] + sorted(key for key in meta if key not in _INFO_ORDER)
        width = max(len(key) for key in keys)
        for key in keys:
            typer.echo(f"{key.replace('_', ' '):<{width}}  {_format(key, meta[key])}")
