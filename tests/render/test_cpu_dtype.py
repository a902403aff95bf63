"""`--dtype auto` on the CPU: bf16 only where the processor computes it natively (render/cpu.py,
detection mocked both ways), $GLIDE_DTYPE as the standing choice, and bf16 sampling without
NaN on every kind of network (the shapes models, tiny unCLIP weights)."""

from __future__ import annotations

import json

import pytest
import torch

from glidecli.files.manifest import load_manifest
from glidecli.render import cpu
from glidecli.render.engine import Job, RenderOptions, Stage, render_generate
from glidecli.render.inpaint import InpaintSource, render_inpaint
from glidecli.render.pipeline import SamplerChoice
from glidecli.render.session import RenderError, Session, resolve_dtype
from glidecli.render.unclip import render_unclip
from helpers.paths import MODELS
from helpers.tiny_unclip import write_tiny_unclip_manifest

CPU = torch.device("cpu")


@pytest.fixture
def detection(monkeypatch):
    """native_bf16 recomputed for each case, $GLIDE_DTYPE unset (the suite sets fp32)."""
    monkeypatch.delenv("GLIDE_DTYPE", raising=False)
    detect = cpu.native_bf16
    detect.cache_clear()
    yield
    detect.cache_clear()


@pytest.mark.parametrize("flags, onednn, expected", [
    ("fpu sse avx512f avx512_bf16 avx512_vnni", True, torch.bfloat16),  # Zen 4, Cooper Lake
    ("fpu sse avx512f amx_tile amx_bf16", True, torch.bfloat16),  # Sapphire Rapids
    ("fpu sse avx2 avx512f avx512bw", True, torch.float32),  # AVX-512 without bf16 (Skylake-X): emulated
    ("fpu sse avx2", False, torch.float32),
    ("fpu sse avx512_bf16", False, torch.float32),  # a PyTorch without oneDNN's bf16
])
def test_auto_picks_bf16_only_where_it_is_native(detection, monkeypatch, tmp_path, flags, onednn, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    read = cpu.cpu_flags
    monkeypatch.setattr(cpu, "cpu_flags", lambda path="": read(str(cpuinfo)))  # this machine's flags, as a file says them
    monkeypatch.setattr(cpu, "_onednn_bf16", lambda: onednn)
    assert resolve_dtype("auto", CPU) == expected
    assert resolve_dtype("fp32", CPU) == torch.float32 and resolve_dtype("auto", torch.device("cuda")) == torch.float16


def test_the_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu.cpu_flags(str(cpuinfo)) == {"fpu", "avx512f", "avx512_bf16"}
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert "bf16" in cpu.cpu_flags(str(tmp_path / "arm"))
    assert cpu.cpu_flags(str(tmp_path / "missing")) is None


def test_without_flags_a_measured_probe_decides_once(detection, monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu, "cpu_flags", lambda path="": None)
    monkeypatch.setattr(cpu, "_onednn_bf16", lambda: True)
    probes = []
    monkeypatch.setattr(cpu, "probe_speedup", lambda: probes.append(1) or 1.9)
    assert resolve_dtype("auto", CPU) == torch.bfloat16
    cpu.native_bf16.cache_clear()
    assert resolve_dtype("auto", CPU) == torch.bfloat16 and len(probes) == 1  # the cache answered
    assert list(json.loads((tmp_path / "cpu-bf16.json").read_text()).values()) == [True]
    (tmp_path / "cpu-bf16.json").write_text("{}")
    monkeypatch.setattr(cpu, "probe_speedup", lambda: 0.4)  # emulated: slower than fp32
    cpu.native_bf16.cache_clear()
    assert resolve_dtype("auto", CPU) == torch.float32


def test_glide_dtype_is_the_standing_choice(detection, monkeypatch):
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    monkeypatch.setenv("GLIDE_DTYPE", "fp32")
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("bf16", CPU) == torch.bfloat16  # an explicit --dtype wins
    monkeypatch.setenv("GLIDE_DTYPE", "fp64")
    with pytest.raises(RenderError, match="GLIDE_DTYPE='fp64' is not a dtype"):
        resolve_dtype("auto", CPU)


class FiniteSteps:
    """A Reporter that checks every step's image and clean estimate."""

    def __init__(self):
        self.steps: dict[str, int] = {}

    def warn(self, message: str) -> None:
        pass

    def step(self, stage, info) -> None:
        assert torch.isfinite(info.x).all() and torch.isfinite(info.x0).all(), (stage, info.index)
        self.steps[stage] = self.steps.get(stage, 0) + 1


def test_bf16_samples_every_kind_without_nan(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    session = Session(load_manifest(MODELS / "weights.toml"), device="cpu", dtype="bf16", offline=True)
    fast = SamplerChoice("dpmpp_2m", "4")
    report = FiniteSteps()
    list(render_generate(session, [Job("a red circle on a blue background", 1)], Stage("shapes", fast, scale=3.0),
                         Stage("shapes-upsample", SamplerChoice("ddpm", "3")), options=RenderOptions(reporter=report)))
    from PIL import Image

    Image.new("RGB", (32, 32), (30, 60, 200)).save(tmp_path / "p.png")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    mask.save(tmp_path / "m.png")
    list(render_inpaint(session, [Job("a red square", 2)], InpaintSource(tmp_path / "p.png", tmp_path / "m.png"),
                        Stage("shapes-inpaint", fast, scale=5.0), None, options=RenderOptions(reporter=report)))
    tiny = Session(load_manifest(write_tiny_unclip_manifest(tmp_path / "tiny")), device="cpu", dtype="bf16", offline=True)
    list(render_unclip(tiny, [Job("a cat", 3)], Stage("karlo-prior", SamplerChoice("ddpm", "3"), scale=4.0),
                       Stage("karlo-decoder", SamplerChoice("ddpm", "3"), scale=8.0), Stage("karlo-sr", SamplerChoice("ddpm", "2")),
                       options=RenderOptions(reporter=report)))
    assert set(report.steps) == {"base", "upsample", "base-inpaint", "prior", "decoder", "super-res"}, report.steps
