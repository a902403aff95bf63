"""Peak GPU memory of `glide unclip` for each `--offload` choice: predicted from the networks'
full-size layouts (any machine), and measured on a GPU. Used by `unclip_bench.py --memory`.

The prediction adds, per stage, the bytes of the weights the choice keeps on the device to the
peak of the activations of one call at batch 1 (the guided stages' call holds 2 rows). The
weights are counted in the inference dtype with the norms in fp32 (nets/layers.py); the
activations are counted by running the call on the `meta` device under a dispatch mode that
adds every fresh tensor's bytes while it lives (views and in-place results add nothing).
What it leaves out: the CUDA context (about 0.3-0.5 GB, outside PyTorch's allocator), cuDNN
and cuBLAS workspaces, and the allocator's fragmentation.

- none: every network's weights at once, plus the largest call's activations;
- model: the largest (weights of one network + its call's activations);
- sequential: the largest (one network's tensors read outside its blocks + its largest block +
  its call's activations).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import harness
from glidecli.nets.checkpoint import build_on_meta, fp32_parameter_names
from glidecli.nets.prior import ClipText
from glidecli.nets.unclip_config import OpenClipConfig, PriorConfig, karlo_decoder_config, karlo_sr_config
from glidecli.render.offload import network_blocks

GB = 1e9


class LiveBytes(TorchDispatchMode):
    """The most bytes held at once by tensors created inside the mode."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in args if isinstance(a, torch.Tensor)}
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in inputs and tensor._base is None:
                size = tensor.numel() * tensor.element_size()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._free, size)
        return out

    def _free(self, size: int) -> None:
        self.live -= size


def _weight_bytes(network: torch.nn.Module, names, dtype: torch.dtype, keep_fp32: set[str]) -> int:
    state = dict(network.named_parameters()) | dict(network.named_buffers())
    size = torch.empty((), dtype=dtype).element_size()
    return sum(state[n].numel() * (4 if n in keep_fp32 else size) for n in names if n in state)


def _call(stage: str, network: torch.nn.Module, dtype: torch.dtype):
    """One call of the stage at batch 1 on meta inputs (guided stages: 2 rows)."""
    meta = dict(device="meta")
    if stage == "clip-text":
        from glidecli.nets.clip_vit import clip_text

        ctx = network.config.text_ctx
        return lambda: clip_text(network, torch.zeros(2, ctx, dtype=torch.long, **meta), torch.ones(2, ctx, dtype=torch.bool, **meta))
    if stage == "prior":
        cfg = network.config
        text = ClipText(torch.zeros(2, cfg.clip_dim, **meta), torch.zeros(2, cfg.text_ctx, cfg.clip_dim, **meta), torch.ones(2, cfg.text_ctx, dtype=torch.bool, **meta))
        return lambda: network(torch.zeros(2, cfg.clip_dim, **meta), torch.zeros(2, dtype=torch.long, **meta), text)
    if stage == "decoder":
        cfg = network.config
        text = network.encode_clip(torch.zeros(2, cfg.clip_dim, **meta), torch.zeros(2, cfg.text_ctx, cfg.clip_dim, **meta), torch.ones(2, cfg.text_ctx, dtype=torch.bool, **meta), torch.zeros(2, cfg.clip_dim, **meta))
        return lambda: network(torch.zeros(2, 3, cfg.image_size, cfg.image_size, **meta), torch.zeros(2, dtype=torch.long, **meta), text)
    unet = network.model_first_steps
    side = unet.config.image_size
    return lambda: unet(torch.zeros(1, 3, side, side, **meta), torch.zeros(1, dtype=torch.long, **meta), low_res=torch.zeros(1, 3, side, side, **meta))


STAGES = {
    "clip-text": ("openclip", OpenClipConfig),
    "prior": ("unclip-prior", PriorConfig),
    "decoder": ("unclip-decoder", karlo_decoder_config),
    "sr": ("unclip-sr", karlo_sr_config),
}


def stage_memory(dtype: torch.dtype = torch.float16) -> dict[str, dict[str, int]]:
    """Per stage: bytes of all weights, of the tensors read outside blocks, of the largest
    block, and of the activations of one batch-1 call."""
    found = {}
    for stage, (kind, config) in STAGES.items():
        network = build_on_meta(kind, config()).to(dtype)
        keep_fp32 = set() if kind == "openclip" else fp32_parameter_names(network)
        names = [n for n, _ in network.named_parameters()] + [n for n, _ in network.named_buffers()]
        blocks, loose = network_blocks(network)
        block_bytes = [_weight_bytes(network, [f"{b}.{n}" for n, _ in network.get_submodule(b).named_parameters()], dtype, keep_fp32) for b in blocks]
        live = LiveBytes()
        with torch.no_grad(), live:
            _call(stage, network, dtype)()
        found[stage] = {
            "weights": _weight_bytes(network, names, dtype, keep_fp32),
            "loose": _weight_bytes(network, loose, dtype, keep_fp32),
            "largest_block": max(block_bytes),
            "activations": live.peak,
        }
    return found


def predicted_peaks(stages: dict[str, dict[str, int]]) -> dict[str, int]:
    return {
        "none": sum(s["weights"] for s in stages.values()) + max(s["activations"] for s in stages.values()),
        "model": max(s["weights"] + s["activations"] for s in stages.values()),
        "sequential": max(s["loose"] + s["largest_block"] + s["activations"] for s in stages.values()),
    }


def print_prediction(dtype: torch.dtype = torch.float16) -> dict[str, int]:
    stages = stage_memory(dtype)
    name = str(dtype).removeprefix("torch.")
    print(f"## Predicted peak GPU memory of glide unclip at 256x256, batch 1, {name} (meta-device accounting)\n")
    harness.print_header(["stage", "weights GB", "outside blocks GB", "largest block GB", "activations of one call GB"])
    for stage, s in stages.items():
        print(f"| {stage} | {s['weights'] / GB:.2f} | {s['loose'] / GB:.3f} | {s['largest_block'] / GB:.3f} | {s['activations'] / GB:.3f} |")
    peaks = predicted_peaks(stages)
    print()
    harness.print_header(["--offload", "predicted peak GB", "target"])
    targets = {"none": "-", "model": "<= 5", "sequential": "<= 2"}
    for choice, peak in peaks.items():
        print(f"| {choice} | {peak / GB:.2f} | {targets[choice]} |")
    print("\n# not counted: the CUDA context (0.3-0.5 GB), cuDNN/cuBLAS workspaces, fragmentation.")
    return peaks


# --- measured (on a GPU; on a CPU the times alone, to check the script) -------------------------------


def write_random_unclip(directory, configs: dict, dtype: torch.dtype = torch.float16):
    """A manifest of unCLIP networks with random weights (what the real ones cost to run),
    under the packaged names, in `directory`."""
    import dataclasses
    from pathlib import Path

    from safetensors.torch import save_file

    from glidecli.files.manifest import toml_value
    from glidecli.nets.checkpoint import build_network, random_init_, save_network

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = {"unclip-prior": "karlo-prior", "unclip-decoder": "karlo-decoder", "unclip-sr": "karlo-sr", "openclip": "clip-vit-l-14"}
    lines = ["version = 1", ""]
    for kind, name in names.items():
        path = directory / f"{name}.safetensors"
        if not path.is_file():
            save_network(random_init_(build_network(kind, configs[kind])).to(dtype), path)
        lines += [f"[models.{name}]", f'kind = "{kind}"', f'path = "{path.name}"', "", f"[models.{name}.arch]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in dataclasses.asdict(configs[kind]).items()]
        lines.append("")
    dim = configs["unclip-prior"].clip_dim
    save_file({"0": torch.zeros(dim), "1": torch.ones(dim)}, str(directory / "stats.safetensors"))
    lines += ["[models.karlo-clip-stats]", 'kind = "clip-stats"', 'path = "stats.safetensors"', ""]
    (directory / "weights.toml").write_text("\n".join(lines))
    return directory / "weights.toml"


def measure_offload(manifest_path, device: str, dtype: str, choices=("none", "model", "sequential"), pictures: int = 2) -> list[dict]:
    """Seconds per picture and peak allocated memory of `glide unclip` (default settings,
    batch 1) for each choice: one warm-up picture, then `pictures` timed ones."""
    import time

    from glidecli.files.manifest import load_manifest
    from glidecli.render.engine import Job, RenderOptions, Session
    from glidecli.render.unclip import render_unclip

    rows = []
    for choice in choices:
        session = Session(load_manifest(manifest_path), device=device, dtype=dtype, offline=True, offload=choice)
        cuda = session.device.type == "cuda"
        with torch.no_grad():
            list(render_unclip(session, [Job("a warm-up", 0)]))
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            began = time.perf_counter()
            list(render_unclip(session, [Job(f"a red hat {i}", i + 1, i) for i in range(pictures)], options=RenderOptions(batch_size=1)))
            if cuda:
                torch.cuda.synchronize()
        seconds = (time.perf_counter() - began) / pictures
        rows.append({"offload": choice, "s_per_picture": seconds, "peak": torch.cuda.max_memory_allocated() if cuda else None,
                     "moves": dict(session.offload.moves)})
        del session
        if cuda:
            torch.cuda.empty_cache()
    return rows


def print_measured(rows: list[dict], device: str, dtype: str) -> None:
    print(f"\n## Measured: glide unclip, batch 1, {dtype} on {device}\n")
    harness.print_header(["--offload", "s/picture", "vs none", "peak allocated GB"])
    base = rows[0]["s_per_picture"]
    for row in rows:
        peak = "-" if row["peak"] is None else f"{row['peak'] / GB:.2f}"
        print(f"| {row['offload']} | {row['s_per_picture']:.2f} | {row['s_per_picture'] / base:.2f}x | {peak} |")
