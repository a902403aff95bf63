"""Which manifest models the peer APIs use when a client names only one (A1111's checkpoint,
OpenAI's `model`): a base model's companions are found by name. For a model NAME, the
upsampler is NAME-upsample, the inpainting model NAME-inpaint, the inpainting upsampler
NAME-inpaint-upsample (`shapes` -> `shapes-upsample`, `shapes-inpaint`); failing those, the
manifest's model for the kind's role (files/roles.py: its [defaults], its one model of the
kind, else the packaged name) when present."""

from __future__ import annotations

from ..files.manifest import Manifest
from ..files.roles import KIND_ROLES
from ..nets.kinds import ModelKind

UPSAMPLE_SUFFIX = "-upsample"
INPAINT_SUFFIX = "-inpaint"
SUFFIXES = {ModelKind.UPSAMPLE: UPSAMPLE_SUFFIX, ModelKind.BASE_INPAINT: INPAINT_SUFFIX, ModelKind.UPSAMPLE_INPAINT: UPSAMPLE_SUFFIX}


def default_model(manifest: Manifest, kind: ModelKind) -> str:
    """The model of `kind` for a client that names none: the manifest's model for the kind's
    role (files/roles.py) when it holds it, else its first model of `kind`, else the role's
    packaged name (which planning refuses with its own message)."""
    choice = manifest.roles().choices[KIND_ROLES[kind]]
    if choice.present:
        return choice.model
    return next((entry.name for entry in manifest.models_of_kind(kind)), choice.model)


def companion(manifest: Manifest, name: str, kind: ModelKind) -> str | None:
    """The model of `kind` that goes with `name`, or None when the manifest has none."""
    suffix = SUFFIXES.get(kind, "")
    stem = name.removesuffix(INPAINT_SUFFIX)
    candidates = [name + suffix, stem + suffix, manifest.roles()[KIND_ROLES[kind]]]
    if kind == ModelKind.UPSAMPLE_INPAINT:
        candidates.insert(1, stem + INPAINT_SUFFIX + UPSAMPLE_SUFFIX)
    for candidate in candidates:
        entry = manifest.models.get(candidate)
        if entry is not None and entry.kind == kind:
            return candidate
    return None


def model_size(manifest: Manifest, base: str, upsampler: str | None) -> int:
    """The side of the pictures a base model (and its upsampler, if any) makes."""
    name = upsampler or base
    entry = manifest.models.get(name)
    return int(getattr(entry.arch, "image_size", 0)) if entry is not None else 0


UPSCALER_KINDS = (ModelKind.UPSAMPLE, ModelKind.UNCLIP_SR)  # what A1111's clients see as upscalers


def upscaler_rows(manifest: Manifest) -> list[tuple[str, ModelKind, int]]:
    """(name, kind, picture side) of each upsampler of the manifest: GLIDE's and unCLIP's."""
    rows = []
    for kind in UPSCALER_KINDS:
        for entry in manifest.models_of_kind(kind):
            rows.append((entry.name, kind, int(getattr(entry.arch, "image_size", 0))))
    return rows
