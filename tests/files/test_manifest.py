"""Tests for the weights manifest (weights.toml) and its loader."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from glidecli.files.manifest import (
    HubSource,
    LocalSource,
    ManifestError,
    UrlSource,
    load_manifest,
    packaged_manifest_path,
)
from glidecli.nets.config import ClipConfig, UNetConfig, unet_defaults
from glidecli.nets.kinds import CLIP_KINDS, UNET_KINDS
from helpers.paths import REPO_ROOT

OFFICIAL_FILES = {
    "base": "base.pt",
    "upsample": "upsample.pt",
    "base-inpaint": "base_inpaint.pt",
    "upsample-inpaint": "upsample_inpaint.pt",
    "clip-image": "clip_image_enc.pt",
    "clip-text": "clip_text_enc.pt",
}


@pytest.fixture(autouse=True)
def no_manifest_env(monkeypatch):
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)


def write_manifest(directory: Path, text: str, name: str = "weights.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(directory: Path, text: str) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(write_manifest(directory, text))
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the packaged manifest ---------------------------------------------------------------


def test_packaged_manifest_has_the_six_official_models():
    manifest = load_manifest()
    assert manifest.path == packaged_manifest_path().resolve()
    assert list(manifest.models)[: len(OFFICIAL_FILES)] == list(OFFICIAL_FILES)
    for name, file_name in OFFICIAL_FILES.items():
        entry = manifest.model(name)
        assert entry.kind == name
        assert entry.source == UrlSource(f"https://openaipublic.blob.core.windows.net/diffusion/dec-2021/{file_name}")
        assert entry.format == "pt"
        assert entry.sha256 is None  # no published hashes: none may be invented


@pytest.mark.parametrize("kind", UNET_KINDS)
def test_packaged_unet_arch_is_the_official_default(kind):
    arch = load_manifest().model(kind).arch
    assert isinstance(arch, UNetConfig)
    assert arch == unet_defaults(kind)


def test_packaged_clip_pair_shares_one_config():
    manifest = load_manifest()
    image, text = (manifest.model(kind).arch for kind in CLIP_KINDS)
    assert image == text == ClipConfig()


def test_packaged_manifest_writes_every_arch_setting_out():
    from glidecli.files import manifest

    data = manifest.tomllib.loads(packaged_manifest_path().read_text())
    for name, table in data["models"].items():
        if table["kind"] == "clip-stats":
            assert "arch" not in table, name
            continue
        arch = manifest.load_manifest().model(name).arch
        assert set(table["arch"]) == set(type(arch).__dataclass_fields__), name


def test_packaged_tokenizer_is_gpt2_from_the_hub():
    entry = load_manifest().tokenizer("gpt2")
    assert entry.source == HubSource("openai-community/gpt2", "tokenizer.json", None)


def test_root_manifest_is_identical_to_the_packaged_copy():
    assert (REPO_ROOT / "weights.toml").read_bytes() == packaged_manifest_path().read_bytes()


# --- which manifest is read --------------------------------------------------------------


def test_env_variable_overrides_the_packaged_manifest(tmp_path, monkeypatch):
    path = write_manifest(tmp_path, '[models.mine]\nkind = "base"\npath = "mine.safetensors"\n')
    monkeypatch.setenv("GLIDE_WEIGHTS", str(path))
    assert list(load_manifest().models) == ["mine"]


def test_explicit_path_overrides_the_env_variable(tmp_path, monkeypatch):
    env_path = write_manifest(tmp_path, '[models.from-env]\nkind = "base"\npath = "a.pt"\n', "env.toml")
    explicit = write_manifest(tmp_path, '[models.explicit]\nkind = "base"\npath = "b.pt"\n', "explicit.toml")
    monkeypatch.setenv("GLIDE_WEIGHTS", str(env_path))
    assert list(load_manifest(explicit).models) == ["explicit"]
    assert list(load_manifest(str(explicit)).models) == ["explicit"]


def test_missing_file_from_env_says_where_the_name_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_WEIGHTS", str(tmp_path / "absent.toml"))
    with pytest.raises(ManifestError, match=r"absent\.toml \(from \$GLIDE_WEIGHTS\): no such manifest file"):
        load_manifest()


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest file"):
        load_manifest(tmp_path / "absent.toml")


# --- entries -----------------------------------------------------------------------------


def test_relative_local_paths_are_relative_to_the_manifest(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = write_manifest(
        tmp_path / "sub",
        """
        [models.mine]
        kind = "base"
        path = "../weights/mine.safetensors"

        [models.absolute]
        kind = "base"
        path = "/opt/models/absolute.pt"
        """,
    )
    monkeypatch.chdir("/")
    manifest = load_manifest(path)
    assert manifest.model("mine").source == LocalSource(tmp_path.resolve() / "weights" / "mine.safetensors")
    assert manifest.model("absolute").source == LocalSource(Path("/opt/models/absolute.pt"))


def test_sources_format_sha256_and_size(tmp_path):
    digest = "AB" * 32
    manifest = load_manifest(
        write_manifest(
            tmp_path,
            f"""
            [models.hubbed]
            kind = "upsample"
            hub = "someone/glide-finetune"
            file = "unet/model.safetensors"
            revision = "v1"
            sha256 = "{digest}"
            size = 1234

            [models.plain]
            kind = "clip-text"
            url = "https://example.com/files/clip%20text.bin"

            [models.explicit-format]
            kind = "base"
            path = "weights.data"
            format = "pt"
            """,
        )
    )
    hubbed = manifest.model("hubbed")
    assert hubbed.source == HubSource("someone/glide-finetune", "unet/model.safetensors", "v1")
    assert (hubbed.format, hubbed.sha256, hubbed.size) == ("safetensors", digest.lower(), 1234)
    assert hubbed.file_name == "model.safetensors"
    plain = manifest.model("plain")
    assert (plain.format, plain.sha256, plain.size, plain.file_name) == ("pt", None, None, "clip text.bin")
    assert manifest.model("explicit-format").format == "pt"
    assert [e.name for e in manifest.models_of_kind("base")] == ["explicit-format"]


def test_partial_arch_takes_the_other_settings_from_the_kind(tmp_path):
    manifest = load_manifest(
        write_manifest(
            tmp_path,
            """
            [models.small-upsampler]
            kind = "upsample"
            path = "small.safetensors"
            [models.small-upsampler.arch]
            model_channels = 128
            channel_mult = [1, 2, 2, 4]
            dropout = 0

            [models.small-clip]
            kind = "clip-image"
            path = "clip.safetensors"
            [models.small-clip.arch]
            image_layers = 6
            pixel_mean = [0, 0.5, 1]
            """,
        )
    )
    unet = manifest.model("small-upsampler").arch
    assert unet == UNetConfig(
        **{**unet_defaults("upsample").__dict__, "model_channels": 128, "channel_mult": (1, 2, 2, 4), "dropout": 0.0}
    )
    assert isinstance(unet.dropout, float)
    clip = manifest.model("small-clip").arch
    assert clip.image_layers == 6 and clip.pixel_mean == (0.0, 0.5, 1.0)
    assert clip.text_layers == ClipConfig().text_layers


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ManifestError) as info:
        load_manifest().model("bsae")
    assert "'bsae'" in str(info.value)
    assert "base, upsample, base-inpaint, upsample-inpaint, clip-image, clip-text" in str(info.value)


# --- errors ------------------------------------------------------------------------------


def test_invalid_toml_names_the_file_and_line(tmp_path):
    message = load_error(tmp_path, '[models.base]\nkind = "base"\nurl = https://x\n')
    assert str(tmp_path / "weights.toml") in message
    assert "invalid TOML" in message and "line 3" in message


def test_duplicate_table_is_a_toml_error(tmp_path):
    message = load_error(tmp_path, '[models.a]\nkind = "base"\npath = "a.pt"\n[models.a]\nkind = "base"\n')
    assert "invalid TOML" in message


@pytest.mark.parametrize(
    "body, expected",
    [
        ('kind = "base"', "give exactly one source, hub (with file), url or path; found none"),
        ('kind = "base"\nurl = "https://x/a.pt"\npath = "a.pt"', "found url, path"),
        ('kind = "base"\nhub = "a/b"\nurl = "https://x/a.pt"\nfile = "a.pt"', "found hub, url"),
        ('kind = "base"\nhub = "a/b"', "hub source needs file"),
        ('kind = "base"\nhub = "justaname"\nfile = "a.pt"', "hub must be 'owner/repo'"),
        ('kind = "base"\npath = "a.pt"\nfile = "b.pt"', "'file' only goes with hub sources"),
        ('kind = "base"\nurl = "https://x/a.pt"\nrevision = "main"', "'revision' only goes with hub sources"),
        ('kind = "base"\nurl = "ftp://x/a.pt"', "url must start with https://"),
        ('kind = "base"\npath = ""', "path must be a non-empty string"),
        ('path = "a.pt"', "missing 'kind'"),
        ('kind = "decoder"\npath = "a.pt"', "unknown kind 'decoder'; expected one of base, upsample"),
        ('kind = "base"\npath = "a.onnx"', "cannot tell the format of 'a.onnx'"),
        ('kind = "base"\npath = "a.pt"\nformat = "ckpt"', "unknown format 'ckpt'"),
        ('kind = "base"\npath = "a.pt"\nsha256 = "abc"', "sha256 must be 64 hexadecimal digits"),
        ('kind = "base"\npath = "a.pt"\nsize = -1', "size must be a positive whole number"),
        ('kind = "base"\npath = "a.pt"\nchecksum = "x"', "unknown key 'checksum'"),
        ('kind = "base"\npath = "a.pt"\narch = 3', "[models.m.arch] must be a table"),
    ],
)
def test_entry_errors_are_one_line_and_name_the_model(tmp_path, body, expected):
    message = load_error(tmp_path, f"[models.m]\n{body}\n")
    assert expected in message
    assert str(tmp_path / "weights.toml") in message


@pytest.mark.parametrize(
    "kind, arch, expected",
    [
        ("base", "model_chanels = 128", "unknown arch setting 'model_chanels' for a base model"),
        ("clip-text", "xf_width = 512", "unknown arch setting 'xf_width' for a clip-text model"),
        ("base", 'image_size = "64"', "arch.image_size must be a whole number"),
        ("base", "use_scale_shift_norm = 1", "arch.use_scale_shift_norm must be true or false"),
        ("base", "channel_mult = [1, 2.5]", "arch.channel_mult must be a list of whole numbers"),
        ("base", "xf_heads = 7", "invalid arch: xf_width 512 is not divisible by xf_heads 7"),
        ("base", "super_res = true", "describe kind 'upsample', but the entry's kind is 'base'"),
        ("upsample-inpaint", "inpaint = false", "but the entry's kind is 'upsample-inpaint'"),
    ],
)
def test_arch_errors_name_the_setting_and_the_model(tmp_path, kind, arch, expected):
    message = load_error(tmp_path, f'[models.mine]\nkind = "{kind}"\npath = "a.pt"\n[models.mine.arch]\n{arch}\n')
    assert expected in message
    assert "model 'mine'" in message


def test_tokenizer_errors(tmp_path):
    message = load_error(tmp_path, '[tokenizers.tok]\nhub = "a/b"\nfile = "t.json"\nkind = "base"\n')
    assert "tokenizer 'tok'" in message and "unknown key 'kind'" in message


def test_top_level_errors(tmp_path):
    assert "unknown top-level key 'model'" in load_error(tmp_path, '[model.base]\nkind = "base"\n')
    assert "unsupported manifest version 2" in load_error(tmp_path, "version = 2\n")
