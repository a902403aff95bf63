"""A typed request from values: by field name (`build`, the CLI's flags and Python callers) or
by any of an option's JSON names (`from_mapping`, the servers' bodies). Every value goes
through the request layer's one conversion and check (values.py), and a prompt's
<lora:NAME:WEIGHT> tags move to the request's adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .commands import Request, RequestType, option_fields
from .values import RequestError, ValueType, value_of


def build(request_type: RequestType, values: Mapping[str, Any]) -> Request:
    """A request from raw values by field name (CLI text, JSON values, or typed values);
    fields not given keep the command's default (a required picture or prompt is missing).
    Every value is converted and checked."""
    typed: dict[str, Any] = {}
    for name, option, default in option_fields(request_type):
        typed[name] = value_of(option, values.get(name, default))
    unknown = set(values) - set(typed)
    if unknown:
        raise RequestError(f"{request_type.command} has no option {sorted(unknown)[0]!r}")
    return request_type(**_lora_tags_taken(typed))


def _lora_tags_taken(typed: dict[str, Any]) -> dict[str, Any]:
    """The values with the prompts' <lora:NAME:WEIGHT> tags moved to `lora` (after --lora's)."""
    from .lora_tags import take_lora_tags, take_prompts_tags

    specs: tuple[str, ...] = ()
    if typed.get("prompts"):
        typed["prompts"], specs = take_prompts_tags(typed["prompts"])
    elif isinstance(typed.get("prompt"), str):
        typed["prompt"], specs = take_lora_tags(typed["prompt"])
    if specs:
        typed["lora"] = (*typed["lora"], *(spec for spec in specs if spec not in typed["lora"]))
    return typed


def field_names(request_type: RequestType) -> dict[str, str]:
    """Every name a field answers to in JSON -> the field: its flags without dashes
    ('cfg-scale', 'n'), and its Python name ('upsample_steps')."""
    names: dict[str, str] = {}
    for name, option, _ in option_fields(request_type):
        names[name] = name
        for key in option.keys:
            names[key] = name
    return names


def by_field(request_type: RequestType, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data`'s values by JSON names (any of an option's names) as {field name: value}; unknown
    names, and one option given under two names, are refused."""
    names = field_names(request_type)
    options = {name: option for name, option, _ in option_fields(request_type)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = names.get(key)
        if name is None:
            raise RequestError(f"{request_type.command} has no option {key!r}")
        if name in values:
            raise RequestError(f"option {key!r} is given twice (under two of its names)")
        if options[name].value_type == ValueType.PATH:  # a client names no folder of the server's (--wildcards)
            raise RequestError(f"{key!r} is a folder of the machine that renders: the server sets it where it starts", options[name].flag)
        values[name] = raw
    return values


def from_mapping(request_type: RequestType, data: Mapping[str, Any], pictures: Mapping[str, Path] = {}) -> Request:
    """A request from JSON by option names (`{"scale": 3, "upsample-steps": "fast27"}`);
    picture fields come from `pictures` (the server's saved uploads), never from `data`."""
    names = field_names(request_type)
    options = {name: option for name, option, _ in option_fields(request_type)}
    values = by_field(request_type, data)
    for name in values:
        if options[name].value_type == ValueType.PICTURE:
            key = next(key for key in data if names[key] == name)
            raise RequestError(f"{key!r} is a picture: send it as an upload or base64, not as a value", options[name].flag)
    for name, path in pictures.items():
        if name not in names.values():
            raise RequestError(f"{request_type.command} takes no picture {name!r}")
        values[names[name]] = path
    return build(request_type, values)
