"""Tests for fetching, checking and converting weight files. Nothing here uses the network:
sources are local paths, file:// URLs, a loopback HTTP server, or a stubbed hub client."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from glidecli.files import download, fetch
from glidecli.files.convert import convert_pt_to_safetensors
from glidecli.files.fetch import (
    WeightsError,
    cache_dir,
    cached_path,
    fetch_entry,
    recorded_sha256,
    sha256_file,
    verify_file,
)
from glidecli.files.manifest import load_manifest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep every cache inside tmp_path and start from a neutral environment."""
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS", "GLIDE_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)


def tiny_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "conv.bias": torch.randn(4),
        "embedding": torch.randn(10, 8).to(torch.float16),
        "transposed": torch.randn(3, 5).t(),  # not contiguous
        "steps": torch.arange(7, dtype=torch.int64),
        "empty": torch.zeros(0),
    }


def save_pt(path: Path, state: dict | object) -> Path:
    torch.save(state, path)
    return path


def save_safetensors(state: dict, path: Path) -> Path:
    save_file({key: value.contiguous() for key, value in state.items()}, path)
    return path


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_with(tmp_path: Path, body: str):
    path = tmp_path / "weights.toml"
    path.write_text(body)
    return load_manifest(path)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def assert_same_tensors(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert torch.equal(actual[key], tensor), key


# --- basics ------------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("GLIDE_CACHE")
    assert cache_dir() == tmp_path / "hf-home" / "glidecli"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "huggingface" / "glidecli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path("~/.cache/huggingface/glidecli").expanduser()


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 * (1 << 20) + 17))  # more than one chunk
    assert sha256_file(path) == digest_of(path)


# --- conversion --------------------------------------------------------------------------


def test_pt_to_safetensors_round_trip(tmp_path):
    state = tiny_state_dict()
    dst = convert_pt_to_safetensors(save_pt(tmp_path / "m.pt", state), tmp_path / "out" / "m.safetensors")
    assert dst == tmp_path / "out" / "m.safetensors"
    assert_same_tensors(load_file(dst), state)
    assert [p.name for p in dst.parent.iterdir()] == ["m.safetensors"]  # no temporary left


def test_conversion_unties_shared_tensors(tmp_path):
    weight = torch.randn(6, 4)
    state = {"tok.weight": weight, "head.weight": weight, "half": weight[:3]}
    dst = convert_pt_to_safetensors(save_pt(tmp_path / "tied.pt", state), tmp_path / "tied.safetensors")
    assert_same_tensors(load_file(dst), {key: value.clone() for key, value in state.items()})


def test_conversion_reads_legacy_pickles_too(tmp_path):
    state = {"w": torch.randn(2, 2)}
    src = tmp_path / "legacy.pt"
    torch.save(state, src, _use_new_zipfile_serialization=False)
    assert_same_tensors(load_file(convert_pt_to_safetensors(src, tmp_path / "legacy.safetensors")), state)


class PlantsAFile:
    """Unpickling this with full pickle would run code that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    src = save_pt(tmp_path / "evil.pt", {"w": torch.ones(1), "payload": PlantsAFile(marker)})
    dst = tmp_path / "evil.safetensors"
    with pytest.raises(WeightsError) as info:
        convert_pt_to_safetensors(src, dst)
    assert "refused to load" in one_line(info)
    assert not marker.exists()
    assert not dst.exists()


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"w": torch.ones(1), "epoch": 3}, "key 'epoch' holds a int"),
        ({"model": {"w": torch.ones(1)}}, "key 'model' holds a dict"),
        ([torch.ones(1)], "expected a state dict of tensors, found a list"),
    ],
)
def test_conversion_needs_a_flat_dict_of_tensors(tmp_path, payload, expected):
    with pytest.raises(WeightsError) as info:
        convert_pt_to_safetensors(save_pt(tmp_path / "x.pt", payload), tmp_path / "x.safetensors")
    assert expected in one_line(info)
    assert not (tmp_path / "x.safetensors").exists()


def test_conversion_of_garbage_is_a_weights_error(tmp_path):
    src = tmp_path / "junk.pt"
    src.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError) as info:
        convert_pt_to_safetensors(src, tmp_path / "junk.safetensors")
    assert str(src) in one_line(info)


# --- local sources -----------------------------------------------------------------------


def test_local_safetensors_is_used_in_place(tmp_path):
    save_safetensors(tiny_state_dict(), tmp_path / "m.safetensors")
    manifest = manifest_with(tmp_path, '[models.m]\nkind = "base"\npath = "m.safetensors"\n')
    assert fetch_entry(manifest.model("m")) == tmp_path / "m.safetensors"
    assert cached_path(manifest.model("m")) == tmp_path / "m.safetensors"


def test_local_pt_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    state = tiny_state_dict()
    src = save_pt(tmp_path / "m.pt", state)
    manifest = manifest_with(tmp_path, '[models.m]\nkind = "base"\npath = "m.pt"\n')
    entry = manifest.model("m")
    assert cached_path(entry) == src  # present, not yet converted

    converted = fetch_entry(entry, progress=False)
    assert converted.suffix == ".safetensors"
    assert converted.is_relative_to(tmp_path / "cache" / "converted")
    assert_same_tensors(load_file(converted), state)
    assert recorded_sha256(converted) == digest_of(src)
    with safe_open(converted, "pt") as handle:
        assert handle.metadata()["glidecli.source_path"] == str(src)

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(fetch, "convert_pt_to_safetensors", no_second_conversion)
    assert fetch_entry(entry, offline=True) == converted
    assert cached_path(entry) == converted


def test_changed_local_pt_is_converted_again(tmp_path):
    src = save_pt(tmp_path / "m.pt", {"w": torch.zeros(2)})
    entry = manifest_with(tmp_path, '[models.m]\nkind = "base"\npath = "m.pt"\n').model("m")
    converted = fetch_entry(entry, progress=False)
    save_pt(src, {"w": torch.ones(3)})
    os.utime(src, ns=(1, 1))  # a different mtime even on coarse filesystems
    assert cached_path(entry) == src  # the old conversion no longer counts
    assert fetch_entry(entry, progress=False) == converted
    assert torch.equal(load_file(converted)["w"], torch.ones(3))


def test_missing_local_file(tmp_path):
    entry = manifest_with(tmp_path, '[models.m]\nkind = "base"\npath = "gone.safetensors"\n').model("m")
    with pytest.raises(WeightsError) as info:
        fetch_entry(entry)
    assert f"model m: {tmp_path / 'gone.safetensors'} does not exist" in one_line(info)
    assert cached_path(entry) is None


def test_sha256_match_and_mismatch(tmp_path):
    save_safetensors(tiny_state_dict(), tmp_path / "m.safetensors")
    good = digest_of(tmp_path / "m.safetensors")
    bad = "0" * 64
    manifest = manifest_with(
        tmp_path,
        f'[models.good]\nkind = "base"\npath = "m.safetensors"\nsha256 = "{good}"\n'
        f'[models.bad]\nkind = "base"\npath = "m.safetensors"\nsha256 = "{bad}"\n',
    )
    assert fetch_entry(manifest.model("good")) == tmp_path / "m.safetensors"
    assert verify_file(manifest.model("good")) == good
    for call in (lambda: fetch_entry(manifest.model("bad")), lambda: verify_file(manifest.model("bad"))):
        with pytest.raises(WeightsError) as info:
            call()
        message = one_line(info)
        assert f"has sha256 {good}, expected {bad}" in message
        assert str(tmp_path / "m.safetensors") in message


def test_a_file_changed_after_its_check_is_checked_again(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors({"w": torch.zeros(4)}, path)
    entry = manifest_with(
        tmp_path, f'[models.m]\nkind = "base"\npath = "m.safetensors"\nsha256 = "{digest_of(path)}"\n'
    ).model("m")
    fetch_entry(entry)
    assert recorded_sha256(path) == entry.sha256
    save_safetensors({"w": torch.ones(4)}, path)
    os.utime(path, ns=(1, 1))
    with pytest.raises(WeightsError, match="expected"):
        fetch_entry(entry)


def test_verify_file_of_a_converted_file_checks_its_source(tmp_path):
    src = save_pt(tmp_path / "m.pt", tiny_state_dict())
    entry = manifest_with(
        tmp_path, f'[models.m]\nkind = "base"\npath = "m.pt"\nsha256 = "{digest_of(src)}"\n'
    ).model("m")
    converted = fetch_entry(entry, progress=False)
    assert verify_file(entry, converted) == digest_of(src)


def test_tokenizer_entries_return_the_file_itself(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    digest = digest_of(tmp_path / "tokenizer.json")
    manifest = manifest_with(tmp_path, f'[tokenizers.tok]\npath = "tokenizer.json"\nsha256 = "{digest}"\n')
    assert fetch_entry(manifest.tokenizer("tok")) == tmp_path / "tokenizer.json"


# --- url sources -------------------------------------------------------------------------


def url_manifest(tmp_path: Path, src: Path, extra: str = ""):
    return manifest_with(tmp_path, f'[models.m]\nkind = "base"\nurl = "{src.as_uri()}"\n{extra}')


def test_file_url_download_and_conversion(tmp_path):
    state = tiny_state_dict()
    (tmp_path / "remote").mkdir()
    src = save_pt(tmp_path / "remote" / "model.pt", state)
    entry = url_manifest(tmp_path, src, f'sha256 = "{digest_of(src)}"\n').model("m")
    assert cached_path(entry) is None

    converted = fetch_entry(entry, progress=False)
    download_dir = converted.parent
    assert download_dir.parent == tmp_path / "cache" / "downloads"
    assert sorted(p.name for p in download_dir.iterdir()) == ["model.pt", "model.safetensors"]
    assert digest_of(download_dir / "model.pt") == digest_of(src)
    assert_same_tensors(load_file(converted), state)

    src.unlink()  # later calls need neither the source nor the network
    assert fetch_entry(entry, offline=True) == converted
    assert cached_path(entry) == converted
    assert verify_file(entry) == entry.sha256


def test_download_resumes_from_a_partial_file(tmp_path, monkeypatch):
    src = tmp_path / "model.safetensors"
    save_safetensors(tiny_state_dict(), src)
    data = src.read_bytes()
    entry = url_manifest(tmp_path, src, f'sha256 = "{digest_of(src)}"\n').model("m")
    dest = fetch._download_path(entry.source)
    dest.parent.mkdir(parents=True)
    half = len(data) // 2
    dest.with_name(dest.name + ".part").write_bytes(data[:half])

    offsets = []
    real_open_url = download._open_url

    def spy(url, offset):
        stream, total, resumed = real_open_url(url, offset)
        offsets.append((offset, resumed))
        return stream, total, resumed

    monkeypatch.setattr(download, "_open_url", spy)
    assert fetch_entry(entry, progress=False) == dest
    assert offsets == [(half, True)]
    assert dest.read_bytes() == data
    assert not dest.with_name(dest.name + ".part").exists()


def test_download_with_the_wrong_hash_is_discarded(tmp_path):
    src = tmp_path / "model.safetensors"
    save_safetensors(tiny_state_dict(), src)
    bad = "f" * 64
    entry = url_manifest(tmp_path, src, f'sha256 = "{bad}"\n').model("m")
    with pytest.raises(WeightsError) as info:
        fetch_entry(entry, progress=False)
    message = one_line(info)
    assert f"has sha256 {digest_of(src)}, expected {bad}" in message
    dest = fetch._download_path(entry.source)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_corrupted_cached_download_is_never_used(tmp_path):
    src = tmp_path / "model.pt"
    save_pt(src, tiny_state_dict())
    entry = url_manifest(tmp_path, src, f'sha256 = "{digest_of(src)}"\n').model("m")
    converted = fetch_entry(entry, progress=False)
    cached = converted.with_name("model.pt")
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError) as info:
        fetch_entry(entry, progress=False)
    message = one_line(info)
    assert str(cached) in message and f"expected {entry.sha256}" in message
    assert "delete it and run `glide weights download m`" in message


def test_offline_url_without_a_download(tmp_path, monkeypatch):
    entry = manifest_with(
        tmp_path, '[models.m]\nkind = "base"\nurl = "https://example.invalid/model.pt"\n'
    ).model("m")

    def no_network(*args, **kwargs):
        raise AssertionError("tried the network")

    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    for offline_env, offline_arg in (("", True), ("1", None)):
        monkeypatch.setenv("HF_HUB_OFFLINE", offline_env)
        with pytest.raises(WeightsError) as info:
            fetch_entry(entry, offline=offline_arg)
        message = one_line(info)
        assert message.startswith("model m: ")
        assert str(fetch._download_path(entry.source)) in message
        assert "glide weights download m" in message and "path = ..." in message


def test_force_downloads_again(tmp_path):
    src = tmp_path / "model.safetensors"
    save_safetensors({"w": torch.zeros(2)}, src)
    entry = url_manifest(tmp_path, src).model("m")
    dest = fetch_entry(entry, progress=False)
    save_safetensors({"w": torch.ones(2)}, src)
    assert torch.equal(load_file(fetch_entry(entry, progress=False))["w"], torch.zeros(2))
    assert fetch_entry(entry, progress=False, force=True) == dest
    assert torch.equal(load_file(dest)["w"], torch.ones(2))


def test_progress_bar_goes_to_stderr(tmp_path, capfd):
    src = tmp_path / "model.safetensors"
    save_safetensors({"w": torch.zeros(2)}, src)
    fetch_entry(url_manifest(tmp_path, src).model("m"), progress=True)
    out, err = capfd.readouterr()
    assert out == ""
    assert "Downloading m" in err


# --- HTTP, on a loopback server ----------------------------------------------------------


class RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    honour_range = True
    ranges_seen: list = []

    def do_GET(self):
        header = self.headers.get("Range")
        type(self).ranges_seen.append(header)
        if header and self.honour_range:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            if start >= len(self.payload):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(self.payload)}")
                self.end_headers()
                return
            body = self.payload[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        else:
            body = self.payload
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    except OSError as exc:  # pragma: no cover - sandboxes without loopback
        pytest.skip(f"no loopback server: {exc}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    RangeHandler.ranges_seen = []
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("honour_range", [True, False])
def test_http_download_resumes_or_restarts(tmp_path, http_server, monkeypatch, honour_range):
    payload = os.urandom(300_000)
    monkeypatch.setattr(RangeHandler, "payload", payload)
    monkeypatch.setattr(RangeHandler, "honour_range", honour_range)
    port = http_server.server_address[1]
    entry = manifest_with(
        tmp_path,
        f'[models.m]\nkind = "base"\nurl = "http://127.0.0.1:{port}/w/model.safetensors"\n'
        f'sha256 = "{hashlib.sha256(payload).hexdigest()}"\n',
    ).model("m")
    dest = fetch._download_path(entry.source)
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(payload[:1000])
    assert fetch_entry(entry, progress=False) == dest
    assert dest.read_bytes() == payload
    assert RangeHandler.ranges_seen == ["bytes=1000-"]


def test_http_complete_part_file(tmp_path, http_server, monkeypatch):
    payload = os.urandom(5000)
    monkeypatch.setattr(RangeHandler, "payload", payload)
    port = http_server.server_address[1]
    entry = manifest_with(
        tmp_path, f'[models.m]\nkind = "base"\nurl = "http://127.0.0.1:{port}/model.safetensors"\n'
    ).model("m")
    dest = fetch._download_path(entry.source)
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(payload)
    assert fetch_entry(entry, progress=False).read_bytes() == payload


def test_http_error_is_one_line(tmp_path, http_server):
    port = http_server.server_address[1]
    entry = manifest_with(
        tmp_path, f'[models.m]\nkind = "base"\nurl = "http://127.0.0.1:{port}/missing.pt"\n'
    ).model("m")
    http_server.RequestHandlerClass = type("NotFound", (RangeHandler,), {"do_GET": lambda self: self.send_error(404)})
    with pytest.raises(WeightsError) as info:
        fetch_entry(entry, progress=False)
    assert "model m: cannot download" in one_line(info) and "HTTP 404" in str(info.value)


# --- hub sources (stubbed client) --------------------------------------------------------


def hub_manifest(tmp_path: Path, file_name: str, extra: str = ""):
    return manifest_with(
        tmp_path, f'[models.m]\nkind = "base"\nhub = "someone/glide"\nfile = "{file_name}"\n{extra}'
    ).model("m")


def test_hub_offline_error(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def offline_download(repo_id, filename, **kwargs):
        calls.append(kwargs)
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache\nand more text")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline_download)
    entry = hub_manifest(tmp_path, "model.safetensors")
    with pytest.raises(WeightsError) as info:
        fetch_entry(entry, offline=True)
    message = one_line(info)
    assert "model m: model.safetensors from someone/glide is not in the Hugging Face cache" in message
    assert "glide weights download m" in message and "path = ..." in message
    assert calls[-1]["local_files_only"] is True

    with pytest.raises(WeightsError) as info:  # connection failure while online
        fetch_entry(entry, offline=False)
    assert "cannot download hf://someone/glide/model.safetensors" in one_line(info)
    assert calls[-1]["local_files_only"] is False


def test_hub_files_are_used_without_modification(tmp_path, monkeypatch):
    import huggingface_hub

    state = tiny_state_dict()
    hub_cache = tmp_path / "hub-cache"
    hub_cache.mkdir()
    pt = save_pt(hub_cache / "model.pt", state)
    save_safetensors(state, hub_cache / "model.safetensors")
    before = {p.name: (digest_of(p), p.stat().st_mtime_ns) for p in hub_cache.iterdir()}
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: str(hub_cache / filename))

    assert fetch_entry(hub_manifest(tmp_path, "model.safetensors")) == hub_cache / "model.safetensors"
    converted = fetch_entry(hub_manifest(tmp_path, "model.pt", f'sha256 = "{digest_of(pt)}"\n'), progress=False)
    assert converted.is_relative_to(tmp_path / "cache" / "converted")
    assert_same_tensors(load_file(converted), state)
    assert {p.name: (digest_of(p), p.stat().st_mtime_ns) for p in hub_cache.iterdir()} == before
