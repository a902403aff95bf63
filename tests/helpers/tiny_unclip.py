"""Tiny random-weight configurations of unCLIP's networks (prior, decoder, super-resolution,
CLIP ViT), shared by the tests and by the script that made tests/nets/data/unclip_vectors.pt.

The decoder's and prior's CLIP width equals the tiny CLIP's embedding and text width, as
ViT-L/14's 768 is both."""

from __future__ import annotations

import torch

from glidecli.nets.checkpoint import build_network, random_init_
from glidecli.nets.unclip_config import OpenClipConfig, PriorConfig, karlo_decoder_config, karlo_sr_config

CLIP_DIM = 32
TEXT_CTX = 77  # CLIP's context: the tokenizer pads to it

TINY_PRIOR = PriorConfig(text_ctx=TEXT_CTX, xf_width=64, xf_layers=2, xf_heads=4, clip_dim=CLIP_DIM)
TINY_DECODER = karlo_decoder_config(
    image_size=16,
    model_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 2),
    attention_resolutions=(16, 8),
    num_head_channels=16,
    dropout=0.0,
    xf_width=48,
    clip_dim=CLIP_DIM,
)
TINY_SR = karlo_sr_config(image_size=32, model_channels=32, num_res_blocks=1, channel_mult=(1, 2))
TINY_CLIP_VIT = OpenClipConfig(
    embed_dim=CLIP_DIM,
    image_size=32,
    patch_size=8,
    vision_width=64,
    vision_layers=2,
    vision_head_width=64,
    text_width=CLIP_DIM,
    text_heads=2,
    text_layers=2,
)
TINY_CONFIGS = {
    "unclip-prior": TINY_PRIOR,
    "unclip-decoder": TINY_DECODER,
    "unclip-sr": TINY_SR,
    "openclip": TINY_CLIP_VIT,
}
# Weight scale: large enough that every layer visibly changes its input.
STD = 0.1


def tiny_unclip_network(kind: str, seed: int = 0, std: float = STD) -> torch.nn.Module:
    network = random_init_(build_network(kind, TINY_CONFIGS[kind]), seed=seed, std=std).eval()
    if kind == "unclip-prior":
        generator = torch.Generator().manual_seed(seed + 1)
        network.set_stats(torch.randn(CLIP_DIM, generator=generator) * 0.1, torch.rand(CLIP_DIM, generator=generator) + 0.5)
    return network


def write_tiny_unclip_manifest(directory, seed: int = 0):
    """A manifest of tiny random unCLIP networks saved as safetensors in `directory`, under
    the packaged names (karlo-prior, karlo-decoder, karlo-sr, clip-vit-l-14, karlo-clip-stats)."""
    import dataclasses
    from pathlib import Path

    from safetensors.torch import save_file

    from glidecli.files.manifest import toml_value
    from glidecli.nets.checkpoint import save_network

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = {"unclip-prior": "karlo-prior", "unclip-decoder": "karlo-decoder", "unclip-sr": "karlo-sr", "openclip": "clip-vit-l-14"}
    lines = ["version = 1", ""]
    for offset, (kind, name) in enumerate(names.items()):
        network = tiny_unclip_network(kind, seed=seed + offset)
        save_network(network, directory / f"{name}.safetensors")
        lines += [f"[models.{name}]", f'kind = "{kind}"', f'path = "{name}.safetensors"', "", f"[models.{name}.arch]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in dataclasses.asdict(TINY_CONFIGS[kind]).items()]
        lines.append("")
        if kind == "unclip-prior":
            save_file({"0": network.clip_mean.contiguous(), "1": network.clip_std.contiguous()}, str(directory / "stats.safetensors"))
    lines += ["[models.karlo-clip-stats]", 'kind = "clip-stats"', 'path = "stats.safetensors"', ""]
    path = directory / "weights.toml"
    path.write_text("\n".join(lines))
    return path
