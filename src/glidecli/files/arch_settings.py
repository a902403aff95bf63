"""A manifest entry's `arch` settings: the kind's defaults with the table's changes, each
value checked against its setting's type; and the manifest's one error type."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ..nets.config import ClipConfig, UNetConfig, unet_defaults
from ..nets.kinds import UNET_KINDS, ModelKind
from ..nets.unclip_config import OpenClipConfig, PriorConfig, karlo_decoder_config, karlo_sr_config


class ManifestError(Exception):
    """A manifest that cannot be read or is invalid; the message is one line."""


# Defaults of the unCLIP kinds' settings ("clip-stats" has none) and the U-Net kind that
# their UNetConfig describes.
_UNCLIP_DEFAULTS: dict[str, Callable[[], PriorConfig | UNetConfig | OpenClipConfig]] = {
    ModelKind.UNCLIP_PRIOR: PriorConfig,
    ModelKind.UNCLIP_DECODER: karlo_decoder_config,
    ModelKind.UNCLIP_SR: karlo_sr_config,
    ModelKind.OPENCLIP: OpenClipConfig,
}
_UNET_CONFIG_KIND: dict[str, str] = {ModelKind.UNCLIP_SR: ModelKind.UPSAMPLE}

def build_arch(kind: str, arch: Mapping[str, Any], where: str) -> Any:
    if kind == ModelKind.CLIP_STATS:
        if arch:
            raise ManifestError(f"{where}: a clip-stats entry has no arch settings")
        return None
    if kind in _UNCLIP_DEFAULTS:
        defaults: Any = _UNCLIP_DEFAULTS[kind]()
    else:
        defaults = unet_defaults(kind) if kind in UNET_KINDS else ClipConfig()
    known = {f.name for f in dataclasses.fields(defaults)}
    changes = {}
    for key, value in arch.items():
        if key not in known:
            raise ManifestError(
                f"{where}: unknown arch setting {key!r} for a {kind} model"
                f" (known: {', '.join(sorted(known))})"
            )
        changes[key] = _coerce_setting(value, getattr(defaults, key), f"{where}: arch.{key}")
    try:
        config = dataclasses.replace(defaults, **changes)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{where}: invalid arch: {one_line(str(exc))}") from None
    if isinstance(config, UNetConfig) and config.kind != _UNET_CONFIG_KIND.get(kind, kind):
        # super_res/inpaint decide the network's inputs; they must agree with the kind.
        raise ManifestError(
            f"{where}: arch super_res={str(config.super_res).lower()}, inpaint={str(config.inpaint).lower()}"
            f" describe kind '{config.kind}', but the entry's kind is '{kind}'"
        )
    return config


def _coerce_setting(value: Any, default: Any, where: str) -> Any:
    """Check a TOML value against the type of the setting's default; convert where lossless."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        expected = "a whole number"
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        expected = "a number"
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        expected = "a string"
    elif isinstance(default, tuple):
        floats = any(isinstance(v, float) for v in default)
        if isinstance(value, list) and all(
            isinstance(v, (int, float) if floats else int) and not isinstance(v, bool) for v in value
        ):
            return tuple(float(v) if floats else v for v in value)
        expected = "a list of numbers" if floats else "a list of whole numbers"
    else:  # pragma: no cover - every setting has one of the types above
        return value
    raise ManifestError(f"{where} must be {expected}, not {value!r}")


def one_line(text: str) -> str:
    return " ".join(text.split())
