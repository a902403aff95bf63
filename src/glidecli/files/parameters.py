"""A1111's `parameters` text: the prompt, an optional negative prompt line and one
"Label: value, ..." line of settings, which most image tools show. Built from a picture's
record (files/record.py) and read back from any tool's PNG, best effort. No torch."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .record import StageKey, StageRole

_BASE, _UPSAMPLE = StageRole.BASE, StageRole.UPSAMPLE
# record key (and accepted aliases) -> label in A1111's settings line, in A1111's order.
_PARAMETER_LABELS: tuple[tuple[tuple[str, ...], str], ...] = (
    ((_BASE.key(StageKey.STEPS),), "Steps"),
    ((_BASE.key(StageKey.SAMPLER),), "Sampler"),
    ((_BASE.key(StageKey.SCALE), "cfg_scale"), "CFG scale"),
    (("seed",), "Seed"),
    (("size",), "Size"),
    ((_BASE.key(StageKey.MODEL),), "Model"),
    ((_BASE.key(StageKey.MODEL_HASH),), "Model hash"),
    ((_UPSAMPLE.key(StageKey.STEPS),), "Upsample steps"),
    ((_UPSAMPLE.key(StageKey.TEMPERATURE),), "Upsample temp"),
)
# Read back as text even where they look like numbers (a model hash of digits).
_TEXT_KEYS = (_BASE.key(StageKey.SAMPLER), _BASE.key(StageKey.MODEL), _BASE.key(StageKey.MODEL_HASH), "size")
_NEGATIVE_KEYS = ("negative_prompt", "negative")
_NEGATIVE_PREFIX = "Negative prompt: "


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # A1111 writes "CFG scale: 3", not "3.0"
    return str(value)


def _format_size(meta: Mapping[str, Any]) -> str | None:
    size = meta.get("size")
    if size is None and "width" in meta and "height" in meta:
        size = (meta["width"], meta["height"])
    if size is None:
        return None
    if isinstance(size, (list, tuple)):
        return f"{size[0]}x{size[1]}"
    if isinstance(size, int):
        return f"{size}x{size}"
    return str(size)


def _quote(text: str) -> str:
    """Quote a value that would otherwise break the "Key: value, Key: value" line."""
    if any(c in text for c in ',:"\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _first_present(meta: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if meta.get(key) is not None:
            return meta[key]
    return None


def _setting_text(meta: Mapping[str, Any], keys: tuple[str, ...], label: str) -> str | None:
    if label == "Size":
        return _format_size(meta)
    value = _first_present(meta, keys)
    return None if value is None else _format_value(value)


def build_parameters_text(meta: Mapping[str, Any]) -> str:
    """A1111's `parameters` text: the prompt, an optional "Negative prompt: ..." line,
    then one "Key: value, ..." line holding only the settings present in `meta`."""
    lines = [str(meta.get("prompt", ""))]
    negative = _first_present(meta, _NEGATIVE_KEYS)
    if negative:
        lines.append(_NEGATIVE_PREFIX + str(negative))
    settings = []
    for keys, label in _PARAMETER_LABELS:
        text = _setting_text(meta, keys, label)
        if text is not None:
            settings.append(f"{label}: {_quote(text)}")
    if settings:
        lines.append(", ".join(settings))
    return "\n".join(lines)


# One "Label: value" pair, the value either a JSON string or plain text up to a comma.
_SETTING_PAIR = re.compile(r'\s*([^:,]+):\s*("(?:\\.|[^"\\])*"|[^,]*)\s*(?:,|$)')
_SETTINGS_LINE = re.compile(r"^\s*[A-Za-z][\w ]*: ")


def _parse_setting_value(raw: str) -> Any:
    if raw.startswith('"'):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _split_text(text: str) -> tuple[str, str | None, list[tuple[str, str]]]:
    """(the prompt, the negative prompt or None, each (label, value text) of the settings line)."""
    lines = text.split("\n")
    settings_line = ""
    if len(lines) > 1 and _SETTINGS_LINE.match(lines[-1]):
        settings_line = lines.pop()
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith(_NEGATIVE_PREFIX) and not negative_lines:
            negative_lines.append(line[len(_NEGATIVE_PREFIX):])
        elif negative_lines:
            negative_lines.append(line)  # a multi-line negative prompt continues
        else:
            prompt_lines.append(line)
    settings = [(label.strip(), raw.strip()) for label, raw in _SETTING_PAIR.findall(settings_line)]
    return "\n".join(prompt_lines), "\n".join(negative_lines) if negative_lines else None, settings


def parse_parameters_text(text: str) -> dict[str, Any]:
    """Best-effort inverse of build_parameters_text (also reads other tools' text):
    known labels map back to meta keys, others become snake_case keys."""
    prompt, negative, settings = _split_text(text)
    meta: dict[str, Any] = {"prompt": prompt}
    if negative is not None:
        meta["negative_prompt"] = negative
    keys_by_label = {label: keys[0] for keys, label in _PARAMETER_LABELS}
    for label, raw in settings:
        key = keys_by_label.get(label, re.sub(r"\W+", "_", label.lower()).strip("_"))
        value = _parse_setting_value(raw)
        meta[key] = str(value) if key in _TEXT_KEYS else value
    return meta


PROMPT_LABEL = "Prompt"
NEGATIVE_LABEL = "Negative prompt"


def parameter_items(text: str) -> dict[str, str]:
    """A `parameters` text as A1111 shows it, label by label, every value a text: "Prompt",
    "Negative prompt" when there is one, then each label of the settings line as written
    ("Steps": "20", "CFG scale": "7"; a quoted value unquoted)."""
    prompt, negative, settings = _split_text(text)
    items = {PROMPT_LABEL: prompt}
    if negative is not None:
        items[NEGATIVE_LABEL] = negative
    for label, raw in settings:
        value = _parse_setting_value(raw) if raw.startswith('"') else raw
        items[label] = value if isinstance(value, str) else raw
    return items


def parameters_by_label(text: str) -> dict[str, Any]:
    """parameter_items with A1111's png-info types: numbers as numbers, and a size's
    "Size-1" and "Size-2" (width, height) besides "Size"."""
    labelled: dict[str, Any] = {}
    for label, value in parameter_items(text).items():
        labelled[label] = value if label in (PROMPT_LABEL, NEGATIVE_LABEL) else _parse_setting_value(value)
        size = re.fullmatch(r"(\d+)x(\d+)", value) if label == "Size" else None
        if size:
            labelled["Size-1"], labelled["Size-2"] = int(size.group(1)), int(size.group(2))
    return labelled
