"""`--offload model|sequential` (render/offload.py) on the CPU.

The device and CPU memory are one here, so every tensor a network leaves behind is poisoned
(NaN) while it is "home": a network, block or learned embedding read while not on the device
turns the picture into NaNs. Pictures must equal those rendered without offload bit for bit,
every network call must find its network (model) or its block (sequential) on the device,
and no other network may be there meanwhile.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from glidecli.files.manifest import load_manifest
from glidecli.render import offload as offload_module
from glidecli.render.engine import Job, RenderError, RenderOptions, Session, Stage, render_generate, render_upsample
from glidecli.render.inpaint import InpaintSource, render_inpaint
from glidecli.render.pipeline import SamplerChoice
from glidecli.render.unclip import DEFAULT_DECODER, DEFAULT_PRIOR, DEFAULT_SR, render_unclip, render_vary
from helpers.paths import MODELS
from helpers.tiny_unclip import write_tiny_unclip_manifest

PRIOR = dataclasses.replace(DEFAULT_PRIOR, sampler=SamplerChoice("ddpm", "3"))
DECODER = dataclasses.replace(DEFAULT_DECODER, sampler=SamplerChoice("ddpm", "3"))
JOBS = [Job(prompt, seed=20 + i, index=i) for i, prompt in enumerate(["a red cube", "a blue ball", "a green hat"])]
SHAPES = MODELS / "weights.toml"


@pytest.fixture(autouse=True)
def poisoned_home(monkeypatch):
    """Whatever goes home is NaN until it comes back to the device."""
    original = offload_module._Resident.to_home

    def to_home(self):
        original(self)
        for _, tensor in self._tensors():
            if tensor.is_floating_point():
                tensor.data = torch.full_like(tensor, float("nan"))

    monkeypatch.setattr(offload_module._Resident, "to_home", to_home)


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def unclip_manifest(tmp_path_factory):
    return load_manifest(write_tiny_unclip_manifest(tmp_path_factory.mktemp("unclip-weights")))


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "source.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def session_for(manifest, offload: str) -> Session:
    return Session(manifest, device="cpu", dtype="fp32", offline=True, offload=offload)


class Watch:
    """Every call of a managed network's layers: which networks were on the device then."""

    def __init__(self, session: Session):
        self.session = session
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.hooked: set[str] = set()

    def hook_all(self) -> None:
        for name, network in self.session._networks.items():
            if name in self.hooked:
                continue
            self.hooked.add(name)
            for module in network.modules():
                if any(True for _ in module.parameters(recurse=False)):
                    module.register_forward_pre_hook(lambda m, args, name=name: self._seen(name, m))

    def _seen(self, name: str, module) -> None:
        offload = self.session.offload
        there = tuple(n for n, resident in offload._networks.items() if resident.on_device)
        self.calls.append((name, there))
        assert there == (name,), f"{name} ran with {there} on the device"
        assert all(not torch.isnan(p).any() for p in module.parameters(recurse=False)), f"{name}: a layer ran off the device"


def render_unclip_pictures(manifest, how, picture, offload, watch=False):
    session = session_for(manifest, offload)
    watcher = Watch(session)
    if watch:  # load every network first, so that the watch sees all of their calls
        for name, kind in (("karlo-prior", "unclip-prior"), ("karlo-decoder", "unclip-decoder"), ("karlo-sr", "unclip-sr"), ("clip-vit-l-14", "openclip")):
            session.network(name, kind)
        watcher.hook_all()
    with torch.no_grad():
        if how == "unclip":
            done = render_unclip(session, JOBS, PRIOR, DECODER, DEFAULT_SR, options=RenderOptions(batch_size=2))
        else:
            done = render_vary(session, JOBS, picture, DECODER, DEFAULT_SR, options=RenderOptions(batch_size=2))
        pictures = [rendered.image.tobytes() for rendered in done]
    return pictures, session, watcher


@pytest.mark.parametrize("how", ["unclip", "vary"])
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_unclip_pictures_are_bit_identical_with_offload(unclip_manifest, picture, how, offload):
    plain, _, _ = render_unclip_pictures(unclip_manifest, how, picture, "none")
    pictures, session, watcher = render_unclip_pictures(unclip_manifest, how, picture, offload, watch=offload == "model")
    assert pictures == plain and len(pictures) == 3
    if offload == "model":
        ran = {name for name, _ in watcher.calls}
        assert ran == ({"karlo-prior"} if how == "unclip" else set()) | {"karlo-decoder", "karlo-sr", "clip-vit-l-14"}


def test_model_offload_moves_each_stage_once_per_turn(unclip_manifest, picture):
    """Two batches (2 + 1 pictures), each: CLIP (the prompts, then the empty prompts), prior,
    decoder, SR."""
    _, session, watcher = render_unclip_pictures(unclip_manifest, "unclip", picture, "model", watch=True)
    turns = [name for i, (name, _) in enumerate(watcher.calls) if i == 0 or watcher.calls[i - 1][0] != name]
    assert turns == ["clip-vit-l-14", "karlo-prior", "karlo-decoder", "karlo-sr"] * 2
    moves = session.offload.moves
    # Loading brought each network once before the first batch; CLIP, loaded last, was still
    # there when the first batch began.
    assert moves["karlo-sr"] == 1 + 2 and moves["karlo-prior"] == 1 + 2 and moves["karlo-decoder"] == 1 + 2
    assert moves["clip-vit-l-14"] == 1 + 1


def test_sequential_offload_brings_one_block_at_a_time(unclip_manifest):
    session = session_for(unclip_manifest, "sequential")
    sr = session.network("karlo-sr", "unclip-sr")
    blocks = offload_module.network_blocks(sr)[0]
    assert "model_first_steps.input_blocks.1" in blocks and "model_first_steps.time_embed.0" in blocks
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def call():
        with torch.no_grad():
            return sr.model_first_steps(x, torch.tensor([5]), low_res=x)

    first = call()  # every block of this U-Net has been on the device once and gone home since
    blocks = [b for b in blocks if b.startswith("model_first_steps.")]
    seen = []
    for block in blocks:
        module = sr.get_submodule(block)
        module.register_forward_pre_hook(lambda m, args, block=block: seen.append((block, _blocks_with_weights_here(sr, blocks))))
    assert torch.equal(call(), first) and not torch.isnan(first).any()
    assert len(seen) == len(blocks)
    assert [s for s in seen if s[1] != [s[0]]] == []  # a block runs alone on the device
    ran = [b for b in blocks if hasattr(sr.get_submodule(b), "weight")]
    assert ran and all(torch.isnan(sr.get_submodule(b).weight).all() for b in ran)  # all home again


def _blocks_with_weights_here(network, blocks) -> list[str]:
    return [b for b in blocks if any(not torch.isnan(p).any() for p in network.get_submodule(b).parameters())]


needs_shapes = pytest.mark.skipif(not SHAPES.is_file(), reason=f"the small models are absent: {SHAPES}")


@needs_shapes
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_glide_generate_upsample_and_inpaint_are_bit_identical_with_offload(offload, tmp_path):
    manifest = load_manifest(SHAPES)
    jobs = [Job("a red circle on a blue background", seed=s, index=i) for i, s in enumerate((3, 4))]
    steps = SamplerChoice("ddim", "5")

    def pictures(choice):
        session = session_for(manifest, choice)
        with torch.no_grad():
            made = [r.image for r in render_generate(session, jobs, Stage("shapes", steps, 3.0), Stage("shapes-upsample", steps), options=RenderOptions(batch_size=2))]
            low = torch.from_numpy(np.asarray(made[0].resize((16, 16)), dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
            made += [r.image for r in render_upsample(session, jobs[:1], low, Stage("shapes-upsample", steps))]
            mask = Image.new("L", (32, 32), 0)
            mask.paste(255, (8, 8, 24, 24))
            mask.save(tmp_path / "mask.png")
            made[0].resize((32, 32)).save(tmp_path / "source.png")
            source = InpaintSource(tmp_path / "source.png", tmp_path / "mask.png")
            made += [r.image for r in render_inpaint(session, jobs[:1], source, Stage("shapes-inpaint", steps, 3.0), None)]
        return [image.tobytes() for image in made], session

    plain, _ = pictures("none")
    offloaded, session = pictures(offload)
    assert offloaded == plain and len(plain) == 4
    assert set(session.offload.moves) == {"shapes", "shapes-upsample", "shapes-inpaint"}


def test_bad_choices_and_compile_are_one_line(unclip_manifest):
    with pytest.raises(RenderError, match="unknown offload 'all'; choose one of none, model, sequential"):
        session_for(unclip_manifest, "all")
    with pytest.raises(RenderError) as info:
        Session(unclip_manifest, device="cpu", dtype="fp32", offload="model", compile=True)
    assert "--compile and --offload model do not go together" in str(info.value) and "\n" not in str(info.value)
    notes = []
    graphed = Session(unclip_manifest, device="cpu", dtype="fp32", offload="model", cuda_graphs=True, note=notes.append)
    assert graphed.cuda_graphs is False and notes == ["--offload model: CUDA graphs are off (offloaded weights change address between calls)"]


def test_a_method_that_reads_weights_before_its_layers_brings_its_network(unclip_manifest):
    """The decoder's unconditional half reads its learned embedding before any layer runs."""
    session = session_for(unclip_manifest, "model")
    decoder = session.network("karlo-decoder", "unclip-decoder")
    session.network("clip-vit-l-14", "openclip")  # the decoder goes home (poisoned)
    assert torch.isnan(decoder.cf_param).all()
    text = torch.zeros(1, 32), torch.zeros(1, 77, 32), torch.ones(1, 77, dtype=torch.bool)
    embedding = decoder.encode_clip(*text, None)
    assert session.offload.active == "karlo-decoder" and not torch.isnan(embedding.tokens).any()


def test_glide_serve_sessions_take_the_offload_choice(tmp_path):
    from glidecli.serve.service import ServerConfig, Service

    service = Service(ServerConfig(out=tmp_path, offload="sequential", device="cpu"), load_manifest(SHAPES) if SHAPES.is_file() else None)
    try:
        assert service._new_session("cpu").offload.choice == "sequential"
    finally:
        service.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_on_a_gpu_the_pictures_are_the_same_and_the_weights_leave(unclip_manifest, picture, offload):
    def render(choice):
        session = Session(unclip_manifest, device="cuda", dtype="fp16", offline=True, offload=choice, cuda_graphs=False)
        with torch.no_grad():
            pictures = [r.image.tobytes() for r in render_unclip(session, JOBS, PRIOR, DECODER, DEFAULT_SR, options=RenderOptions(batch_size=2))]
        return pictures, session

    plain = render("none")[0]  # that session, holding every network on the GPU, is gone
    pictures, session = render(offload)
    assert pictures == plain
    smallest = min(sum(p.numel() * p.element_size() for p in network.parameters()) for network in session._networks.values())
    session.offload.evict()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() < smallest  # no network's weights left on the GPU
