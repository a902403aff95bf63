"""Karlo in diffusers' layout (as `kakaobrain/karlo-v1-alpha` is published on the Hugging Face
hub) read into glidecli's networks.

diffusers splits Karlo's three networks into pipeline components, each a folder with a
`config.json` and `diffusion_pytorch_model.safetensors` (or `.bin`): `prior/` (its state also
holds the CLIP image-embedding `clip_mean`/`clip_std`), `decoder/` with the decoder's CLIP
projections apart in `text_proj/`, and `super_res_first/` + `super_res_last/`. Its attention
layers hold separate q, k and v projections where Karlo packs them per head, and Linear weights
where Karlo has 1x1 Conv1d ones. `key_map` generates, from a network's settings, where each of
glidecli's tensors comes from; `read_component` and `convert_components` do the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..nets.config import UNetConfig
from ..nets.kinds import ModelKind
from ..nets.unclip_config import ArchConfig, PriorConfig, settings_for
from .convert import unpickling_reason
from .weights_error import WeightsError, first_line

if TYPE_CHECKING:  # torch is imported where tensors are read: `glide weights list` runs without it
    import torch

# The pipeline components each manifest kind is made from, with the class diffusers names in
# each component's config.json.
COMPONENTS: dict[str, tuple[str, ...]] = {
    ModelKind.UNCLIP_PRIOR: ("prior",),
    ModelKind.UNCLIP_DECODER: ("decoder", "text_proj"),
    ModelKind.UNCLIP_SR: ("super_res_first", "super_res_last"),
    ModelKind.CLIP_STATS: ("prior",),
}
COMPONENT_CLASSES = {
    "prior": "PriorTransformer",
    "decoder": "UNet2DConditionModel",
    "text_proj": "UnCLIPTextProjModel",
    "super_res_first": "UNet2DModel",
    "super_res_last": "UNet2DModel",
}
CONFIG_FILE = "config.json"
# diffusers' file names (diffusers.utils.constants), the safetensors one preferred.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass(frozen=True)
class Take:
    """One glidecli tensor: `sources` ("component/key") joined as Karlo packs attention (rows
    interleaved per head of `head_width` rows: q, k, v of head 0, then of head 1, ...), and
    given a trailing 1 where Karlo's layer is a 1x1 Conv1d (`conv1d`)."""

    sources: tuple[str, ...]
    head_width: int = 0
    conv1d: bool = False

    def build(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        import torch

        if len(tensors) == 1:
            tensor = tensors[0]
        else:
            heads = tensors[0].shape[0] // self.head_width
            split = [t.reshape(heads, self.head_width, *t.shape[1:]) for t in tensors]
            tensor = torch.stack(split, dim=1).reshape(-1, *tensors[0].shape[1:])
        return tensor[..., None] if self.conv1d and tensor.dim() == 2 else tensor


def _same(component: str, pairs: Mapping[str, str], prefix: str = "") -> dict[str, Take]:
    """Renamed weight and bias pairs: glidecli name -> diffusers name."""
    return {
        f"{prefix}{ours}.{part}": Take((f"{component}/{theirs}.{part}",))
        for ours, theirs in pairs.items()
        for part in ("weight", "bias")
    }


def _resblock(component: str, ours: str, theirs: str) -> dict[str, Take]:
    return _same(
        component,
        {
            f"{ours}.in_layers.0": f"{theirs}.norm1",
            f"{ours}.in_layers.2": f"{theirs}.conv1",
            f"{ours}.emb_layers.1": f"{theirs}.time_emb_proj",
            f"{ours}.out_layers.0": f"{theirs}.norm2",
            f"{ours}.out_layers.3": f"{theirs}.conv2",
            f"{ours}.skip_connection": f"{theirs}.conv_shortcut",  # only where the width changes
        },
    )


def _attention(component: str, ours: str, theirs: str, head_width: int) -> dict[str, Take]:
    taken = _same(component, {f"{ours}.norm": f"{theirs}.group_norm"})
    for part in ("weight", "bias"):
        conv = part == "weight"
        taken[f"{ours}.qkv.{part}"] = Take(
            tuple(f"{component}/{theirs}.to_{x}.{part}" for x in "qkv"), head_width=head_width, conv1d=conv
        )
        taken[f"{ours}.encoder_kv.{part}"] = Take(
            tuple(f"{component}/{theirs}.add_{x}_proj.{part}" for x in "kv"), head_width=head_width, conv1d=conv
        )
        taken[f"{ours}.proj_out.{part}"] = Take((f"{component}/{theirs}.to_out.0.{part}",), conv1d=conv)
    return taken


def _unet_map(cfg: UNetConfig, component: str, prefix: str = "") -> dict[str, Take]:
    """ADM's input/middle/output blocks -> diffusers' down/mid/up blocks, level by level."""
    if not cfg.resblock_updown:
        raise WeightsError("only U-Nets that resample with residual blocks (resblock_updown) have a diffusers key map")
    ch = cfg.model_channels
    attention_factors = {cfg.image_size // r for r in cfg.attention_resolutions}

    def head_width(channels: int) -> int:
        return cfg.num_head_channels if cfg.num_head_channels > 0 else channels // cfg.num_heads

    taken = _same(component, {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2"})
    taken |= _same(component, {"input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"})
    index, factor, levels = 1, 1, len(cfg.channel_mult)
    for level, mult in enumerate(cfg.channel_mult):
        for j in range(cfg.num_res_blocks):
            taken |= _resblock(component, f"input_blocks.{index}.0", f"down_blocks.{level}.resnets.{j}")
            if factor in attention_factors:
                taken |= _attention(component, f"input_blocks.{index}.1", f"down_blocks.{level}.attentions.{j}", head_width(mult * ch))
            index += 1
        if level != levels - 1:
            taken |= _resblock(component, f"input_blocks.{index}.0", f"down_blocks.{level}.downsamplers.0")
            index, factor = index + 1, factor * 2
    width = cfg.channel_mult[-1] * ch
    taken |= _resblock(component, "middle_block.0", "mid_block.resnets.0")
    if cfg.middle_attention:
        taken |= _attention(component, "middle_block.1", "mid_block.attentions.0", head_width(width))
    taken |= _resblock(component, f"middle_block.{2 if cfg.middle_attention else 1}", "mid_block.resnets.1")
    index = 0
    for up, (level, mult) in enumerate(reversed(list(enumerate(cfg.channel_mult)))):
        attention = factor in attention_factors
        for j in range(cfg.num_res_blocks + 1):
            taken |= _resblock(component, f"output_blocks.{index}.0", f"up_blocks.{up}.resnets.{j}")
            if attention:
                taken |= _attention(component, f"output_blocks.{index}.1", f"up_blocks.{up}.attentions.{j}", head_width(mult * ch))
            if level and j == cfg.num_res_blocks:
                taken |= _resblock(component, f"output_blocks.{index}.{2 if attention else 1}", f"up_blocks.{up}.upsamplers.0")
            index += 1
        factor //= 2 if level else 1
    return {prefix + name: take for name, take in taken.items()}


def _decoder_map(cfg: UNetConfig) -> dict[str, Take]:
    taken = _unet_map(cfg, "decoder")
    taken |= _same(
        "text_proj",
        {
            "clip_emb": "clip_image_embeddings_project_to_time_embeddings",
            "text_seq_proj.0": "encoder_hidden_states_proj",
            "text_seq_proj.1": "text_encoder_hidden_states_norm",
            "text_feat_proj": "embedding_proj",
            "clip_tok_proj": "clip_extra_context_tokens_proj",
        },
    )
    taken["cf_param"] = Take(("text_proj/learned_classifier_free_guidance_embeddings",))
    return taken


def _prior_map(cfg: PriorConfig) -> dict[str, Take]:
    pairs = {
        "time_embed.0": "time_embedding.linear_1",
        "time_embed.2": "time_embedding.linear_2",
        "clip_img_proj": "proj_in",
        "text_emb_proj": "embedding_proj",
        "text_enc_proj": "encoder_hidden_states_proj",
        "final_ln": "norm_out",
        "out_proj": "proj_to_clip_embeddings",
    }
    head_width = cfg.xf_width // cfg.xf_heads
    taken = {"positional_embedding": Take(("prior/positional_embedding",)), "prd_emb": Take(("prior/prd_embedding",))}
    for i in range(cfg.xf_layers):
        ours, theirs = f"transformer.resblocks.{i}", f"transformer_blocks.{i}"
        pairs |= {
            f"{ours}.attn.c_proj": f"{theirs}.attn1.to_out.0",
            f"{ours}.ln_1": f"{theirs}.norm1",
            f"{ours}.mlp.c_fc": f"{theirs}.ff.net.0.proj",
            f"{ours}.mlp.c_proj": f"{theirs}.ff.net.2",
            f"{ours}.ln_2": f"{theirs}.norm3",
        }
        for part in ("weight", "bias"):
            taken[f"{ours}.attn.c_qkv.{part}"] = Take(
                tuple(f"prior/{theirs}.attn1.to_{x}.{part}" for x in "qkv"), head_width=head_width
            )
    return taken | _same("prior", pairs)


def key_map(kind: str, arch: ArchConfig | None) -> dict[str, Take]:
    """Where each tensor of glidecli's network of `kind` comes from in diffusers' components
    (every name the network could have; `convert_components` keeps those it has)."""
    if kind == ModelKind.UNCLIP_PRIOR:
        return _prior_map(settings_for(kind, arch, PriorConfig))
    if kind == ModelKind.UNCLIP_DECODER:
        return _decoder_map(settings_for(kind, arch, UNetConfig))
    if kind == ModelKind.UNCLIP_SR:
        unet = settings_for(kind, arch, UNetConfig)
        return _unet_map(unet, "super_res_first", "model_first_steps.") | _unet_map(unet, "super_res_last", "model_last_step.")
    if kind == ModelKind.CLIP_STATS:
        return {"0": Take(("prior/clip_mean",)), "1": Take(("prior/clip_std",))}
    raise WeightsError(f"a {kind} model has no diffusers layout")


def convert_components(
    kind: str, arch: ArchConfig | None, expected: Mapping[str, tuple[int, ...]], components: Mapping[str, Mapping[str, torch.Tensor]], where: str
) -> dict[str, torch.Tensor]:
    """glidecli's tensors for a network whose state has the names and shapes `expected`,
    assembled from diffusers' `components` (name -> state); every diffusers tensor must be used."""
    from ..nets.checkpoint import some_of  # torch: not at import, `glide weights list` runs without it

    mapping = key_map(kind, arch)
    available = {f"{name}/{key}": tensor for name, state in components.items() for key, tensor in state.items()}
    # The prior's component also holds the CLIP stats, which the clip-stats entry reads.
    unused = set(available) - {"prior/clip_mean", "prior/clip_std"}
    missing = []
    state: dict[str, torch.Tensor] = {}
    for name in expected:
        take = mapping.get(name)
        if take is None or any(source not in available for source in take.sources):
            missing.append(take.sources[0] if take else name)
            continue
        unused.difference_update(take.sources)
        state[name] = take.build([available[source] for source in take.sources])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors ({some_of(sorted(missing))})")
    if unused and kind != ModelKind.CLIP_STATS:
        problems.append(f"{len(unused)} tensors this network does not have ({some_of(sorted(unused))})")
    if not problems:
        misshaped = [n for n, t in state.items() if tuple(t.shape) != tuple(expected[n])]
        if misshaped:
            first = misshaped[0]
            problems.append(
                f"{len(misshaped)} tensors of the wrong shape (e.g. {mapping[first].sources[0]} gives"
                f" {list(state[first].shape)} for {first}, the manifest's arch needs {list(expected[first])})"
            )
    if problems:
        raise WeightsError(f"{where} does not fit the manifest's {kind} network: " + "; ".join(problems))
    return state


def read_component(folder: str, name: str, fetch: Callable[[str], Path | None]) -> dict[str, torch.Tensor]:
    """The tensors of component `name` of `folder` (a path or a hub address, for messages):
    `fetch(relative path)` gives the local file or None.
    The component's config must name the class diffusers writes for it; `.bin` files are
    read with weights_only=True (tensors only, no code runs)."""
    where = f"{folder}/{name}"
    config_path = fetch(f"{name}/{CONFIG_FILE}")
    if config_path is None:
        raise WeightsError(f"{where}: missing; a diffusers unCLIP folder has {', '.join(COMPONENT_CLASSES)}")
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{where}/{CONFIG_FILE}: not a readable JSON config ({first_line(exc)})") from None
    expected_class = COMPONENT_CLASSES[name]
    found_class = config.get("_class_name") if isinstance(config, dict) else None
    if found_class != expected_class:
        raise WeightsError(
            f"{where}: its config names class {found_class!r}, not {expected_class!r}: not a diffusers unCLIP (Karlo) folder"
        )
    for file_name in WEIGHT_FILES:
        path = fetch(f"{name}/{file_name}")
        if path is not None:
            return _read_weights(Path(path), f"{where}/{file_name}")
    raise WeightsError(f"{where}: holds no {' or '.join(WEIGHT_FILES)}")


def _read_weights(path: Path, where: str) -> dict[str, torch.Tensor]:
    import pickle

    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"{where}: not a readable safetensors file ({first_line(exc)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{where}: refused to load: the pickle holds more than tensors ({unpickling_reason(exc)}); nothing in it ran"
        ) from None
    except Exception as exc:  # a damaged file fails inside the unpickler in many ways
        raise WeightsError(f"{where}: not a readable PyTorch file ({first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"{where}: expected a flat state dict of tensors")
    return state
