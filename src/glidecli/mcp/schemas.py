"""The rendering commands' tool input schemas (JSON Schema), made from the request layer's
option declarations (request/options.py, request/commands.py): the same names, types,
limits, choices, defaults and help as the CLI's flags and the HTTP APIs' fields.

A property is named by the request's field (`upsample_steps`, `num`): names a model can
write as identifiers. The request layer reads those names as it reads the flags' (`from_mapping`).
"""

from __future__ import annotations

from typing import Any

from ..request.commands import RequestType, option_fields
from ..request.json_schema import json_default, value_schema
from ..request.values import Option, ValueType

# Options that write files beside the pictures: the server refuses them (serve/service.py),
# so its tools do not offer them.
FILE_WRITING_FIELDS = frozenset({"animate", "show_steps"})

PICTURE_HELP = (
    " Give a path under the server's --input-dir (relative to it, or absolute), or the picture's"
    " bytes in base64 (plain, or a data: URL)."
)


def option_schema(option: Option, default: Any) -> dict[str, Any]:
    """One property: the option's value (request/json_schema.py) with its default and help."""
    schema = value_schema(option)
    default_value = json_default(default)
    if default_value is not None and default_value != []:
        schema["default"] = default_value
    help_text = option.help + (PICTURE_HELP if option.value_type == ValueType.PICTURE else "")
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
        if option.must_be_given:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def picture_fields(request_type: RequestType) -> frozenset[str]:
    return frozenset(name for name, option, _ in option_fields(request_type) if option.value_type == ValueType.PICTURE)

