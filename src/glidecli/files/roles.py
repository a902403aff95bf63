"""The roles of a manifest's models: which entry each command uses when none is named.

A role is a part a model plays (the text-to-image base, its upsampler, the inpainting pair,
the noised CLIP of CLIP guidance, the unCLIP set, the judge of best of N). A manifest fills
each role with one of its entries:

1. by its `[defaults]` table (`base = "shapes"`), written by `glide train` runs and by hand;
2. else by kind, when the manifest holds exactly one model of the role's kind;
3. else by the packaged manifest's name for the role (`base`, `karlo-prior`...), as glide did
   before roles: with the packaged manifest every role is that name.

The judge of best of N (`rank`) is filled by `[defaults]` alone: its packaged choice is an
open_clip model from open_clip's own list, not a manifest entry, and the packaged manifest's
one CLIP (unCLIP's ViT-L/14) must not replace it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..nets.kinds import ModelKind
from .arch_settings import ManifestError

DEFAULTS_TABLE = "defaults"  # the manifest's top-level table of roles


class Role(StrEnum):
    """A model's part in the commands; its value is the key a manifest's [defaults] spells."""

    BASE = "base"
    UPSAMPLE = "upsample"
    INPAINT = "inpaint"
    UPSAMPLE_INPAINT = "upsample-inpaint"
    CLIP_IMAGE = "clip-image"
    CLIP_TEXT = "clip-text"
    CLIP = "clip"  # the CLIP ViT of unCLIP (OpenCLIP)
    UNCLIP_PRIOR = "unclip-prior"
    CLIP_STATS = "clip-stats"
    UNCLIP_DECODER = "unclip-decoder"
    UNCLIP_SR = "unclip-sr"
    RANK = "rank"  # the judge of --best-of and glide score

    @property
    def kind(self) -> ModelKind:
        """The kind of model that plays this role."""
        return ROLE_KINDS[self]


ROLE_NAMES = tuple(role.value for role in Role)
ROLE_KINDS: Mapping[Role, ModelKind] = {
    Role.BASE: ModelKind.BASE,
    Role.UPSAMPLE: ModelKind.UPSAMPLE,
    Role.INPAINT: ModelKind.BASE_INPAINT,
    Role.UPSAMPLE_INPAINT: ModelKind.UPSAMPLE_INPAINT,
    Role.CLIP_IMAGE: ModelKind.CLIP_IMAGE,
    Role.CLIP_TEXT: ModelKind.CLIP_TEXT,
    Role.CLIP: ModelKind.OPENCLIP,
    Role.UNCLIP_PRIOR: ModelKind.UNCLIP_PRIOR,
    Role.CLIP_STATS: ModelKind.CLIP_STATS,
    Role.UNCLIP_DECODER: ModelKind.UNCLIP_DECODER,
    Role.UNCLIP_SR: ModelKind.UNCLIP_SR,
    Role.RANK: ModelKind.OPENCLIP,
}
# The role a run's model of each kind plays (glide train writes them in [defaults]).
KIND_ROLES: Mapping[ModelKind, Role] = {kind: role for role, kind in ROLE_KINDS.items() if role != Role.RANK}
# Roles never filled by kind alone.
EXPLICIT_ONLY = frozenset({Role.RANK})

# The packaged manifest's model for each role: GLIDE's models are named after their kinds.
PACKAGED_NAMES: Mapping[Role, str] = {
    Role.BASE: ModelKind.BASE.value,
    Role.UPSAMPLE: ModelKind.UPSAMPLE.value,
    Role.INPAINT: ModelKind.BASE_INPAINT.value,
    Role.UPSAMPLE_INPAINT: ModelKind.UPSAMPLE_INPAINT.value,
    Role.CLIP_IMAGE: ModelKind.CLIP_IMAGE.value,
    Role.CLIP_TEXT: ModelKind.CLIP_TEXT.value,
    Role.CLIP: "clip-vit-l-14",
    Role.UNCLIP_PRIOR: "karlo-prior",
    Role.CLIP_STATS: "karlo-clip-stats",
    Role.UNCLIP_DECODER: "karlo-decoder",
    Role.UNCLIP_SR: "karlo-sr",
    Role.RANK: "ViT-B-32:laion2b_s34b_b79k",  # open_clip's NAME:PRETRAINED (render/ranking.py)
}


class RoleSource(StrEnum):
    """How a manifest's role was filled."""

    DEFAULTS = "defaults"  # its [defaults] table
    KIND = "kind"  # its one model of the role's kind
    PACKAGED = "packaged"  # the packaged manifest's name


@dataclass(frozen=True)
class RoleChoice:
    """The model that plays a role, how it was chosen, and whether the manifest holds it (a
    packaged name may be missing from another manifest; commands that need it say so)."""

    role: Role
    model: str
    source: RoleSource
    present: bool


@dataclass(frozen=True)
class Roles:
    """Every role of one manifest; `roles[Role.BASE]` is the model's name."""

    choices: Mapping[Role, RoleChoice]

    def __getitem__(self, role: Role) -> str:
        return self.choices[role].model

    def describe(self) -> dict[str, dict[str, Any]]:
        """The roles as JSON: role -> {model, kind, from, present} (glide weights list --json, the server)."""
        return {
            str(role): {"model": choice.model, "kind": str(role.kind), "from": str(choice.source), "present": choice.present}
            for role, choice in self.choices.items()
        }


def resolve_roles(kinds: Mapping[str, ModelKind], defaults: Mapping[Role, str]) -> Roles:
    """The roles of a manifest whose models are `kinds` (name -> kind, in manifest order) and
    whose [defaults] table is `defaults` (already checked: parse_defaults)."""
    choices: dict[Role, RoleChoice] = {}
    for role in Role:
        of_kind = [name for name, kind in kinds.items() if kind == role.kind]
        if role in defaults:
            model, source = defaults[role], RoleSource.DEFAULTS
        elif len(of_kind) == 1 and role not in EXPLICIT_ONLY:
            model, source = of_kind[0], RoleSource.KIND
        else:
            model, source = PACKAGED_NAMES[role], RoleSource.PACKAGED
        choices[role] = RoleChoice(role, model, source, model in kinds)
    return Roles(choices)


def parse_defaults(table: Any, kinds: Mapping[str, ModelKind], path: Path) -> dict[Role, str]:
    """The manifest's [defaults] table (role -> model name), every key a role and every value
    one of its models of the role's kind; anything else is one ManifestError line."""
    if not isinstance(table, dict):
        raise ManifestError(f"{path}: [{DEFAULTS_TABLE}] must be a table, not {type(table).__name__}")
    roles: dict[Role, str] = {}
    for key, name in table.items():
        where = f"{path}: [{DEFAULTS_TABLE}] {key}"
        if key not in ROLE_NAMES:
            raise ManifestError(f"{where}: unknown role; roles: {', '.join(Role)}")
        role = Role(key)
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{where}: must be the name of a [models.NAME] entry, not {name!r}")
        if name not in kinds:
            raise ManifestError(f"{where} = {name!r}: no model named {name!r}; known models: {', '.join(kinds) or 'none'}")
        if kinds[name] != role.kind:
            raise ManifestError(f"{where} = {name!r}: that model is of kind {kinds[name]}; the {role} role takes one of kind {role.kind}")
        roles[role] = name
    return roles


def defaults_table(roles: Mapping[Role, str]) -> list[str]:
    """The [defaults] table's TOML lines for `roles` (role -> model name), in Role's order."""
    if not roles:
        return []
    return [f"[{DEFAULTS_TABLE}]", *(f"{role} = {json.dumps(roles[role])}" for role in Role if role in roles), ""]
