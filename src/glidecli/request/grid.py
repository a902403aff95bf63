"""X/Y grids (A1111's X/Y plot): one option's values along each axis, every other setting
the command's. An axis is `OPTION=V1,V2,...` by the option's CLI name, `seed=1,2,3` for
seeds, or `prompt-sr=FROM,TO1,TO2` to search and replace in the prompt (the first cell keeps
FROM). Each cell is one request: a cell's picture is the one `glide COMMAND` makes with that
cell's settings, bit for bit."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..diffusion.vocabulary import MAX_SEED
from ..files.vocabulary import DEFAULT_QUALITY
from .building import build, field_names
from .commands import MANY_PROMPTS, Request, RequestType, option_fields
from .values import RequestError, ValueType

MAX_CELLS = 256  # a sheet of 16 x 16 pictures; more is a typo rather than a plan
PROMPT_SR = "prompt-sr"


@dataclass(frozen=True)
class Axis:
    option: str  # as given: 'scale', 'prompt-sr'
    values: tuple[str, ...]
    field: str = ""  # the request field it sets ('' for prompt-sr)


def parse_axis(text: str, request_type: RequestType, flag: str) -> Axis:
    """`scale=1,3,5` -> Axis('scale', ('1', '3', '5'), 'scale'); RequestError for an option
    the command does not have, or no values."""
    name, sep, rest = text.partition("=")
    name = name.strip().lstrip("-")
    values = tuple(value.strip() for value in rest.split(",")) if sep else ()
    if not sep or not name or not values or any(not value for value in values):
        raise RequestError(f"{text!r} is not OPTION=V1,V2,... (e.g. scale=1,3,5 or prompt-sr=red,blue)", flag)
    if name == PROMPT_SR:
        if len(values) < 2:
            raise RequestError("prompt-sr needs the text to search and at least one replacement: prompt-sr=FROM,TO1,...", flag)
        return Axis(name, values)
    field = field_names(request_type).get(name)
    options = {field_name: option for field_name, option, _ in option_fields(request_type)}
    if field is None or not options[field].flags or options[field].value_type == ValueType.PICTURE:
        raise RequestError(f"{request_type.command} has no option {name!r} to put on an axis", flag)
    if field == "num":
        raise RequestError("a grid cell is one picture: -n cannot be an axis (use seed=...)", flag)
    return Axis(name, values, field)


@dataclass(frozen=True)
class Cell:
    x: int
    y: int
    request: Request


def grid_cells(request_type: RequestType, values: Mapping[str, Any], x: Axis, y: Axis | None) -> list[Cell]:
    """Every cell's request, row by row; each value is checked as the command checks it, and
    all before anything renders."""
    count = len(x.values) * (len(y.values) if y else 1)
    if count > MAX_CELLS:
        raise RequestError(f"the grid has {count} cells; at most {MAX_CELLS}")
    if y is not None and y.option == x.option:
        raise RequestError(f"--x and --y both vary {x.option}")
    base = build(request_type, values)
    if getattr(base, "num", 1) != 1:
        raise RequestError("a grid cell is one picture: leave -n out (put seeds on an axis: seed=1,2,3)")
    if base.seed is None:  # one seed for the whole sheet, so that only the axes differ
        base = dataclasses.replace(base, seed=secrets.randbelow(MAX_SEED + 1))
    cells = []
    y_values: tuple[str | None, ...] = y.values if y else (None,)
    for j, y_value in enumerate(y_values):
        for i, x_value in enumerate(x.values):
            request = _apply(request_type, base, x, x_value)
            if y is not None and y_value is not None:
                request = _apply(request_type, request, y, y_value)
            cells.append(Cell(i, j, request))
    return cells


def _apply(request_type: RequestType, request: Request, axis: Axis, value: str) -> Request:
    if axis.option == PROMPT_SR:
        return _replace_prompt(request, axis.values[0], value)
    return build(request_type, {**dataclasses.asdict(request), axis.field: value})


def _replace_prompt(request: Request, search: str, replacement: str) -> Request:
    if isinstance(request, MANY_PROMPTS):
        prompts = request.prompts
        if not any(search in prompt for prompt in prompts):
            raise RequestError(f"prompt-sr: {search!r} is not in the prompt")
        return dataclasses.replace(request, prompts=tuple(prompt.replace(search, replacement) for prompt in prompts))
    prompt = request.prompt or ""
    if search not in prompt:
        raise RequestError(f"prompt-sr: {search!r} is not in the prompt")
    return dataclasses.replace(request, prompt=prompt.replace(search, replacement))


def stage_key(request: Request) -> Request:
    """What cells share when their pictures can go through the networks together: the
    request without its prompts and seed (those differ job by job within one render), and
    without its files' format and quality (which change no sampled pixel)."""
    request = dataclasses.replace(request, format=None, quality=DEFAULT_QUALITY)
    if isinstance(request, MANY_PROMPTS):
        return dataclasses.replace(request, seed=None, prompts=())
    return dataclasses.replace(request, seed=None, prompt="")
