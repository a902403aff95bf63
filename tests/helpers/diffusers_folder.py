"""A tiny Karlo pipeline folder in diffusers' layout, rebuilt from the oracle's record.

tests/files/data/karlo_diffusers_tiny.json was made outside the repository: diffusers' own
conversion script (scripts/convert_kakao_brain_unclip_to_diffusers.py, diffusers 0.36, its
full-size configs swapped for helpers/tiny_unclip.py's) converted the tiny networks below,
saved as the release's .ckpt files, and the record says, for every tensor diffusers wrote,
which tiny-network tensor its values were found in (by value, not by name) and which rows.
Rebuilding the folder from it needs no diffusers, and it is diffusers' mapping, not ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers.tiny_unclip import tiny_unclip_network

DATA = Path(__file__).resolve().parent.parent / "files" / "data"
RECIPE = DATA / "karlo_diffusers_tiny.json"
COMPONENT_NAMES = ("prior", "decoder", "text_proj", "super_res_first", "super_res_last")


def tiny_karlo_networks() -> dict[str, torch.nn.Module]:
    """The networks the oracle converted (the seeds and scales of test_unclip_sampling.py)."""
    return {
        "prior": tiny_unclip_network("unclip-prior", seed=1),
        "decoder": tiny_unclip_network("unclip-decoder", seed=2, std=0.02),
        "sr": tiny_unclip_network("unclip-sr", seed=3),
    }


def _release_tensors(networks) -> dict[str, torch.Tensor]:
    tensors = {f"{kind}:{key}": value for kind, net in networks.items() for key, value in net.state_dict().items()}
    tensors["stats:0"] = networks["prior"].clip_mean.reshape(1, -1)
    tensors["stats:1"] = networks["prior"].clip_std.reshape(1, -1)
    return tensors


def diffusers_state(component: str, networks=None) -> dict[str, torch.Tensor]:
    """The tensors diffusers wrote for `component`, rebuilt from the record."""
    release = _release_tensors(networks or tiny_karlo_networks())
    state = {}
    for key, where in json.loads(RECIPE.read_text())[component]["tensors"].items():
        source = release[where["from"]]
        rows = source.reshape(source.shape[0], -1) if source.dim() > 1 else source.reshape(-1, 1)
        if where["rows"] is not None:
            rows = torch.cat([rows[start:start + count] for start, count in where["rows"]])
        state[key] = rows.reshape(where["shape"]).clone()
    return state


def write_tiny_diffusers_folder(folder: Path, networks=None, bin_components=("decoder",)) -> Path:
    """The folder diffusers' save_pretrained wrote: `<component>/config.json` (naming the class)
    and `diffusion_pytorch_model.safetensors`, or `.bin` for `bin_components`."""
    from safetensors.torch import save_file

    recipe = json.loads(RECIPE.read_text())
    networks = networks or tiny_karlo_networks()
    for component in COMPONENT_NAMES:
        target = folder / component
        target.mkdir(parents=True, exist_ok=True)
        (target / "config.json").write_text(json.dumps({"_class_name": recipe[component]["class"]}))
        state = diffusers_state(component, networks)
        if component in bin_components:
            torch.save(state, target / "diffusion_pytorch_model.bin")
        else:
            save_file(state, str(target / "diffusion_pytorch_model.safetensors"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "UnCLIPPipeline"}))
    return folder


def diffusers_manifest(directory: Path, source_lines: list[str], prior_clamp: float = 10.0) -> Path:
    """A manifest whose karlo-prior, karlo-decoder, karlo-sr and karlo-clip-stats read one
    diffusers source (`source_lines`, e.g. ['path = "karlo"']) with the tiny settings."""
    import dataclasses

    from glidecli.files.manifest import toml_value
    from helpers.tiny_unclip import TINY_CONFIGS

    lines = ["version = 1", ""]
    for name, kind in (("karlo-prior", "unclip-prior"), ("karlo-decoder", "unclip-decoder"), ("karlo-sr", "unclip-sr"), ("karlo-clip-stats", "clip-stats")):
        lines += [f"[models.{name}]", f'kind = "{kind}"', *source_lines, 'format = "diffusers"', ""]
        if kind in TINY_CONFIGS:
            arch = dataclasses.asdict(TINY_CONFIGS[kind])
            if kind == "unclip-prior":
                arch["clamp_x0"] = prior_clamp
            lines += [f"[models.{name}.arch]", *(f"{k} = {toml_value(v)}" for k, v in arch.items()), ""]
    path = directory / "weights.toml"
    path.write_text("\n".join(lines))
    return path
