"""The JSON Schema of an option's value, declared once for every front end that publishes one:
the native API's bodies in /openapi.json (serve/native_models.py) and the MCP tools' input
schemas (mcp/schemas.py). Each adds its own names, default and help around it."""

from __future__ import annotations

from enum import Enum
from typing import Any

from .values import Option, ValueType

# The JSON type of each single value (a picture is base64 text, a data: URL or a path in JSON).
_SINGLE_TYPES = {ValueType.INT: "integer", ValueType.FLOAT: "number", ValueType.STR: "string", ValueType.BOOL: "boolean",
                 ValueType.PICTURE: "string", ValueType.PATH: "string"}


def value_schema(option: Option) -> dict[str, Any]:
    """The option's value: its JSON type or types, its choices and its limits (a list's limits
    hold for each of its numbers)."""
    kind = option.value_type
    if kind == ValueType.PROMPTS:  # one prompt or several
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    if kind == ValueType.ADAPTERS:  # NAME[:WEIGHT], several joined by commas, or a list of them
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    if kind == ValueType.BATCH:
        return {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["auto"]}]}
    if kind == ValueType.FLOATS:  # one number or several
        number = _limited({"type": "number"}, option)
        return {"anyOf": [number, {"type": "array", "items": number, "minItems": 1}]}
    schema: dict[str, Any] = {"type": _SINGLE_TYPES[kind]}
    if option.choices:
        schema["enum"] = list(option.choices)
    return _limited(schema, option) if kind in (ValueType.INT, ValueType.FLOAT) else schema


def json_default(value: Any) -> Any:
    """A declared default as JSON writes it (enums by value, tuples as lists)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [json_default(item) for item in value]
    return value


def _limited(schema: dict[str, Any], option: Option) -> dict[str, Any]:
    if option.minimum is not None:
        schema["minimum"] = option.minimum
    if option.maximum is not None:
        schema["maximum"] = option.maximum
    return schema
