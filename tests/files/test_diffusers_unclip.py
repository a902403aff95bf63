"""Karlo in diffusers' layout (kakaobrain/karlo-v1-alpha on the hub): the key map at full size
against the hub's layout, conversion parity with diffusers' own conversion script, the same
noise through UnCLIPPipeline and glidecli's stages, the cache, and bad folders.

Data (made outside the repository, in a scratch venv with diffusers 0.36; see
helpers/diffusers_folder.py): karlo_diffusers_layout.json holds every key and shape of the
five components at full size, built on the meta device from the configs diffusers' conversion
script gives them (those the hub's folders hold), and the configs themselves;
karlo_diffusers_pipeline.pt what UnCLIPPipeline returned for the tiny folder with the noise
drawn below (prior: fixed_small_log, sample prediction, clip range 5; decoder: learned_range).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glidecli.files.diffusers_unclip import COMPONENTS, convert_components
from glidecli.files.fetch import fetch_entry
from glidecli.files.manifest import load_manifest
from glidecli.nets.checkpoint import build_on_meta, load_network, read_clip_stats
from glidecli.nets.prior import ClipText
from glidecli.nets.unclip_config import PriorConfig, karlo_decoder_config, karlo_sr_config
from glidecli.render.pipeline import SamplerChoice, sample_stage
from glidecli.render.unclip import decoder_conditioning, sample_prior, super_resolve
from helpers.diffusers_folder import diffusers_manifest, tiny_karlo_networks, write_tiny_diffusers_folder
from helpers.tiny_unclip import TINY_CONFIGS

DATA = Path(__file__).parent / "data"
KINDS = {"prior": "unclip-prior", "decoder": "unclip-decoder", "sr": "unclip-sr"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def networks():
    return tiny_karlo_networks()


@pytest.fixture
def folder_manifest(tmp_path, networks):
    write_tiny_diffusers_folder(tmp_path / "karlo", networks)
    return load_manifest(diffusers_manifest(tmp_path, ['path = "karlo"']))


# --- the key map at full size ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, arch",
    [("unclip-prior", PriorConfig()), ("unclip-decoder", karlo_decoder_config()), ("unclip-sr", karlo_sr_config())],
)
def test_full_size_networks_read_the_hub_layout(kind, arch):
    """Every tensor of glidecli's full-size network comes from the hub's components with the
    right shape, and every tensor there is used (the prior's CLIP stats by the stats entry)."""
    layout = json.loads((DATA / "karlo_diffusers_layout.json").read_text())["keys"]
    components = {
        name: {key: torch.empty(shape, device="meta") for key, shape in layout[name].items()} for name in COMPONENTS[kind]
    }
    network = build_on_meta(kind, arch)
    expected = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    state = convert_components(kind, arch, expected, components, "hub layout")
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(t.numel() for t in state.values()) == sum(t.numel() for t in network.state_dict().values())


def test_hub_configs_describe_glidecli_full_size_settings():
    configs = json.loads((DATA / "karlo_diffusers_layout.json").read_text())["configs"]
    prior, decoder, sr = PriorConfig(), karlo_decoder_config(), karlo_sr_config()
    p = configs["prior"]
    assert (p["num_layers"], p["num_attention_heads"], p["embedding_dim"], p["num_embeddings"]) == (
        prior.xf_layers, prior.xf_heads, prior.clip_dim, prior.text_ctx
    )
    assert p["num_attention_heads"] * p["attention_head_dim"] == prior.xf_width
    d = configs["decoder"]
    assert d["block_out_channels"] == [decoder.model_channels * m for m in decoder.channel_mult]
    assert (d["layers_per_block"], d["attention_head_dim"], d["cross_attention_dim"], d["out_channels"]) == (
        decoder.num_res_blocks, decoder.num_head_channels, decoder.xf_width, decoder.out_channels
    )
    assert configs["text_proj"]["clip_extra_context_tokens"] == decoder.clip_tokens
    for name in ("super_res_first", "super_res_last"):
        s = configs[name]
        assert s["block_out_channels"] == [sr.model_channels * m for m in sr.channel_mult]
        assert (s["layers_per_block"], s["in_channels"], s["add_attention"]) == (sr.num_res_blocks, 6, False)


# --- conversion parity with diffusers' script ------------------------------------------------------


def test_folder_converts_to_the_networks_diffusers_converted(folder_manifest, networks):
    for short, kind in KINDS.items():
        entry = folder_manifest.model(f"karlo-{short}")
        loaded = load_network(kind, entry.arch, fetch_entry(entry, progress=False))
        reference = networks[short].state_dict()
        assert loaded.state_dict().keys() == reference.keys()
        assert all(torch.equal(loaded.state_dict()[k], reference[k]) for k in reference), kind
    mean, std = read_clip_stats(fetch_entry(folder_manifest.model("karlo-clip-stats"), progress=False))
    assert torch.equal(mean, networks["prior"].clip_mean) and torch.equal(std, networks["prior"].clip_std)


def test_diffusers_folder_and_release_checkpoints_give_equal_outputs(tmp_path, folder_manifest, networks):
    """The same network from both sources: the release's Lightning .ckpt and the hub's folder."""
    decoder = networks["decoder"]
    torch.save({"state_dict": {"model." + k: v for k, v in decoder.state_dict().items()}}, tmp_path / "decoder.ckpt")
    (tmp_path / "release.toml").write_text(
        '[models.karlo-decoder-release]\nkind = "unclip-decoder"\npath = "decoder.ckpt"\n\n'
        "[models.karlo-decoder-release.arch]\n" + _arch_lines("unclip-decoder")
    )
    entry = load_manifest(tmp_path / "release.toml").model("karlo-decoder-release")
    from_release = load_network("unclip-decoder", entry.arch, fetch_entry(entry, progress=False))
    hub = folder_manifest.model("karlo-decoder")
    from_hub = load_network("unclip-decoder", hub.arch, fetch_entry(hub, progress=False))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=generator)
    t = torch.tensor([10, 900])
    text = ClipText(torch.randn(2, 32, generator=generator), torch.randn(2, 77, 32, generator=generator), torch.ones(2, 77, dtype=torch.bool))
    image = torch.randn(2, 32, generator=generator)
    with torch.no_grad():
        a = from_release(x, t, from_release.encode_clip(text.pooled, text.tokens, text.mask, image))
        b = from_hub(x, t, from_hub.encode_clip(text.pooled, text.tokens, text.mask, image))
    assert a.abs().max() > 0.1 and torch.equal(a, b)


def _arch_lines(kind: str) -> str:
    import dataclasses

    from glidecli.files.manifest import toml_value

    return "".join(f"{k} = {toml_value(v)}\n" for k, v in dataclasses.asdict(TINY_CONFIGS[kind]).items())


# --- the same noise through UnCLIPPipeline -----------------------------------------------------------


def test_pipeline_embeddings_and_pictures_match_diffusers(tmp_path, networks):
    """diffusers' prior scheduler clips x0 to 5 (Karlo's own code: 10), so this prior gets 5."""
    write_tiny_diffusers_folder(tmp_path / "karlo", networks)
    manifest = load_manifest(diffusers_manifest(tmp_path, ['path = "karlo"'], prior_clamp=5.0))

    def load(short):
        entry = manifest.model(f"karlo-{short}")
        return load_network(KINDS[short], entry.arch, fetch_entry(entry, progress=False))

    prior, decoder, sr = load("prior"), load("decoder"), load("sr")
    prior.set_stats(*read_clip_stats(fetch_entry(manifest.model("karlo-clip-stats"), progress=False)))
    expected = torch.load(DATA / "karlo_diffusers_pipeline.pt", weights_only=True)
    reference = torch.load(DATA.parent.parent / "render" / "data" / "unclip_sampling.pt", weights_only=True)
    b = 2
    pooled, tokens, mask = reference["pooled"], reference["tokens"], reference["mask"]
    text, uncond = ClipText(pooled[:b], tokens[:b], mask[:b]), ClipText(pooled[b:], tokens[b:], mask[b:])
    noise = _oracle_noise(b)
    with torch.no_grad():  # each stage from the oracle's input, so that stages are judged alone
        embeddings = sample_prior(prior, text, uncond, noise["prior"], SamplerChoice("ddpm", "25"), scale=4.0)
        conditioning = decoder_conditioning(decoder, text, uncond, expected["embeddings"])
        small = sample_stage(decoder, conditioning, noise["decoder"], SamplerChoice("ddpm", "25"), scale=8.0)
        large = super_resolve(sr, expected["decoder"], noise["sr"], SamplerChoice("ddpm", "7"))
    assert all(n.used == len(n.steps) for n in noise.values())
    # diffusers' scheduler keeps alphas_cumprod in float32, where 1 - alphas_cumprod[0] is not
    # betas[0]: its last step scales x0 by betas[0] / (1 - alphas_cumprod[0]) = 0.99947, which
    # glidecli's float64 schedule (as Karlo's) does not.
    last = _float32_last_step_scale()
    assert abs(last - 0.99947) < 1e-5
    mean = prior.clip_mean  # the scale applies in the prior's normalized space
    assert _relative((embeddings - mean) * last + mean, expected["embeddings"]) < 1e-5
    assert (expected["decoder"].abs() < 0.999).float().mean() > 0.5  # not saturated: a real comparison
    # Its other float32 coefficients move each of the 25 guided steps a little more: 1.2e-4.
    assert _relative((small * last).clamp(-1, 1), expected["decoder"]) < 3e-4
    # 7 long steps: at most 4e-4 (a tenth of an 8-bit level), 2e-5 on average, spread evenly.
    difference = ((large * last * 0.5 + 0.5).clamp(0, 1) - expected["sr"]).abs()
    assert difference.max() < 1e-3 and difference.mean() < 5e-5


def _float32_last_step_scale() -> float:
    import math

    alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731 (squaredcos_cap_v2)
    beta0 = torch.tensor(1 - alpha_bar(1 / 1000) / alpha_bar(0), dtype=torch.float32)
    return (beta0 / (1 - (1 - beta0))).item()


class _OracleNoise:
    """The oracle's noise for one stage: a start tensor, then one per ancestral step."""

    def __init__(self, start, steps):
        self.start, self.steps, self.used = start, list(steps), 0

    def __len__(self):
        return self.start.shape[0]

    def initial(self, shape, device=None, dtype=torch.float32):
        return self.start.clone()

    def __call__(self, like):
        self.used += 1
        return self.steps[self.used - 1].clone()


def _oracle_noise(b):
    generator = torch.Generator().manual_seed(2024)
    stages = {"prior": ((32,), 25), "decoder": ((3, 16, 16), 25), "sr": ((3, 32, 32), 7)}
    noise = {}
    for stage, (shape, steps) in stages.items():  # drawn in the oracle's order
        start = torch.randn((b, *shape), generator=generator)
        noise[stage] = _OracleNoise(start, torch.randn((steps - 1, b, *shape), generator=generator))
    return noise


def _relative(actual, expected) -> float:
    return ((actual.double() - expected.double()).abs().max() / expected.abs().max()).item()
