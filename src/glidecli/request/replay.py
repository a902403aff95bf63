"""A picture's recorded settings taken back as a request's values: `--from IMAGE` on every
rendering command, and `glide info --command`.

glide's PNGs record their command and every setting (the `glide` JSON chunk); a picture
from AUTOMATIC1111 records a `parameters` text, whose fields map onto `generate` where they
mean the same. Facts about how a picture was made (its device, hashes, the windows an
outpainting used...) are not settings; anything else that maps onto no option is listed
for the user in one warning line.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..files.manifest import Manifest
from .a1111 import glide_sampler
from .building import build
from .commands import REQUESTS, UpsampleRequest, option_fields, packaged_model
from .values import RequestError, ValueType

# Recorded facts, never options.
FACTS = {
    "command", "index", "device", "dtype", "glidecli_version", "model_hash", "upsample_model_hash", "components", "prompt_template",
    "image_sha256", "mask_sha256", "image_a_sha256", "image_b_sha256", "image_size", "windows", "region",
    "rank_score", "candidate", "candidate_seed", "candidate_scores", "prior_model_hash", "decoder_model_hash", "sr_model_hash",
}
# Record key -> request field, where a command records a setting under another name.
RENAMES: dict[str, dict[str, str]] = {
    UpsampleRequest.command: {"upsample_model": "model", "upsample_sampler": "sampler", "upsample_steps": "steps", "upsample_temp": "temp"},
    **{command: {"decoder_sampler": "sampler", "decoder_steps": "steps", "decoder_scale": "scale"} for command in ("unclip", "vary", "blend")},
}
PICTURE_FIELDS = ("image", "mask", "init_image", "image_a", "image_b")
# A1111's `parameters` labels (as pngfile.parse_parameters_text names them) that mean the same here.
A1111_FIELDS = {"prompt", "negative_prompt", "steps", "sampler", "scale", "seed", "size"}


def recorded_command(record: Mapping[str, Any]) -> str:
    """The command that made the picture: glide's record says; an A1111 picture is txt2img."""
    return str(record.get("command") or "generate")


def recorded_values(record: Mapping[str, Any], command: str, source: str = "IMAGE") -> tuple[dict[str, Any], list[str]]:
    """(the request's values by field name, the recorded keys that map onto none), for
    `command`; RequestError when the picture was made by another command or records nothing."""
    if not record:
        raise RequestError(f"{source} holds no recorded settings (not a picture made by glide or A1111)")
    made_by = recorded_command(record)
    if made_by != command:
        raise RequestError(f"{source} was made by `glide {made_by}`, not {command}: use glide {made_by} --from")
    request_type = REQUESTS[command]
    fields = {name: option for name, option, _ in option_fields(request_type)}
    foreign = "command" not in record  # another tool's `parameters` text
    renames = {"negative_prompt": "negative", **RENAMES.get(command, {})}
    values: dict[str, Any] = {}
    unmapped: list[str] = []
    for key, value in record.items():
        if key in FACTS or (foreign and key == "model_hash"):
            continue
        if foreign and key not in A1111_FIELDS:
            unmapped.append(key)
            continue
        if key == "size":
            _size(value, fields, command, record, values, unmapped)
            continue
        if key in ("width", "height") and command in ("outpaint", "inpaint"):
            continue  # the canvas (or, for a region, the picture): a fact
        if key == "window" and not isinstance(value, list):
            continue  # the models' square: a fact
        name = renames.get(key, key)
        if name == "prompt" and "prompts" in fields:
            name = "prompts"
        if name not in fields:
            unmapped.append(key)
            continue
        values[name] = _field_value(name, key, value, foreign)
    return values, unmapped


def _field_value(name: str, key: str, value: Any, foreign: bool) -> Any:
    if name in PICTURE_FIELDS:
        return _picture(key, value)
    if name == "window" and isinstance(value, list):
        return f"{value[0]}x{value[1]}"
    if name == "sampler" and foreign:
        return glide_sampler(str(value))
    if name == "lora" and isinstance(value, list):  # [{"name", "sha256", "weight"}, ...]
        return tuple(_adapter_spec(used) for used in value)
    return value


def _adapter_spec(used: Any) -> str:
    if not isinstance(used, dict) or not isinstance(used.get("name"), str):
        raise RequestError(f"the recorded adapter {used!r} has no name")
    return f"{used['name']}:{used.get('weight', 1.0)}"


def changed_adapters(record: Mapping[str, Any], manifest: Manifest, source: str = "IMAGE") -> list[str]:
    """One warning per adapter the record names whose file under that name now has another
    sha256 than the picture recorded (the replay goes on with the one found now). An adapter
    that cannot be found or read is left to the request's own one-line error."""
    from ..files.lora_file import AdapterError
    from ..files.weights_error import WeightsError
    from .lora import adapter_file

    warnings = []
    recorded = record.get("lora")
    for used in recorded if isinstance(recorded, list) else []:
        if not isinstance(used, dict) or not isinstance(used.get("name"), str) or not isinstance(used.get("sha256"), str):
            continue
        try:
            now = adapter_file(used["name"], manifest).sha256
        except (AdapterError, WeightsError):
            continue
        if now != used["sha256"]:
            warnings.append(
                f"{source} was made with adapter {used['name']} of sha256 {used['sha256'][:12]}..., but {used['name']} is now"
                f" {now[:12]}...; going on with the adapter found now, so the picture may differ"
            )
    return warnings


def _picture(key: str, value: Any) -> Any:
    text = str(value)
    if key == "mask" and text == "alpha":  # the picture's own transparency
        return None
    if text.startswith("upload:"):
        raise RequestError(f"the {key.replace('_', ' ')} was an upload to glide serve ({text[:40]}...): give the picture itself")
    return Path(text)


def _size(value: Any, fields: Mapping[str, Any], command: str, record: Mapping[str, Any], values: dict[str, Any], unmapped: list[str]) -> None:
    """`size` is the picture's side, or [width, height]; A1111's text 'WxH' is its width and height."""
    if isinstance(value, str) and "x" in value:
        value = [int(part) for part in value.split("x", 1)]
    if command == UpsampleRequest.command or "size" not in fields:
        return
    if isinstance(value, list):
        if "width" in fields:
            values["width"], values["height"] = value
        else:
            unmapped.append("size")
    else:
        values["size"] = value


def command_line(record: Mapping[str, Any], source: str = "IMAGE") -> str:
    """The `glide` command line that makes the recorded picture again: its positional
    arguments and every option that differs from the command's default, with the device
    and dtype it was made on (the same ones give the same picture, bit for bit)."""
    command = recorded_command(record)
    if command not in REQUESTS:
        raise RequestError(f"{source} was made by `glide {command}`, which --from cannot redo")
    shown = {key: (key.upper() if str(value).startswith("upload:") else value) for key, value in record.items()}  # uploads: placeholders
    values, _ = recorded_values(shown, command, source)
    request = build(REQUESTS[command], {**_stand_ins(command), **values})
    words = ["glide", command]
    for name, option, default in option_fields(REQUESTS[command]):
        value = getattr(request, name)
        if not option.flags:
            if name == "prompts":
                words += list(value)
            elif value is not None:
                words.append(str(value))
            continue
        # A model the picture names after the packaged manifest's role is that command's default.
        if value == default or value is None or value == packaged_model(REQUESTS[command], name):
            continue
        flag = next(f for f in option.flags if f.startswith("--"))
        if option.value_type == ValueType.ADAPTERS:
            words += [word for spec in value for word in (flag, spec)]
            continue
        words += [flag] if option.value_type == ValueType.BOOL else [flag, _text(value)]
    for key in ("device", "dtype"):
        if key in record:
            words += [f"--{key}", str(record[key])]
    return " ".join(shlex.quote(word) for word in words)


def _stand_ins(command: str) -> dict[str, Any]:
    """Values for the positional fields a record may lack (an upload's picture)."""
    fields = {name: option for name, option, _ in option_fields(REQUESTS[command])}
    return {name: ("PICTURE" if option.value_type == ValueType.PICTURE else "") for name, option in fields.items() if not option.flags and not option.optional}


def _text(value: Any) -> str:
    if isinstance(value, tuple):  # a FLOATS option's numbers (--amount 0,0.5)
        return ",".join(str(number) for number in value)
    return str(value)
