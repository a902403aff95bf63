"""Which manifest models the peer APIs use when a client names only one (A1111's checkpoint,
OpenAI's `model`): a base model's companions are found by name. For a model NAME, the
upsampler is NAME-upsample, the inpainting model NAME-inpaint, the inpainting upsampler
NAME-inpaint-upsample (`shapes` -> `shapes-upsample`, `shapes-inpaint`); failing those, the
manifest's default names (upsample, base-inpaint, upsample-inpaint) when present."""

from __future__ import annotations

from ..files.manifest import Manifest
from ..nets.kinds import ModelKind

DEFAULT_NAMES = {ModelKind.BASE: ModelKind.BASE, ModelKind.UPSAMPLE: ModelKind.UPSAMPLE, ModelKind.BASE_INPAINT: ModelKind.BASE_INPAINT, ModelKind.UPSAMPLE_INPAINT: ModelKind.UPSAMPLE_INPAINT}
SUFFIXES = {ModelKind.UPSAMPLE: "-upsample", ModelKind.BASE_INPAINT: "-inpaint", ModelKind.UPSAMPLE_INPAINT: "-upsample"}


def models_of_kind(manifest: Manifest, kind: str) -> list[str]:
    return [name for name, entry in manifest.models.items() if entry.kind == kind]


def companion(manifest: Manifest, name: str, kind: str) -> str | None:
    """The model of `kind` that goes with `name`, or None when the manifest has none."""
    candidates = [name + SUFFIXES.get(kind, ""), name.removesuffix("-inpaint") + SUFFIXES.get(kind, ""), DEFAULT_NAMES.get(kind, "")]
    if kind == ModelKind.UPSAMPLE_INPAINT:
        candidates.insert(1, name.removesuffix("-inpaint") + "-inpaint-upsample")
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
