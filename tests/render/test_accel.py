"""How a stage's network call runs (render/accel.py): CUDA graph replay, torch.compile.

On the CPU the graph wrapper runs over a stand-in backend whose replay re-runs the network on
whatever the static buffers hold, so any input the wrapper forgot to copy shows up as a wrong
result. The CUDA tests compare real graph replay with eager execution bit for bit and skip
without a GPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from glidecli.diffusion.noise import ImageNoise
from glidecli.files.manifest import load_manifest
from glidecli.nets.checkpoint import build_network, random_init_
from glidecli.nets.prior import ClipText
from glidecli.render import session as session_module
from glidecli.render.accel import CompiledNetwork, CudaGraphs, GraphedNetwork, compile_cache_dir, network_call
from glidecli.render.engine import DEFAULT_BASE, DEFAULT_UPSAMPLE, Job, RenderOptions, Session, render_generate
from glidecli.render.pipeline import Conditioning, SamplerChoice, StageInputs, quantize_to_8bit, sample_stage
from helpers.graphs import ReplayingBackend
from helpers.paths import MODELS
from helpers.tiny import tiny_network, tiny_unet_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class FailingBackend:
    def capture(self, run):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


def smallest_base(seed: int):
    """A one-level base network (a ResBlock and an attention block per stage): the quickest to compile."""
    arch = dataclasses.replace(tiny_unet_config("base"), channel_mult=(1,), attention_resolutions=(16,), xf_layers=1)
    return random_init_(build_network("base", arch), seed=seed).eval()


def conditioning(model, seed: int, batch: int, guided: bool = True) -> Conditioning:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.config.n_vocab, (batch, model.config.text_ctx), generator=generator)
    tokens = tokens.to(next(model.parameters()).device)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    with torch.no_grad():
        text = model.encode_text(tokens, mask)
        uncond = model.encode_text(torch.zeros_like(tokens), torch.zeros_like(mask)) if guided else None
    return Conditioning(text, uncond, [False] * batch)


def sample(model, network, seed: int, batch: int, **kwargs):
    cond = conditioning(model, seed, batch)
    noise = ImageNoise(list(range(seed, seed + batch)))
    with torch.no_grad():
        return sample_stage(model, cond, noise, SamplerChoice("dpmpp_2m_sde", "4"), scale=3.0, network=network, **kwargs)


def test_replayed_calls_equal_eager_and_copy_the_text_once_per_batch():
    model = tiny_network("base", seed=3)
    backend = ReplayingBackend()
    graphed = GraphedNetwork(model, backend, name="base")
    # Two batches of two with different prompts (one graph), then a batch of one (a second graph).
    for seed, batch in ((1, 2), (7, 2), (11, 1)):
        assert torch.equal(sample(model, graphed, seed, batch), sample(model, None, seed, batch))
    assert backend.captures == len(graphed.graphs) == 2
    first, second = graphed.graphs.values()
    # Per batch: x, t, pooled text, text tokens at the first step, then x and t at each of the
    # other 3 steps; the pooled text and tokens stay put within a batch.
    assert first.copies == 2 * (4 + 2 * 3)
    assert second.copies == 4 + 2 * 3


def test_conditioning_images_follow_each_batch():
    model = tiny_network("upsample", seed=4)
    graphed = GraphedNetwork(model, ReplayingBackend(), name="upsample")
    for seed in (2, 5):
        low_res = quantize_to_8bit(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
        cond = conditioning(model, seed, 2, guided=False)
        with torch.no_grad():
            runs = [
                sample_stage(model, cond, ImageNoise([seed, seed + 1]), SamplerChoice("dpmpp_2m", "3"), inputs=StageInputs(low_res=low_res), network=network)
                for network in (graphed, None)
            ]
        assert torch.equal(*runs)


def test_the_engine_samples_through_the_sessions_graphs(monkeypatch):
    """render_generate on the small trained models: a session replaying graphs (the stand-in
    backend in place of CUDA's) gives the pictures of an eager one, pixel for pixel."""
    if not (MODELS / "weights.toml").is_file():
        pytest.skip("the small models are absent")
    monkeypatch.setattr(session_module, "CudaGraphs", ReplayingBackend)
    manifest = load_manifest(MODELS / "weights.toml")
    base = dataclasses.replace(DEFAULT_BASE, model="shapes")
    upsample = dataclasses.replace(DEFAULT_UPSAMPLE, model="shapes-upsample")
    jobs = [Job(f"a red circle on a {colour} background", seed=i, index=i) for i, colour in enumerate(["blue", "green", "red"])]
    sessions = [Session(manifest, device="cpu", dtype="fp32", offline=True, cuda_graphs=graphs) for graphs in (True, False)]
    with torch.no_grad():
        pictures = [[done.image for done in render_generate(s, jobs, base, upsample, options=RenderOptions(batch_size=2))] for s in sessions]
    assert [p.tobytes() for p in pictures[0]] == [p.tobytes() for p in pictures[1]]
    graphed = sessions[0].sampling_call("shapes", "base")
    assert isinstance(graphed, GraphedNetwork) and len(graphed.graphs) == 2  # batches of 2 and 1
    assert sessions[1].sampling_call("shapes", "base") is sessions[1].unet("shapes", "base")


def test_a_failed_capture_runs_eagerly_with_one_note():
    model = tiny_network("base", seed=5)
    notes = []
    graphed = GraphedNetwork(model, FailingBackend(), name="base", note=notes.append)
    for _ in range(2):
        assert torch.equal(sample(model, graphed, 3, 2), sample(model, None, 3, 2))
    assert notes == ["CUDA graph capture of base failed (operation not permitted when stream is capturing); running it without graphs"]
    assert not graphed.graphs


def test_calls_with_autograd_on_are_not_captured():
    model = tiny_network("base", seed=6)
    backend = ReplayingBackend()
    graphed = GraphedNetwork(model, backend)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([3])
    text = conditioning(model, 0, 1, guided=False).text
    with torch.enable_grad():
        assert torch.equal(graphed(x, t, text), model(x, t, text))
    assert backend.captures == 0


@dataclasses.dataclass(frozen=True)
class MaskedText:
    """A dataclass text object with more fields than GLIDE's TextEmbedding."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor | None = None
    scale: torch.Tensor | None = None


def reads_every_field(x, timesteps, text, **images):
    """A stand-in network whose output depends on every field of its text object."""
    out = x * text.pooled[:, :1] + text.tokens.sum(dim=(1, 2))[:, None] + timesteps[:, None]
    if text.mask is not None:
        out = out + text.mask.float().sum(-1, keepdim=True)
    if getattr(text, "scale", None) is not None:
        out = out * text.scale
    return out + (0 if type(text) is MaskedText else 100)  # the type must survive too


@pytest.mark.parametrize("kind", ["clip-text", "dataclass"])
def test_any_text_object_is_rebuilt_with_its_own_type_and_every_field(kind):
    """unCLIP's texts carry a mask (ClipText, the decoder's TextEmbedding): a graphed call
    must see exactly what the eager call sees, or results differ silently."""
    backend = ReplayingBackend()
    graphed = GraphedNetwork(reads_every_field, backend)
    generator = torch.Generator().manual_seed(0)
    for step in range(3):
        pooled, tokens = torch.randn(2, 4, generator=generator), torch.randn(2, 5, 4, generator=generator)
        mask = torch.rand(2, 5, generator=generator) > 0.5
        if kind == "clip-text":
            text = ClipText(pooled, tokens, mask)
        else:
            text = MaskedText(pooled, tokens, mask if step else None, torch.rand(2, 1, generator=generator))
        x, t = torch.randn(2, 4, generator=generator), torch.tensor([step, step + 1])
        with torch.no_grad():
            assert torch.equal(graphed(x, t, text), reads_every_field(x, t, text))
    # The dataclass without a mask is another signature than with one.
    assert len(graphed.graphs) == (1 if kind == "clip-text" else 2) and backend.replays_of(graphed) == 3


def test_a_text_object_that_is_not_tensors_runs_eagerly_with_one_note():
    notes = []
    graphed = GraphedNetwork(reads_every_field, ReplayingBackend(), name="odd", note=notes.append)
    text = MaskedText(torch.ones(1, 4), torch.ones(1, 2, 4), None, 2.0)
    x, t = torch.ones(1, 4), torch.tensor([1])
    with torch.no_grad():
        assert torch.equal(graphed(x, t, text), reads_every_field(x, t, text))
    assert notes == ["CUDA graph capture of odd failed (text field 'scale' is a float, not a tensor); running it without graphs"]


def test_cpu_sessions_call_the_network_itself():
    model = tiny_network("base")
    assert network_call(model, torch.device("cpu")) is model
    assert isinstance(network_call(model, torch.device("cpu"), cuda_graphs=True, backend=ReplayingBackend()), GraphedNetwork)


def test_compile_cache_lives_in_glidecli_cache_unless_inductor_is_told(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "glide"))
    assert compile_cache_dir() == tmp_path / "glide" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"


def test_compiled_network_matches_eager_and_notes_its_compile_time_once(monkeypatch, tmp_path):
    """Inductor on the CPU (C++ kernels): one small network, compiled once (~30 s cold)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = smallest_base(7)
    notes = []
    compiled = CompiledNetwork(model, name="base", note=notes.append)
    cond = conditioning(model, 2, 1)
    with torch.no_grad():
        runs = [
            sample_stage(model, cond, ImageNoise([2]), SamplerChoice("ddim", "3"), scale=3.0, network=network)
            for network in (compiled, None)
        ]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-4)
    assert len(notes) == 1 and notes[0].startswith("compiled base for a network batch of 2 in ")
    assert str(tmp_path / "inductor") in notes[0] and any((tmp_path / "inductor").iterdir())


# --- on a GPU ---------------------------------------------------------------------------------


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graph_replay_equals_eager_bit_for_bit(dtype):
    base = tiny_network("base", seed=8).to("cuda", dtype)
    upsample = tiny_network("upsample", seed=9).to("cuda", dtype)
    for model in (base, upsample):
        for module in model.modules():  # norms stay fp32, as loading keeps them
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                module.float()
    backend = CudaGraphs()
    graphed_base = GraphedNetwork(base, backend, name="base")
    graphed_up = GraphedNetwork(upsample, backend, name="upsample")
    for seed, batch in ((1, 2), (4, 2), (9, 3)):
        runs = []
        for net_base, net_up in ((graphed_base, graphed_up), (None, None)):
            noise = ImageNoise(list(range(seed, seed + batch)))
            with torch.no_grad():
                low = sample_stage(base, conditioning(base, seed, batch), noise, SamplerChoice("dpmpp_2m_sde", "5"), scale=3.0, network=net_base)
                high = sample_stage(upsample, conditioning(upsample, seed, batch, guided=False), noise, SamplerChoice("dpmpp_2m", "4"),
                                    inputs=StageInputs(low_res=quantize_to_8bit(low)), network=net_up)
            runs.append((low, high))
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert len(graphed_base.graphs) == len(graphed_up.graphs) == 2 and graphed_base.failed is None


@cuda
def test_cuda_compiled_and_graphed_network_is_close_to_eager(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = smallest_base(10).cuda()
    notes = []
    network = network_call(model, torch.device("cuda"), compile=True, name="base", note=notes.append)
    assert isinstance(network, GraphedNetwork)
    cond = conditioning(model, 3, 2)
    with torch.no_grad():
        runs = [sample_stage(model, cond, ImageNoise([3, 4]), SamplerChoice("ddim", "4"), scale=3.0, network=n) for n in (network, None)]
    # Inductor fuses and reorders reductions (norms, attention), so compiled is close, not
    # equal; four guided steps amplify that (on an H200: 1 of 1536 values 2.5e-3 off).
    torch.testing.assert_close(runs[0], runs[1], rtol=5e-3, atol=5e-3)
    assert network.failed is None and sum(n.startswith("compiled base") for n in notes) == 1


@cuda
def test_cuda_sessions_render_the_same_pictures_with_and_without_graphs():
    if not (MODELS / "weights.toml").is_file():
        pytest.skip("the small models are absent")
    manifest = load_manifest(MODELS / "weights.toml")
    base = dataclasses.replace(DEFAULT_BASE, model="shapes")
    upsample = dataclasses.replace(DEFAULT_UPSAMPLE, model="shapes-upsample")
    jobs = [Job(f"a red circle on a {colour} background", seed=i, index=i) for i, colour in enumerate(["blue", "green", "red"])]
    notes = []
    sessions = [Session(manifest, device="cuda", offline=True, cuda_graphs=graphs, note=notes.append) for graphs in (True, False)]
    assert sessions[0].dtype == torch.float16  # --dtype auto on a GPU
    pictures = [[d.image.tobytes() for d in render_generate(s, jobs, base, upsample, options=RenderOptions(batch_size="auto"))] for s in sessions]
    assert pictures[0] == pictures[1] and len(pictures[0]) == 3
    assert notes == ["batch size 3 for 3 pictures (measured to fit the GPU's free memory)"] * 2
