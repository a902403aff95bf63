"""Tiny random-weight configurations of GLIDE's networks, shared by the tests."""

from __future__ import annotations

import dataclasses

from glidecli.nets.checkpoint import build_network, random_init_
from glidecli.nets.config import ClipConfig, UNetConfig

TINY_UNET = UNetConfig(
    image_size=16,
    model_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 2),
    attention_resolutions=(8,),
    num_head_channels=16,
    dropout=0.0,
    text_ctx=8,
    xf_width=32,
    xf_layers=2,
    xf_heads=2,
    n_vocab=64,
)

TINY_CLIP = ClipConfig(
    image_size=16,
    patch_size=4,
    image_heads=2,
    image_head_channels=16,
    image_layers=2,
    n_vocab=64,
    text_ctx=12,
    text_heads=2,
    text_head_channels=16,
    text_layers=2,
    embed_dim=24,
)


def tiny_unet_config(kind: str = "base", **changes) -> UNetConfig:
    upsample = kind.startswith("upsample")
    return dataclasses.replace(
        TINY_UNET,
        image_size=32 if upsample else 16,
        channel_mult=(1, 1, 2) if upsample else (1, 2),
        noise_schedule="linear" if upsample else "squaredcos_cap_v2",
        super_res=upsample,
        inpaint=kind.endswith("inpaint"),
        **changes,
    )


def tiny_network(kind: str, seed: int = 0, **changes):
    """A tiny random-weight network; `changes` override fields of its config."""
    if kind.startswith("clip"):
        arch = dataclasses.replace(TINY_CLIP, **changes)
    else:
        arch = tiny_unet_config(kind, **changes)
    return random_init_(build_network(kind, arch), seed=seed).eval()


# A tiny open_clip CLIP (random weights), for the --best-of judges: open_clip's own code
# loads it by name once registered, from a checkpoint file, as it would a real model.
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_open_clip(folder, name: str, seed: int = 0):
    """Register a tiny random open_clip model as `name` and save its weights in `folder`;
    returns (the --rank-model spec NAME:FILE, the model, its preprocessing of PIL pictures)."""
    import json

    import open_clip
    import torch

    config = folder / f"{name}.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    torch.save(model.state_dict(), folder / f"{name}.pt")
    return f"{name}:{folder / f'{name}.pt'}", model.eval(), preprocess
