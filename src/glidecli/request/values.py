"""An option of the rendering commands and its value: the declaration's type (`Option`), the
kinds of value (`ValueType`), and the one conversion and check every front end uses.

A bad value raises RequestError, whose text is the one line both front ends show:
"Invalid value for '--scale': -1.0 is not in the range x >= 0". The CLI hands the flags'
text to the same conversion that reads JSON and form fields (`value_of`). The declarations
themselves are in options.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

# Help panels of `glide COMMAND --help`.
SAMPLING = "Sampling"
UPSAMPLING = "Upsampler"
OUTPUT = "Output"
MODELS = "Models and device"
IMG2IMG = "Starting from a picture (img2img)"
CANVAS = "Canvas"
PRIOR = "Prior"


class RequestError(ValueError):
    """A value no render can use, found before any model loads. `option` is the flag it
    concerns ('--scale'), None for a rule between several."""

    def __init__(self, reason: str, option: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.option = option

    def __str__(self) -> str:
        return f"Invalid value for '{self.option}': {self.reason}" if self.option else self.reason


class ValueType(StrEnum):
    """What an option's value is; the server's /commands shows it as the option's "type"."""

    INT = "int"
    FLOAT = "float"
    FLOATS = "floats"  # one number or several: "0,0.25,0.5" on the CLI, a JSON list or number
    STR = "str"
    BOOL = "bool"
    BATCH = "batch"  # auto or a positive whole number
    PICTURE = "picture"  # a file path on the CLI, an upload over HTTP
    PROMPTS = "prompts"  # one prompt or several
    PATH = "path"  # a file or folder of the machine that runs the command (glide train's)
    ADAPTERS = "adapters"  # LoRA adapters, NAME[:WEIGHT] each: a flag given again, a JSON list


@dataclass(frozen=True)
class Option:
    """One option: `flags` as the CLI spells them (the first long one names it in messages; without
    dashes they are its names in JSON) and the type of its value (a picture without flags is
    positional on the CLI). `panel` None: the CLI's plain Options (or Arguments) panel."""

    flags: tuple[str, ...]
    value_type: ValueType
    help: str
    panel: str | None = SAMPLING
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None is a value (an option the user may leave out)
    metavar: str | None = None
    show_default: bool = True
    name: str = field(default="", compare=False)  # the positional's name in JSON (pictures)
    envvar: str | None = None  # the CLI reads the value from this environment variable when the flag is not given

    @property
    def must_be_given(self) -> bool:
        """The CLI's required arguments (a prompt, pictures): a body or a tool call must hold them."""
        return not self.flags and not self.optional

    @property
    def flag(self) -> str:
        """The name messages use: the first long flag ('--num' of -n/--num), or the
        positional's name in capitals (PROMPT)."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0]) if self.flags else self.name.upper()

    @property
    def keys(self) -> tuple[str, ...]:
        """Its names in JSON: each flag without dashes ('--cfg-scale' -> 'cfg-scale')."""
        return tuple(flag.lstrip("-") for flag in self.flags) or (self.name,)


def value_of(option: Option, raw: Any) -> Any:
    """The value a request holds for `raw`: a flag's text from the CLI, a form field's text or
    a JSON value from the server, or a value already typed (Python callers, defaults). It is
    converted to the option's type and checked against its limits, or RequestError."""
    return check(option, convert(option, raw))


def convert(option: Option, raw: Any) -> Any:
    """`raw` as the option's type: "3" and 3 are both the int 3; anything else is RequestError."""
    kind = option.value_type
    if kind == ValueType.ADAPTERS:
        return _adapters(option, raw)
    if raw is None:
        return None
    if kind == ValueType.BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _BOOLEANS:
            return _BOOLEANS[raw.lower()]
        raise RequestError(f"{raw!r} is not true or false", option.flag)
    if kind == ValueType.FLOATS:
        return _numbers(option, raw)
    if kind in (ValueType.INT, ValueType.FLOAT):
        number = _number(raw, kind)
        if number is None:
            raise RequestError(f"{raw!r} is not {'a whole number' if kind == ValueType.INT else 'a number'}", option.flag)
        return number
    if kind == ValueType.BATCH:
        return raw
    if kind == ValueType.PICTURE:
        return Path(raw)  # the CLI's argument; the server puts only paths of its own here
    if kind == ValueType.PATH:
        return Path(raw)
    if kind == ValueType.PROMPTS:
        prompts = (raw,) if isinstance(raw, str) else tuple(raw) if isinstance(raw, (list, tuple)) else None
        if prompts is None or not all(isinstance(p, str) for p in prompts):
            raise RequestError(f"{raw!r} is not a prompt or a list of prompts", option.flag)
        return prompts
    if isinstance(raw, int) and not isinstance(raw, bool):  # JSON's 20 for --steps 20
        return str(raw)
    if not isinstance(raw, str):
        raise RequestError(f"{raw!r} is not text", option.flag)
    return raw


def _adapters(option: Option, raw: Any) -> tuple[str, ...]:
    """NAME[:WEIGHT] specs: one text (a form field's may hold several, split by commas), or a
    list of them (a repeated flag, a JSON list)."""
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",")] if "," in raw else [raw]
    specs = () if raw is None else tuple(raw) if isinstance(raw, (list, tuple)) else None
    if specs is None or not all(isinstance(spec, str) and spec for spec in specs):
        raise RequestError(f"{raw!r} is not NAME[:WEIGHT] or a list of them", option.flag)
    for spec in specs:
        adapter_weight(spec, option.flag)
    return specs


def adapter_weight(spec: str, flag: str = "--lora") -> tuple[str, float | None]:
    """(name, weight) of a NAME[:WEIGHT] spec; the weight is None when not given. A name may
    hold colons (a path): only a last part that reads as a number, or that has no slash and
    is not empty, is taken for the weight."""
    name, colon, tail = spec.rpartition(":")
    if not colon:
        return spec, None
    try:
        weight = float(tail)
    except ValueError:
        if "/" in tail or "\\" in tail or not name:
            return spec, None  # a path with a colon in it
        raise RequestError(f"the weight of {spec!r}, {tail!r}, is not a number", flag) from None
    if not math.isfinite(weight):
        raise RequestError(f"the weight of {spec!r} is not a finite number", flag)
    if not name:
        raise RequestError(f"{spec!r} names no adapter", flag)
    return name, weight


_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "on": True, "off": False}


def _number(raw: Any, kind: ValueType) -> int | float | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        value = float(raw) if kind == ValueType.FLOAT else int(raw) if not isinstance(raw, float) else None
    except ValueError:
        return None
    if value is None and isinstance(raw, float) and raw.is_integer():  # JSON's 4.0 for an int
        return int(raw)
    return value


def _numbers(option: Option, raw: Any) -> tuple[float, ...]:
    """A FLOATS value: a number, a list of them, or their text separated by commas."""
    parts = raw.split(",") if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else [raw]
    numbers = tuple(_number(part.strip() if isinstance(part, str) else part, ValueType.FLOAT) for part in parts)
    if not numbers or any(number is None for number in numbers):
        raise RequestError(f"{raw!r} is not a number or a comma-separated list of numbers", option.flag)
    return tuple(float(number) for number in numbers if number is not None)


T = TypeVar("T")


def _missing(option: Option) -> RequestError:
    return RequestError(f"missing {option.flag}" if not option.flags else "a value is required", None if not option.flags else option.flag)


def required(option: Option, value: T | None) -> T:
    """The value of a required option. A request made by `build` always holds one (it refuses a
    missing one with this message), but a request's dataclass defaults it to None."""
    if value is None:
        raise _missing(option)
    return value


def check(option: Option, value: Any) -> Any:
    """`value` (of the option's type) if within its limits, else RequestError; a batch size's
    text becomes an int."""
    if value is None:
        if option.optional:
            return None
        raise _missing(option)
    if option.value_type == ValueType.BATCH:
        return _batch_size(option, value)
    if option.value_type == ValueType.FLOATS:
        for number in value:
            check(Option(option.flags, ValueType.FLOAT, option.help, minimum=option.minimum, maximum=option.maximum), number)
        return value
    if option.value_type == ValueType.FLOAT and not math.isfinite(value):
        raise RequestError(f"{value} is not a finite number", option.flag)
    if option.choices and value not in option.choices:
        raise RequestError(f"{value!r} is not one of {', '.join(map(repr, option.choices))}", option.flag)
    if option.value_type in (ValueType.INT, ValueType.FLOAT):
        low, high = option.minimum, option.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise RequestError(f"{value} is not in the range {_range_text(low, high)}", option.flag)
    return value


def _batch_size(option: Option, value: Any) -> int | str:
    if value == "auto":
        return "auto"
    number = _number(value, ValueType.INT) if isinstance(value, (int, str)) else None
    if not isinstance(number, int) or number < 1:  # an INT's number is an int or None
        raise RequestError(f"expected 'auto' or a positive integer, got {value!r}", option.flag)
    return number


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{_bound_text(low)} to {_bound_text(high)}"
    return f"x >= {_bound_text(low)}" if low is not None else f"x <= {_bound_text(high)}"


def _bound_text(bound: float | None) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)
