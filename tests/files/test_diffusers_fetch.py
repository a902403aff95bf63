"""Fetching Karlo's diffusers folders: the hub cache used without network, which files a
download asks for, the converted file reused until a source changes, and bad folders (one
line, nothing cached, a second run works after the fix)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from glidecli.files import fetch_diffusers
from glidecli.files.fetch import cached_path, fetch_entry, recorded_sha256, safetensors_metadata
from glidecli.files.manifest import ManifestError, load_manifest
from glidecli.files.weights_error import WeightsError
from helpers.diffusers_folder import diffusers_manifest, tiny_karlo_networks, write_tiny_diffusers_folder
from helpers.glide_cli import assert_one_error_line, invoker

REPO = "kakaobrain/karlo-v1-alpha"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def networks():
    return tiny_karlo_networks()


def converted_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").rglob("*.safetensors"))


def fake_hub_cache(tmp_path: Path, source: Path) -> Path:
    """huggingface_hub's cache layout for REPO at COMMIT: blobs named by their sha256, the
    snapshot's files linking to them, refs/main naming the commit."""
    repo = tmp_path / "hf" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def hub_manifest(tmp_path: Path):
    return load_manifest(diffusers_manifest(tmp_path, [f'hub = "{REPO}"', 'revision = "main"']))


def no_network(*args, **kwargs):
    raise AssertionError("the network was used")


def test_hub_cache_answers_without_network(tmp_path, monkeypatch, networks):
    import huggingface_hub

    write_tiny_diffusers_folder(tmp_path / "published", networks)
    fake_hub_cache(tmp_path, tmp_path / "published")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    manifest = hub_manifest(tmp_path)
    for name in ("karlo-prior", "karlo-decoder", "karlo-sr", "karlo-clip-stats"):
        path = fetch_entry(manifest.model(name), offline=False, progress=False)
        metadata = safetensors_metadata(path)
        assert metadata["glidecli.hub_commit"] == COMMIT
        sources = json.loads(metadata["glidecli.diffusers_sources"])
        # the hub cache names each blob by its sha256, so nothing is hashed again
        assert all(Path(s["path"]).resolve().name == s["sha256"] for s in sources.values())
        assert recorded_sha256(path) == metadata["glidecli.source_sha256"]
        assert cached_path(manifest.model(name)) == path


def test_download_takes_safetensors_and_the_bin_only_where_the_hub_has_no_safetensors(tmp_path, monkeypatch, networks):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    published = write_tiny_diffusers_folder(tmp_path / "published", networks, bin_components=("decoder",))
    torch.save({"unused": torch.zeros(1)}, published / "prior" / "diffusion_pytorch_model.bin")  # beside the safetensors
    asked = []

    def download(repo_id, filename, **kwargs):
        assert repo_id == REPO and kwargs["revision"] == "main"
        asked.append(filename)
        if not (published / filename).is_file():
            raise EntryNotFoundError(f"404: {filename}")
        target = tmp_path / "hf" / "models--x" / "snapshots" / COMMIT / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(published / filename, target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    manifest = hub_manifest(tmp_path)
    prior = fetch_entry(manifest.model("karlo-prior"), progress=False)
    fetch_entry(manifest.model("karlo-decoder"), progress=False)
    assert set(json.loads(safetensors_metadata(prior)["glidecli.diffusers_sources"])) == {
        "prior/config.json", "prior/diffusion_pytorch_model.safetensors"}
    assert asked == [
        "prior/config.json", "prior/diffusion_pytorch_model.safetensors",
        "decoder/config.json", "decoder/diffusion_pytorch_model.safetensors", "decoder/diffusion_pytorch_model.bin",
        "text_proj/config.json", "text_proj/diffusion_pytorch_model.safetensors",
    ]


def test_an_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(repo_id, filename, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub\nand more")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsError) as info:
        fetch_entry(hub_manifest(tmp_path).model("karlo-prior"), offline=False, progress=False)
    message = str(info.value)
    assert "\n" not in message and "cannot download prior/config.json from hf://kakaobrain/karlo-v1-alpha@main" in message
    assert "check the connection" in message and converted_files(tmp_path) == []


def test_offline_without_the_files_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(WeightsError) as info:
        fetch_entry(hub_manifest(tmp_path).model("karlo-sr"), offline=True, progress=False)
    message = str(info.value)
    assert "\n" not in message and f"{REPO} is not in the Hugging Face cache and offline mode is on" in message
    assert converted_files(tmp_path) == []


def test_conversion_is_reused_until_a_source_changes(tmp_path, monkeypatch, networks):
    folder = write_tiny_diffusers_folder(tmp_path / "karlo", networks)
    manifest = load_manifest(diffusers_manifest(tmp_path, ['path = "karlo"']))
    entry = manifest.model("karlo-sr")
    first = fetch_entry(entry, progress=False)
    stamp = first.stat().st_mtime_ns
    conversions = []
    real = fetch_diffusers.convert_components
    monkeypatch.setattr(fetch_diffusers, "convert_components", lambda *a: conversions.append(1) or real(*a))
    assert fetch_entry(entry, progress=False) == first and conversions == []
    assert first.stat().st_mtime_ns == stamp
    weights = folder / "super_res_last" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(stamp, stamp + 10**9))  # a new copy of one component
    assert fetch_entry(entry, progress=False) == first and conversions == [1]
    assert fetch_entry(entry, progress=False, force=True) == first and conversions == [1, 1]


class Planted:
    """Unpickled, it would make a folder: the proof that a pickle's code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _break(kind: str, folder: Path) -> None:
    if kind == "class":
        (folder / "prior" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    elif kind == "missing":
        shutil.rmtree(folder / "text_proj")
    elif kind == "code":
        planted = Planted(str(folder / "code-ran"))
        torch.save({"w": torch.zeros(1), "hook": planted}, folder / "decoder" / "diffusion_pytorch_model.bin")
    elif kind == "no-weights":
        (folder / "super_res_first" / "diffusion_pytorch_model.safetensors").unlink()


@pytest.mark.parametrize(
    "damage, name, expected",
    [
        ("class", "karlo-prior", "prior: its config names class 'UNet2DModel', not 'PriorTransformer': not a diffusers unCLIP"),
        ("missing", "karlo-decoder", "text_proj: missing; a diffusers unCLIP folder has prior, decoder, text_proj"),
        ("code", "karlo-decoder", "decoder/diffusion_pytorch_model.bin: refused to load: the pickle holds more than tensors"),
        ("no-weights", "karlo-sr", "super_res_first: holds no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin"),
    ],
)
def test_bad_folders_are_one_line_nothing_cached_and_work_after_the_fix(tmp_path, networks, damage, name, expected):
    folder = write_tiny_diffusers_folder(tmp_path / "karlo", networks)
    _break(damage, folder)
    manifest = load_manifest(diffusers_manifest(tmp_path, ['path = "karlo"']))
    with pytest.raises(WeightsError) as info:
        fetch_entry(manifest.model(name), progress=False)
    assert "\n" not in str(info.value) and expected in str(info.value)
    assert converted_files(tmp_path) == [] and not (folder / "code-ran").exists()
    shutil.rmtree(folder)
    write_tiny_diffusers_folder(folder, networks)
    assert fetch_entry(manifest.model(name), progress=False).is_file()


def test_settings_that_do_not_fit_the_folder_are_one_line(tmp_path, networks):
    write_tiny_diffusers_folder(tmp_path / "karlo", networks)
    path = diffusers_manifest(tmp_path, ['path = "karlo"'])
    path.write_text(path.read_text().replace("model_channels = 32", "model_channels = 64", 1))
    with pytest.raises(WeightsError) as info:
        fetch_entry(load_manifest(path).model("karlo-decoder"), progress=False)
    message = str(info.value)
    assert "does not fit the manifest's unclip-decoder network" in message and "of the wrong shape" in message
    assert "the manifest's arch needs" in message and converted_files(tmp_path) == []


def test_a_file_or_absent_folder_is_one_line(tmp_path):
    (tmp_path / "karlo").write_text("not a folder")
    with pytest.raises(WeightsError, match="is a file; format diffusers needs a diffusers pipeline folder"):
        fetch_entry(load_manifest(diffusers_manifest(tmp_path, ['path = "karlo"'])).model("karlo-prior"))
    with pytest.raises(WeightsError, match="does not exist; format diffusers"):
        fetch_entry(load_manifest(diffusers_manifest(tmp_path, ['path = "elsewhere"'])).model("karlo-prior"))


@pytest.mark.parametrize(
    "lines, expected",
    [
        ('kind = "unclip-prior"\nhub = "a/b"\nfile = "prior/x.bin"\nformat = "diffusers"', "format diffusers reads the repository's component folders; remove 'file'"),
        ('kind = "unclip-prior"\nurl = "https://x/y.bin"\nformat = "diffusers"', "format diffusers reads a hub repository or a local folder, not a url"),
        ('kind = "base"\nhub = "a/b"\nformat = "diffusers"', "format diffusers holds unCLIP's unclip-prior, unclip-decoder, unclip-sr, clip-stats, not base"),
        ('kind = "clip-stats"\nhub = "a/b"\nformat = "diffusers"\nsha256 = "' + "0" * 64 + '"', "a diffusers folder has no single file for sha256"),
    ],
)
def test_manifest_refuses_diffusers_entries_it_cannot_read(tmp_path, lines, expected):
    (tmp_path / "m.toml").write_text(f"[models.x]\n{lines}\n")
    with pytest.raises(ManifestError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_manifest(tmp_path / "m.toml")


def test_cli_download_list_and_a_bad_folder(tmp_path, networks, capsys, monkeypatch):
    glide = invoker(capsys, monkeypatch)
    folder = write_tiny_diffusers_folder(tmp_path / "karlo", networks)
    manifest = diffusers_manifest(tmp_path, ['path = "karlo"'])

    def cached(name):
        listed = json.loads(glide("weights", "list", "--json", "--weights", manifest).out)
        return {row["name"]: row["cached"] for row in listed}[name]

    assert cached("karlo-sr") is False
    done = glide("weights", "download", "karlo-sr", "karlo-clip-stats", "-q", "--weights", manifest)
    assert done.code == 0 and len(done.paths) == 2 and all(p.is_file() for p in done.paths)
    assert cached("karlo-sr") is True
    shutil.rmtree(folder / "text_proj")
    failed = glide("weights", "download", "karlo-decoder", "-q", "--weights", manifest)
    assert_one_error_line(failed, 1, "text_proj: missing")
    verify = glide("weights", "verify", "karlo-sr", "--weights", manifest)
    assert_one_error_line(verify, 1, "a diffusers folder has no single file to hash")
