"""unCLIP's weights: the manifest's Karlo entries, and reading the release's file types
(Lightning .ckpt with a `state_dict`, a pickled (mean, std) pair) into the networks, offline."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest
import torch

from glidecli.files.fetch import WeightsError, fetch_entry
from glidecli.files.manifest import HubSource, UrlSource, load_manifest
from glidecli.nets.checkpoint import load_network, read_clip_stats
from glidecli.nets.unclip_config import OpenClipConfig, PriorConfig, karlo_decoder_config, karlo_sr_config
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.tiny_unclip import TINY_DECODER, TINY_SR, tiny_unclip_network

KARLO = "https://arena.kakaocdn.net/brainrepo/models/karlo-public/v1.0.0.alpha/"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS", "GLIDE_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def glide(capsys, monkeypatch):
    return invoker(capsys, monkeypatch)


def test_packaged_manifest_has_karlo_and_clip_vit_l_14():
    """Karlo from the hub in diffusers' layout; the release's files as *-release entries."""
    manifest = load_manifest()
    expected = {
        "karlo-prior": ("unclip-prior", "85626483eaca9f581e2a78d31ff905ca/prior-ckpt-step%3D01000000-of-01000000.ckpt", PriorConfig()),
        "karlo-decoder": ("unclip-decoder", "efdf6206d8ed593961593dc029a8affa/decoder-ckpt-step%3D01000000-of-01000000.ckpt", karlo_decoder_config()),
        "karlo-sr": ("unclip-sr", "4226b831ae0279020d134281f3c31590/improved-sr-ckpt-step%3D1.2M.ckpt", karlo_sr_config()),
        "karlo-clip-stats": ("clip-stats", "0b62380a75e56f073e2844ab5199153d/ViT-L-14_stats.th", None),
    }
    for name, (kind, path, arch) in expected.items():
        entry = manifest.model(name)
        assert (entry.kind, entry.source, entry.format, entry.arch) == (
            kind, HubSource("kakaobrain/karlo-v1-alpha", "", "main"), "diffusers", arch)
        release = manifest.model(f"{name}-release")
        assert (release.kind, release.source, release.format, release.arch) == (kind, UrlSource(KARLO + path), "pt", arch)
        assert entry.sha256 is None and release.sha256 is None  # none published
    vit = manifest.model("clip-vit-l-14")
    assert (vit.kind, vit.source.repo, vit.source.file, vit.arch) == (
        "openclip", "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors", OpenClipConfig())


def lightning_checkpoint(path: Path, state: dict, prefix: str) -> Path:
    """What PyTorch Lightning saves: weights under `state_dict` beside plain training state."""
    torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.7.7",
                "state_dict": collections.OrderedDict((prefix + k, v) for k, v in state.items())}, path)
    return path


def manifest(tmp_path: Path, **entries: tuple[str, Path, dict]) -> Path:
    lines = ["version = 1"]
    for name, (kind, file, arch) in entries.items():
        lines += [f"[models.{name}]", f'kind = "{kind}"', f'url = "{file.as_uri()}"', 'format = "pt"']
        if arch:
            lines.append(f"[models.{name}.arch]")
            lines += [f"{k} = {v}" for k, v in arch.items()]
    path = tmp_path / "weights.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


TINY_DECODER_ARCH = {"image_size": 16, "model_channels": 32, "num_res_blocks": 1, "channel_mult": "[1, 2]",
                     "attention_resolutions": "[16, 8]", "num_head_channels": 16, "dropout": 0.0, "xf_width": 48, "clip_dim": 32}
TINY_SR_ARCH = {"image_size": 32, "model_channels": 32, "num_res_blocks": 1, "channel_mult": "[1, 2]"}


def test_lightning_ckpt_converts_once_and_loads_into_the_decoder(tmp_path):
    decoder = tiny_unclip_network("unclip-decoder", seed=2)
    ckpt = lightning_checkpoint(tmp_path / "decoder-ckpt-step=1.ckpt", decoder.state_dict(), "model.")
    entry = load_manifest(manifest(tmp_path, dec=("unclip-decoder", ckpt, TINY_DECODER_ARCH))).model("dec")
    assert entry.arch == TINY_DECODER
    converted = fetch_entry(entry, progress=False)
    assert converted.suffix == ".safetensors"
    loaded = load_network("unclip-decoder", entry.arch, converted)
    for name, tensor in decoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert fetch_entry(entry, progress=False) == converted  # reused, not converted again


def test_super_resolution_ckpt_holds_both_networks(tmp_path):
    sr = tiny_unclip_network("unclip-sr", seed=3)
    ckpt = lightning_checkpoint(tmp_path / "improved-sr.ckpt", sr.state_dict(), "")
    entry = load_manifest(manifest(tmp_path, sr=("unclip-sr", ckpt, TINY_SR_ARCH))).model("sr")
    loaded = load_network("unclip-sr", entry.arch, fetch_entry(entry, progress=False))
    assert entry.arch == TINY_SR
    assert torch.equal(loaded.model_last_step.out[2].weight, sr.model_last_step.out[2].weight)
    assert not torch.equal(loaded.model_last_step.out[2].weight, loaded.model_first_steps.out[2].weight)


def test_clip_stats_pair_reads_as_mean_and_std(tmp_path):
    mean, std = torch.randn(768), torch.rand(768) + 0.5
    stats = tmp_path / "ViT-L-14_stats.th"
    torch.save((mean, std), stats)
    entry = load_manifest(manifest(tmp_path, stats=("clip-stats", stats, {}))).model("stats")
    got_mean, got_std = read_clip_stats(fetch_entry(entry, progress=False))
    assert torch.equal(got_mean, mean) and torch.equal(got_std, std)


class Hyperparameters:  # stands for OmegaConf or any other class a checkpoint might pickle
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # full unpickling would run this: it creates the marker file
        return (Path.touch, (self.marker,))


def test_training_checkpoint_with_pickled_objects_gives_its_weights_without_running_code(tmp_path):
    """weights_only refuses the object; the weights are still read, and the object's code never runs."""
    prior = tiny_unclip_network("unclip-prior", seed=1)
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "prior.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in prior.state_dict().items()},
                "hyper_parameters": Hyperparameters(marker), "epoch": 3}, ckpt)
    arch = {"xf_width": 64, "xf_layers": 2, "xf_heads": 4, "clip_dim": 32}
    entry = load_manifest(manifest(tmp_path, prior=("unclip-prior", ckpt, arch))).model("prior")
    loaded = load_network("unclip-prior", entry.arch, fetch_entry(entry, progress=False))
    assert not marker.exists()
    for name, tensor in prior.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_checkpoint_whose_weights_hold_objects_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "prior.ckpt"
    torch.save({"state_dict": {"model.prd_emb": torch.zeros(1), "model.odd": Hyperparameters(marker)}}, ckpt)
    entry = load_manifest(manifest(tmp_path, prior=("unclip-prior", ckpt, {}))).model("prior")
    with pytest.raises(WeightsError) as caught:
        fetch_entry(entry, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "refused to load" in message and "nothing in them is executed" in message
    assert not marker.exists()


def test_decoder_layout_mismatch_is_one_line(tmp_path):
    sr = tiny_unclip_network("unclip-sr", seed=3)
    ckpt = lightning_checkpoint(tmp_path / "wrong.ckpt", sr.model_first_steps.state_dict(), "model.")
    entry = load_manifest(manifest(tmp_path, dec=("unclip-decoder", ckpt, TINY_DECODER_ARCH))).model("dec")
    from glidecli.nets.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="does not fit the configured network"):
        load_network("unclip-decoder", entry.arch, fetch_entry(entry, progress=False))


def test_weights_commands_cover_unclip_entries(tmp_path, monkeypatch, glide):
    prior = tiny_unclip_network("unclip-prior", seed=1)
    ckpt = lightning_checkpoint(tmp_path / "prior.ckpt", prior.state_dict(), "model.")
    arch = {"xf_width": 64, "xf_layers": 2, "xf_heads": 4, "clip_dim": 32}
    monkeypatch.setenv("GLIDE_WEIGHTS", str(manifest(tmp_path, **{"karlo-prior": ("unclip-prior", ckpt, arch)})))
    listed = glide("weights", "list")
    assert listed.code == 0 and re.search(r"karlo-prior\s+unclip-prior\s+no", listed.out), listed.out
    assert glide("weights", "download", "karlo-prior").code == 0
    assert re.search(r"karlo-prior\s+unclip-prior\s+yes", glide("weights", "list").out)
    verified = glide("weights", "verify", "karlo-prior")
    assert verified.code == 0, verified.err
    assert_one_error_line(glide("weights", "verify", "karlo-nothing"), 1, "karlo-nothing")


def test_clip_vit_loads_from_safetensors_with_its_causal_mask(tmp_path):
    """The text mask is no checkpoint tensor: loading rebuilds it, and the features match."""
    from glidecli.nets.checkpoint import save_network
    from glidecli.nets.clip_vit import clip_text
    from helpers.tiny_unclip import TINY_CLIP_VIT

    fresh = tiny_unclip_network("openclip", seed=5)
    loaded = load_network("openclip", TINY_CLIP_VIT, save_network(fresh, tmp_path / "clip.safetensors"))
    assert torch.equal(loaded.attn_mask, fresh.attn_mask)
    tokens = torch.tensor([[49406, 320, 1125, 49407] + [0] * 73])
    mask = tokens != 0
    with torch.no_grad():
        assert torch.equal(clip_text(loaded, tokens, mask).pooled, clip_text(fresh, tokens, mask).pooled)


def test_code_free_reader_rebuilds_views_and_dtypes(tmp_path):
    from glidecli.files.tensor_pickle import Opaque, read_without_code

    base = torch.randn(4, 6)
    weights = {"half": torch.randn(3).half(), "bf16": torch.randn(2, 2).bfloat16(), "long": torch.arange(5),
               "transposed": base.t(), "slice": base[1:3, 2:], "flag": torch.tensor([True, False])}
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": weights, "hparams": Hyperparameters(marker)}, tmp_path / "x.ckpt")
    tree = read_without_code(tmp_path / "x.ckpt")
    assert isinstance(tree["hparams"], Opaque) and not marker.exists()
    for name, tensor in weights.items():
        assert tree["state_dict"][name].dtype == tensor.dtype and torch.equal(tree["state_dict"][name], tensor), name
    (tmp_path / "junk.ckpt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a PyTorch zip checkpoint"):
        read_without_code(tmp_path / "junk.ckpt")
