"""The rendering commands' tool input schemas (JSON Schema), made from the request layer's
option declarations (request/options.py, request/commands.py): the same names, types,
limits, choices, defaults and help as the CLI's flags and the HTTP APIs' fields.

A property is named by the request's field (`upsample_steps`, `num`): names a model can
write as identifiers. The request layer reads those names as it reads the flags' (`from_mapping`).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from ..request.commands import RequestType, option_fields
from ..request.options import Option, ValueType

# Options that write files beside the pictures: the server refuses them (serve/service.py),
# so its tools do not offer them.
FILE_WRITING_FIELDS = frozenset({"animate", "show_steps"})

PICTURE_HELP = (
    " Give a path under the server's --input-dir (relative to it, or absolute), or the picture's"
    " bytes in base64 (plain, or a data: URL)."
)

_JSON_TYPES = {ValueType.INT: "integer", ValueType.FLOAT: "number", ValueType.STR: "string", ValueType.BOOL: "boolean",
               ValueType.PICTURE: "string", ValueType.PATH: "string"}


def option_schema(option: Option, default: Any) -> dict[str, Any]:
    """One property: the option's type with its limits, choices, default and help."""
    kind = option.value_type
    schema: dict[str, Any]
    if kind == ValueType.PROMPTS:
        schema = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    elif kind == ValueType.ADAPTERS:  # NAME[:WEIGHT], several joined by commas, or a list of them
        schema = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    elif kind == ValueType.FLOATS:  # one number or several
        schema = {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}, "minItems": 1}]}
    elif kind == ValueType.BATCH:
        schema = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["auto"]}]}
    else:
        schema = {"type": _JSON_TYPES[kind]}
    if option.choices:
        schema["enum"] = list(option.choices)
    if kind in (ValueType.INT, ValueType.FLOAT):
        if option.minimum is not None:
            schema["minimum"] = option.minimum
        if option.maximum is not None:
            schema["maximum"] = option.maximum
    default_value = _json_value(default)
    if default_value is not None and default_value != []:
        schema["default"] = default_value
    help_text = option.help + (PICTURE_HELP if kind == ValueType.PICTURE else "")
    flag = f" (the CLI's {option.flag})" if option.flags else ""
    schema["description"] = help_text + flag
    return schema


def input_schema(request_type: RequestType) -> dict[str, Any]:
    """The tool input schema of one rendering command."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, option, default in option_fields(request_type):
        if name in FILE_WRITING_FIELDS:
            continue
        properties[name] = option_schema(option, default)
        if not option.flags and not option.optional:  # the CLI's required arguments: prompt, pictures
            required.append(name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def picture_fields(request_type: RequestType) -> frozenset[str]:
    return frozenset(name for name, option, _ in option_fields(request_type) if option.value_type == ValueType.PICTURE)


def _json_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    return value
