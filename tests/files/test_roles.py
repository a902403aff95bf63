"""Roles (files/roles.py): the model each role gets from a manifest's [defaults] table, else its
one model of the role's kind, else the packaged name; the requests take them when they name
no model; glide train's run manifests write [defaults]."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from glidecli.files.manifest import ManifestError, load_manifest
from glidecli.files.roles import PACKAGED_NAMES, Role, RoleSource, defaults_table
from glidecli.request.building import build
from glidecli.request.commands import REQUESTS, field_roles, with_roles
from glidecli.train.run_manifest import made_entry, run_roles, write_run_manifest
from helpers.paths import MODELS

# What each command used before roles, written out here (not read from the code under test):
# the names of the packaged manifest's models.
BEFORE_ROLES = {
    "generate": {"model": "base", "upsample_model": "upsample", "rank_model": "ViT-B-32:laion2b_s34b_b79k"},
    "clip-guide": {"model": "base", "upsample_model": "upsample", "clip_image_model": "clip-image", "clip_text_model": "clip-text"},
    "upsample": {"model": "upsample"},
    "inpaint": {"model": "base-inpaint", "upsample_model": "upsample-inpaint"},
    "outpaint": {"model": "base-inpaint", "upsample_model": "upsample-inpaint"},
    "unclip": {
        "prior_model": "karlo-prior", "clip_stats": "karlo-clip-stats", "decoder_model": "karlo-decoder", "sr_model": "karlo-sr",
        "clip_model": "clip-vit-l-14", "rank_model": "ViT-B-32:laion2b_s34b_b79k",
    },
    "vary": {"decoder_model": "karlo-decoder", "sr_model": "karlo-sr", "clip_model": "clip-vit-l-14", "rank_model": "ViT-B-32:laion2b_s34b_b79k"},
    "blend": {"decoder_model": "karlo-decoder", "sr_model": "karlo-sr", "clip_model": "clip-vit-l-14", "rank_model": "ViT-B-32:laion2b_s34b_b79k"},
}
STATS = """
[models.{name}]
kind = "clip-stats"
path = "stats.safetensors"
"""
UNET = """
[models.{name}]
kind = "{kind}"
path = "{name}.safetensors"
"""


@pytest.fixture(autouse=True)
def no_manifest_env(monkeypatch):
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)


def manifest_file(folder: Path, text: str) -> Path:
    path = folder / "weights.toml"
    path.write_text("version = 1\n" + textwrap.dedent(text))
    return path


def entries(*pairs: tuple[str, str]) -> str:
    return "".join(UNET.format(name=name, kind=kind) for name, kind in pairs)


# --- the packaged manifest: nothing changes --------------------------------------------------


def test_the_packaged_manifest_gives_every_command_the_models_it_used_before():
    roles = load_manifest().roles()
    for command, before in BEFORE_ROLES.items():
        request_type = REQUESTS[command]
        assert set(field_roles(request_type)) == set(before), command
        request = with_roles(request_type(), roles)
        assert {name: getattr(request, name) for name in before} == before, command


def test_the_packaged_manifests_roles_are_its_own_models_or_the_packaged_names():
    choices = load_manifest().roles().choices
    assert {role: choice.model for role, choice in choices.items()} == PACKAGED_NAMES
    assert all(choice.present for role, choice in choices.items() if role != Role.RANK)
    # unCLIP's kinds have two entries each (alpha and release): the packaged names decide
    assert choices[Role.UNCLIP_PRIOR].source == RoleSource.PACKAGED and choices[Role.BASE].source == RoleSource.KIND
    assert not choices[Role.RANK].present  # an open_clip model, not an entry


def test_a_model_named_in_the_request_is_kept():
    request = build(REQUESTS["generate"], {"model": "mine", "prompts": ("x",)})
    resolved = with_roles(request, load_manifest(MODELS / "weights.toml").roles())
    assert (resolved.model, resolved.upsample_model) == ("mine", "shapes-upsample")


# --- the shapes manifest's [defaults] ---------------------------------------------------------


def test_the_shapes_manifest_names_its_set_in_defaults():
    manifest = load_manifest(MODELS / "weights.toml")
    roles = manifest.roles()
    expected = {
        Role.BASE: "shapes", Role.UPSAMPLE: "shapes-upsample", Role.INPAINT: "shapes-inpaint", Role.CLIP: "shapes-clip",
        Role.UNCLIP_PRIOR: "shapes-prior", Role.CLIP_STATS: "shapes-prior-stats", Role.UNCLIP_DECODER: "shapes-decoder",
        Role.UNCLIP_SR: "shapes-sr", Role.RANK: "shapes-clip",
    }
    assert manifest.defaults == expected
    for role, name in expected.items():
        assert roles[role] == name and roles.choices[role].source == RoleSource.DEFAULTS
        assert manifest.model(name).kind == role.kind
    # what the shapes set lacks stays the packaged name, which commands report missing as before
    for role in (Role.UPSAMPLE_INPAINT, Role.CLIP_IMAGE, Role.CLIP_TEXT):
        assert roles[role] == PACKAGED_NAMES[role] and not roles.choices[role].present
    described = roles.describe()
    assert described["base"] == {"model": "shapes", "kind": "base", "from": "defaults", "present": True}


# --- by kind, and falling back -------------------------------------------------------------------


def test_one_model_of_a_kind_plays_its_role_without_defaults(tmp_path):
    manifest = load_manifest(manifest_file(tmp_path, entries(("mine", "base"), ("mine-up", "upsample"))))
    roles = manifest.roles()
    assert (roles[Role.BASE], roles[Role.UPSAMPLE]) == ("mine", "mine-up")
    assert roles.choices[Role.BASE].source == RoleSource.KIND
    request = with_roles(build(REQUESTS["generate"], {"prompts": ("x",)}), roles)
    assert (request.model, request.upsample_model) == ("mine", "mine-up")


def test_several_models_of_a_kind_fall_back_to_the_packaged_name(tmp_path):
    two = load_manifest(manifest_file(tmp_path, entries(("one", "base"), ("two", "base"))))
    assert two.roles()[Role.BASE] == "base" and not two.roles().choices[Role.BASE].present
    named = load_manifest(manifest_file(tmp_path, entries(("one", "base"), ("base", "base"))))
    assert named.roles()[Role.BASE] == "base" and named.roles().choices[Role.BASE].present


def test_rank_is_never_chosen_by_kind(tmp_path):
    roles = load_manifest(manifest_file(tmp_path, STATS.format(name="stats"))).roles()
    assert roles[Role.CLIP_STATS] == "stats" and roles[Role.RANK] == PACKAGED_NAMES[Role.RANK]


def test_defaults_win_over_kind(tmp_path):
    text = '[defaults]\nbase = "two"\n' + entries(("one", "base"), ("two", "base"), ("base", "base"))
    roles = load_manifest(manifest_file(tmp_path, text)).roles()
    assert roles[Role.BASE] == "two" and roles.choices[Role.BASE].source == RoleSource.DEFAULTS


# --- a bad [defaults] is one line naming the table and the key -----------------------------------


@pytest.mark.parametrize(
    ("table", "fragments"),
    [
        ('base = "nope"', ("[defaults] base = 'nope'", "no model named 'nope'", "known models: one")),
        ('upsample = "one"', ("[defaults] upsample = 'one'", "of kind base", "the upsample role takes one of kind upsample")),
        ('bass = "one"', ("[defaults] bass", "unknown role", "roles: base, upsample")),
        ("base = 3", ("[defaults] base", "must be the name of a [models.NAME] entry, not 3")),
        ('base = ""', ("[defaults] base", "not ''")),
    ],
)
def test_bad_defaults_are_one_line(tmp_path, table, fragments):
    path = manifest_file(tmp_path, f"[defaults]\n{table}\n" + entries(("one", "base")))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, message


def test_defaults_must_be_a_table(tmp_path):
    with pytest.raises(ManifestError, match=r"\[defaults\] must be a table, not str"):
        load_manifest(manifest_file(tmp_path, 'defaults = "base"\n'))


# --- glide train's run manifests --------------------------------------------------------------------


def test_run_roles_name_each_kind_held_once():
    assert run_roles([("c", "openclip"), ("p", "unclip-prior"), ("p-stats", "clip-stats"), ("d", "unclip-decoder")]) == {
        Role.CLIP: "c", Role.UNCLIP_PRIOR: "p", Role.CLIP_STATS: "p-stats", Role.UNCLIP_DECODER: "d",
    }
    # a decoder run given two priors names neither (their kind falls back as without [defaults])
    assert run_roles([("c", "openclip"), ("p1", "unclip-prior"), ("p2", "unclip-prior")]) == {Role.CLIP: "c"}
    # unless the manifest the run read gives the role to one of them (models/weights.toml's two decoders)
    held = [("c", "openclip"), ("d1", "unclip-decoder"), ("d2", "unclip-decoder")]
    assert run_roles(held, {Role.UNCLIP_DECODER: "d2", Role.UNCLIP_PRIOR: "elsewhere"}) == {Role.CLIP: "c", Role.UNCLIP_DECODER: "d2"}
    assert run_roles(held, {Role.UNCLIP_DECODER: "not-held"}) == {Role.CLIP: "c"}


def test_a_run_manifest_with_defaults_loads_back(tmp_path):
    stats = tmp_path / "run-stats.safetensors"
    stats.write_bytes(b"not read when the manifest loads")
    block = made_entry("run-stats", "clip-stats", stats, None, tmp_path)
    path = write_run_manifest(tmp_path / "weights.toml", [block], ["a test run"], run_roles([("run-stats", "clip-stats")]))
    assert "[defaults]\nclip-stats = \"run-stats\"\n" in path.read_text()
    assert load_manifest(path).defaults == {Role.CLIP_STATS: "run-stats"}


def test_defaults_table_lines_follow_the_roles_order():
    assert defaults_table({Role.CLIP: "c", Role.BASE: "b"}) == ["[defaults]", 'base = "b"', 'clip = "c"', ""]
    assert defaults_table({}) == []


def test_requests_declare_each_model_field_with_its_role():
    # every field whose option is a model flag fills from a role, so no command keeps a packaged name of its own
    for request_type in REQUESTS.values():
        for field in dataclasses.fields(request_type):
            flags = field.metadata["option"].flags
            if any(flag.endswith(("-model", "--clip-stats")) or flag == "--model" for flag in flags):
                assert field.name in field_roles(request_type) and field.default is None, (request_type.command, field.name)
