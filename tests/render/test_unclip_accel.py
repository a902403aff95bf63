"""unCLIP sampled through the session's accelerated calls (render/accel.py): the prior, the
decoder and both super-resolution U-Nets replayed as graphs or compiled, and
`--batch-size auto` measured with their probes (render/batching.py).

On the CPU graphs run over the stand-in backend of helpers/graphs.py (replay re-runs the
network on the static buffers), so a graphed call that saw other inputs than the eager one
(the text's mask, say) would change the pictures. The CUDA test compares real graph replay
with eager execution bit for bit and skips without a GPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from glidecli.files.manifest import load_manifest
from glidecli.render import batching
from glidecli.render import engine as engine_module
from glidecli.render import session as session_module
from glidecli.render.accel import CompiledNetwork, GraphedNetwork
from glidecli.render.engine import Job, RenderOptions, Session
from glidecli.render.pipeline import SamplerChoice
from glidecli.render.ranking import BestOf
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, DEFAULT_SR, ClipModels, _UnclipRenderer, render_unclip, render_vary
from helpers.graphs import ReplayingBackend
from helpers.tiny_unclip import TINY_DECODER, TINY_SR, tiny_unclip_network, write_tiny_unclip_manifest

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PRIOR = dataclasses.replace(DEFAULT_PRIOR, sampler=SamplerChoice("ddpm", "3"))
DECODER = dataclasses.replace(DEFAULT_DECODER, sampler=SamplerChoice("ddpm", "3"))
# The SR's 7 steps: 6 by model_first_steps, the last by model_last_step.
NETWORKS = [
    ("karlo-prior", "unclip-prior", None),
    ("karlo-decoder", "unclip-decoder", None),
    ("karlo-sr", "unclip-sr", "model_first_steps"),
    ("karlo-sr", "unclip-sr", "model_last_step"),
]
JOBS = [Job(prompt, seed=10 + i, index=i) for i, prompt in enumerate(["a red cube", "a blue ball", "a green hat"])]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return load_manifest(write_tiny_unclip_manifest(tmp_path_factory.mktemp("unclip-weights")))


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "source.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def cpu_session(manifest, **options) -> Session:
    return Session(manifest, device="cpu", dtype="fp32", offline=True, **options)


def module(session, name, kind, part):
    network = session.network(name, kind)
    return getattr(network, part) if part else network


def render(session, how, picture, batch_size=2, best_of=None):
    with torch.no_grad():
        if how == "unclip":
            done = render_unclip(session, JOBS, PRIOR, DECODER, DEFAULT_SR, options=RenderOptions(batch_size=batch_size), best_of=best_of)
        else:
            done = render_vary(session, JOBS, picture, DECODER, DEFAULT_SR, options=RenderOptions(batch_size=batch_size), best_of=best_of)
        return [rendered.image.tobytes() for rendered in done]


@pytest.mark.parametrize("how", ["unclip", "vary"])
def test_graphed_sessions_render_the_eager_pictures_through_every_network(manifest, picture, monkeypatch, how):
    backends = []
    monkeypatch.setattr(session_module, "CudaGraphs", lambda: backends.append(ReplayingBackend()) or backends[-1])
    graphed, eager = cpu_session(manifest, cuda_graphs=True), cpu_session(manifest, cuda_graphs=False)
    pictures = render(graphed, how, picture)
    assert pictures == render(eager, how, picture) and len(pictures) == 3
    (backend,) = backends  # one graph pool for the session
    # Batches of 2 and 1, guided prior and decoder: 3 calls each per batch; SR 6 + 1 per batch.
    calls = {"unclip-prior": 6, "unclip-decoder": 6, "model_first_steps": 12, "model_last_step": 2}
    if how == "vary":
        del calls["unclip-prior"]
    for name, kind, part in NETWORKS:
        network = graphed.sampling_call(name, kind, part)
        assert isinstance(network, GraphedNetwork)
        if (part or kind) in calls:
            assert backend.replays_of(network) == calls[part or kind], name
            assert len(network.graphs) == 2  # one per batch shape
        assert eager.sampling_call(name, kind, part) is module(eager, name, kind, part)  # eager: the network itself


def test_each_batch_encodes_its_prompts_and_its_unguided_text_once(manifest, picture, monkeypatch):
    """The prior and the decoder are both guided by default; they share the unguided text."""
    import glidecli.render.unclip as unclip_module

    encoded = []
    original = unclip_module.clip_text
    monkeypatch.setattr(unclip_module, "clip_text", lambda clip, tokens, mask: encoded.append(len(tokens)) or original(clip, tokens, mask))
    render(cpu_session(manifest), "unclip", picture, batch_size=2)
    assert encoded == [2, 2, 1, 1]  # per batch (2 jobs, then 1): the prompts, then the empty prompts


def test_best_of_candidates_go_through_the_graphs_too(manifest, picture, monkeypatch):
    backends = []
    monkeypatch.setattr(session_module, "CudaGraphs", lambda: backends.append(ReplayingBackend()) or backends[-1])
    sessions = [cpu_session(manifest, cuda_graphs=graphs) for graphs in (True, False)]
    best = BestOf(2, "noised-clip")
    # noised-clip needs GLIDE's CLIP models: a stand-in judge that prefers brighter pictures.
    monkeypatch.setattr("glidecli.render.unclip.load_ranker", lambda session, spec: BrightnessRanker())
    pictures = [render(session, "vary", picture, batch_size=3, best_of=best) for session in sessions]
    assert pictures[0] == pictures[1]
    decoder = sessions[0].sampling_call("karlo-decoder", "unclip-decoder")
    # 3 pictures x 2 candidates in batches of 3: two decoder batches of 3 candidates, 3 steps each.
    assert len(decoder.graphs) == 1 and backends[0].replays_of(decoder) == 6


class BrightnessRanker:
    name = "brightness"

    def score(self, images, prompts):
        return images.float().mean(dim=(1, 2, 3)).cpu()


def test_compile_goes_through_compiled_network_for_every_network(manifest, picture, monkeypatch):
    """torch.compile replaced by a recording identity: each network is handed to it once, and
    the pictures are the eager ones (a real compile of every network is too slow on a CPU)."""
    compiled = []

    def recording_compile(module, **options):
        compiled.append((module, options))
        return module

    monkeypatch.setattr(torch, "compile", recording_compile)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(picture.parent / "inductor"))
    notes = []
    session = cpu_session(manifest, compile=True, note=notes.append)
    assert render(session, "unclip", picture) == render(cpu_session(manifest), "unclip", picture)
    modules = [module(session, name, kind, part) for name, kind, part in NETWORKS]
    for (name, kind, part), network in zip(NETWORKS, modules):
        call = session.sampling_call(name, kind, part)
        assert isinstance(call, CompiledNetwork) and call.network is network
    assert [module for module, _ in compiled] == modules and all(o == {"dynamic": False} for _, o in compiled)
    # One note per network and batch shape (2 and 1).
    assert sorted(n.split(" for ")[0] for n in notes) == sorted(
        f"compiled {name}{'.' + part if part else ''}" for name, _, part in NETWORKS for _ in range(2)
    )


def test_the_prior_compiles_and_samples_like_eager(monkeypatch, tmp_path):
    """One real inductor compile on the CPU: the tiny prior (the quickest unCLIP network)."""
    from glidecli.diffusion.noise import ImageNoise
    from glidecli.nets.prior import ClipText
    from glidecli.render.unclip import sample_prior

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    prior = tiny_unclip_network("unclip-prior", seed=1)
    generator = torch.Generator().manual_seed(3)
    cfg = prior.config
    text = ClipText(torch.randn(2, cfg.clip_dim, generator=generator), torch.randn(2, cfg.text_ctx, cfg.clip_dim, generator=generator),
                    torch.arange(cfg.text_ctx)[None] < torch.tensor([[5], [9]]))
    uncond = ClipText(torch.zeros(2, cfg.clip_dim), torch.zeros(2, cfg.text_ctx, cfg.clip_dim), torch.arange(cfg.text_ctx)[None].expand(2, -1) < 2)
    notes = []
    network = CompiledNetwork(prior, name="prior", note=notes.append)
    with torch.no_grad():
        runs = [sample_prior(prior, text, uncond, ImageNoise([1, 2]), SamplerChoice("ddpm", "3"), scale=4.0, network=n) for n in (network, None)]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-4)
    assert len(notes) == 1 and notes[0].startswith("compiled prior for a network batch of 4 in ")


# --- --batch-size auto ------------------------------------------------------------------------


def test_auto_is_one_on_the_cpu_without_measuring(manifest, monkeypatch):
    monkeypatch.setattr(engine_module, "auto_batch_size", lambda *a: pytest.fail("nothing is measured on the CPU"))
    renderer = _UnclipRenderer(cpu_session(manifest), ClipModels(), DECODER, DEFAULT_SR)
    assert renderer.batch_size("auto", 8, PRIOR) == 1
    assert renderer.batch_size(3, 8, PRIOR) == 3


def test_auto_on_a_gpu_measures_the_prior_decoder_and_sr(manifest, monkeypatch):
    """The plumbing on a CPU posing as a GPU: the probes of every network run, at 1 and 2
    pictures, and the planned batch (here 4) is used; best of N counts the candidates."""
    session = cpu_session(manifest)
    measured = []

    def fake_auto(count, device, probes, evict=None):
        with torch.no_grad():
            measured.append((count, [tuple(probe(pictures).shape) for probe in probes for pictures in (1, 2)]))
        return 4

    monkeypatch.setattr(engine_module, "auto_batch_size", fake_auto)
    notes = []
    session.note = notes.append
    for name, kind, _ in NETWORKS:
        session.network(name, kind)  # loaded on the CPU, before the session poses as a GPU one
    session.device = torch.device("cuda")
    renderer = _UnclipRenderer(session, ClipModels(), DECODER, DEFAULT_SR)
    assert renderer.batch_size("auto", 8, PRIOR) == 4
    prior_dim, side, sr_side = 32, TINY_DECODER.image_size, TINY_SR.image_size
    assert measured[-1] == (8, [
        (2, 6, side, side), (4, 6, side, side),  # the decoder's guided pair
        (2, prior_dim), (4, prior_dim),  # the prior's guided pair
        (1, 3, sr_side, sr_side), (2, 3, sr_side, sr_side),  # one SR U-Net
    ])
    assert notes == ["batch size 4 for 8 pictures (measured to fit the GPU's free memory)"]
    renderer.best_of = BestOf(3, "noised-clip")
    renderer.batch_size("auto", 2, None)  # vary: no prior
    assert measured[-1][0] == 6 and len(measured[-1][1]) == 4


def test_the_probes_run_each_network_on_inputs_of_the_real_shapes():
    prior = tiny_unclip_network("unclip-prior")
    decoder = tiny_unclip_network("unclip-decoder")
    sr = tiny_unclip_network("unclip-sr")
    with torch.no_grad():
        assert batching.prior_probe(prior, guided=True)(3).shape == (6, 32)
        assert batching.prior_probe(prior, guided=False)(3).shape == (3, 32)
        # The decoder reads its text through encode_clip: clip_tokens image tokens + the mask.
        seen = []
        decoder.register_forward_pre_hook(lambda module, args: seen.append(args[2]))
        assert batching.unet_probe(decoder, guided=True)(2).shape == (4, 6, 16, 16)
        assert seen[0].tokens.shape == (4, TINY_DECODER.clip_tokens + TINY_DECODER.text_ctx, TINY_DECODER.xf_width)
        assert seen[0].mask is not None and bool(seen[0].mask.all())
        # unCLIP's SR takes low_res already resized to its own size.
        inputs = []
        sr.model_first_steps.register_forward_pre_hook(lambda module, args, kwargs: inputs.append(kwargs), with_kwargs=True)
        assert batching.sr_probe(sr)(2).shape == (2, 3, 32, 32)
        assert inputs[0]["low_res"].shape == (2, 3, 32, 32)


# --- on a GPU ---------------------------------------------------------------------------------


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_cuda_graph_replay_of_every_unclip_network_equals_eager_bit_for_bit(manifest, picture, dtype):
    sessions = [Session(manifest, device="cuda", dtype=dtype, offline=True, cuda_graphs=graphs) for graphs in (True, False)]
    for how in ("unclip", "vary"):
        pictures = [render(session, how, picture) for session in sessions]
        assert pictures[0] == pictures[1]
    for name, kind, part in NETWORKS:
        network = sessions[0].sampling_call(name, kind, part)
        assert isinstance(network, GraphedNetwork) and network.failed is None and len(network.graphs) == 2


@cuda
def test_cuda_auto_batch_measures_the_unclip_networks(manifest):
    notes = []
    session = Session(manifest, device="cuda", offline=True, note=notes.append)
    renderer = _UnclipRenderer(session, ClipModels(), DECODER, DEFAULT_SR)
    assert renderer.batch_size("auto", 5, PRIOR) == 5  # tiny networks: all five fit
    assert notes == ["batch size 5 for 5 pictures (measured to fit the GPU's free memory)"]
    stages = [batching.measure_stage(probe, session.device) for probe in (
        batching.prior_probe(session.network("karlo-prior", "unclip-prior"), True),
        batching.sr_probe(session.network("karlo-sr", "unclip-sr")),
    )]
    assert all(stage.per_picture > 0 for stage in stages)
