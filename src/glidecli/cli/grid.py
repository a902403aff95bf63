"""`glide grid`: any rendering command over one option's values on each axis (A1111's X/Y
plot), every picture written with its settings, plus one labelled contact sheet."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ..files.vocabulary import ImageFormat
from ..request.commands import REQUESTS
from .console import ConsoleReporter, announce
from .run import CAPTURE, RunOptions, check_writable, click_errors, run_session

RENDERING = tuple(REQUESTS)  # the rendering commands


def grid(
    context: typer.Context,
    x: Annotated[str, typer.Option("--x", metavar="OPTION=V1,V2,...", help="The columns: an option's CLI name and its values; seed=1,2,3; prompt-sr=FROM,TO1,TO2 replaces FROM in the prompt.", show_default=False)],
    y: Annotated[str | None, typer.Option("--y", metavar="OPTION=V1,V2,...", help="The rows, as --x.", show_default=False)] = None,
) -> None:
    """Render COMMAND once per cell of an X/Y grid and write a labelled contact sheet.

    Everything after COMMAND is COMMAND's own (its prompt, pictures and options, --out
    included). The cells share one seed (random when omitted, unless an axis is seed), and
    their jobs go through the networks together where their settings allow. A cell's
    picture is the one `glide COMMAND` makes with that cell's settings, bit for bit.
    At most 256 cells.

        glide grid --x scale=1,3,5 --y steps=10,20 generate "a corgi" --seed 1
    """
    from ..request.grid import grid_cells, parse_axis

    words = list(context.args)
    if not words or words[0] not in RENDERING:
        raise click_errors.UsageError(f"give the command to put on a grid after its axes: one of {', '.join(RENDERING)}")
    name, rest = words[0], words[1:]
    # grid is always a subcommand of glide's root group (a click Group): that is its parent.
    command = context.parent.command.get_command(context.parent, name)  # type: ignore[union-attr]
    captured: list[tuple[type, dict[str, Any], RunOptions]] = []
    context.meta[CAPTURE] = captured  # the command builds its request; render_request hands it back
    with command.make_context(name, rest, parent=context) as sub:
        command.invoke(sub)
    [(request_type, values, opts)] = captured
    x_axis = parse_axis(x, request_type, "--x")
    y_axis = parse_axis(y, request_type, "--y") if y is not None else None
    cells = grid_cells(request_type, values, x_axis, y_axis)
    if ImageFormat.of_path(opts.out) is not None:
        raise click_errors.BadParameter("a grid writes several pictures and a sheet: give a folder", param_hint="'--out'")
    render_grid(cells, x_axis, y_axis, opts)


def render_grid(cells: list, x_axis: Any, y_axis: Any, opts: RunOptions) -> None:
    """Plan every cell (all checked before any model loads), render cells that share their
    stages together, write each picture and then the sheet."""
    from rich.console import Console

    from ..files.manifest import load_manifest
    from ..files.pictures import output_format, write_picture
    from ..files.pngfile import ImageError, next_free_index, slugify
    from ..files.sheet import contact_sheet
    from ..request.grid import stage_key
    from ..request.planner import plan_request

    manifest = load_manifest(opts.weights)
    plans = [plan_request(cell.request, manifest) for cell in cells]
    check_writable(opts.out)
    number = next_free_index(opts.out)
    formats = [output_format(plan.image_format, opts.out) for plan in plans]  # a cell's --format (an axis may vary it)
    paths = [
        opts.out / f"{number:05d}-grid-{k:03d}-{plan.jobs[0].seed}-{slugify(plan.jobs[0].prompt)}{formats[k].suffix}" for k, plan in enumerate(plans)
    ]
    sheet_path = opts.out / f"{number:05d}-grid{formats[0].suffix}"
    taken = [path for path in (*paths, sheet_path) if path.exists()]
    if taken and not opts.overwrite:
        raise ImageError(f"output file {taken[0]} already exists; use --overwrite to replace it")
    console = Console(stderr=True)
    for warning in dict.fromkeys(warning for plan in plans for warning in plan.warnings):
        console.print(f"warning: {warning}", highlight=False, markup=False)
    session = run_session(manifest, opts, console)
    groups: dict[Any, list[int]] = {}
    for k, cell in enumerate(cells):
        groups.setdefault(stage_key(cell.request), []).append(k)
    pictures: list[Any] = [None] * len(cells)
    with ConsoleReporter(console, opts.quiet, len(cells)) as reporter:
        for members in groups.values():
            jobs = [plans[k].jobs[0] for k in members]
            first = plans[members[0]]
            for k, rendered in zip(members, first.run(session, jobs, reporter)):
                write_picture(rendered.image, paths[k], rendered.meta, formats[k], plans[k].quality, overwrite=opts.overwrite)
                pictures[k] = rendered.image
                reporter.image_done()
                announce(paths[k], rendered, opts.json_output, peak_memory=session.peak_memory())
    columns = len(x_axis.values)
    rows = [pictures[j * columns : (j + 1) * columns] for j in range(len(cells) // columns)]
    x_labels = [_axis_label(x_axis, value) for value in x_axis.values]
    y_labels = [_axis_label(y_axis, value) for value in y_axis.values] if y_axis else None
    base = cells[0].request
    prompt = (base.prompts[0] if getattr(base, "prompts", ()) else getattr(base, "prompt", "")) or ""
    record = {
        "command": "grid", "grid_command": base.command, "prompt": prompt,
        "x": x_axis.option, "x_values": list(x_axis.values), **({"y": y_axis.option, "y_values": list(y_axis.values)} if y_axis else {}),
        "cells": [{"x": x_axis.values[c.x], **({"y": y_axis.values[c.y]} if y_axis else {}), "file": paths[k].name, "seed": plans[k].jobs[0].seed}
                  for k, c in enumerate(cells)],
    }
    sheet = contact_sheet(rows, x_labels, y_labels, title=f"glide {base.command}: {prompt}"[:120])
    write_picture(sheet, sheet_path, record, formats[0], plans[0].quality, overwrite=opts.overwrite)
    if sys.stdout is not None:
        sys.stdout.write((json.dumps({"path": str(sheet_path), "grid": record}, ensure_ascii=False) if opts.json_output else str(sheet_path)) + "\n")
        sys.stdout.flush()


def _axis_label(axis: Any, value: str) -> str:
    """A sheet's label of one value on `axis`: a prompt as it is, any other value as option=value."""
    from ..request.grid import PROMPT_SR

    return value if axis.option == PROMPT_SR else f"{axis.option}={value}"
