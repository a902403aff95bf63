"""unCLIP's networks (Karlo v1.0 alpha) by manifest kind, laid out as the release's checkpoints.

- "unclip-prior": `PriorTransformer` (prior.py); the checkpoint's keys carry a `model.` prefix.
- "unclip-decoder": glidecli's `Text2ImUNet` with CLIP conditioning (`UNetConfig.clip_dim`);
  keys also under `model.`.
- "unclip-sr": two super-resolution `Text2ImUNet`s of the same shape, `model_first_steps`
  (every step but the last) and `model_last_step` (fine-tuned for the last step).
- "openclip": open_clip's CLIP ViT (clip_vit.py), keys as open_clip names them.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .clip_vit import build_clip_vit, open_clip_parts
from .config import UNetConfig
from .kinds import ModelKind
from .prior import PriorTransformer
from .unclip_config import ArchConfig, OpenClipConfig, PriorConfig, settings_for
from .unet import Text2ImUNet

# Key prefixes of the release's checkpoints, stripped when loading.
KEY_PREFIX: dict[str, str] = {ModelKind.UNCLIP_PRIOR: "model.", ModelKind.UNCLIP_DECODER: "model."}


class ImprovedSuperRes(nn.Module):
    """Karlo's improved 64->256 super-resolution: a DDPM-trained U-Net for the first steps and
    a copy fine-tuned (adversarial and perceptual losses) that takes only the last step."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        self.model_first_steps = Text2ImUNet(cfg)
        self.model_last_step = Text2ImUNet(cfg)

    def network_for(self, index: int) -> Text2ImUNet:
        """The U-Net for respaced step `index` (0 is the last step taken)."""
        return self.model_last_step if index == 0 else self.model_first_steps

    def use_channels_last(self) -> ImprovedSuperRes:
        self.model_first_steps.use_channels_last()
        self.model_last_step.use_channels_last()
        return self


def build_unclip_network(kind: str, arch: ArchConfig | None) -> nn.Module:
    """The unCLIP network of `kind`, on the current default device, weights uninitialized;
    a TypeError when `arch` is not the kind's settings."""
    if kind == ModelKind.UNCLIP_PRIOR:
        return PriorTransformer(settings_for(kind, arch, PriorConfig))
    if kind == ModelKind.OPENCLIP:
        return build_clip_vit(settings_for(kind, arch, OpenClipConfig))
    if kind not in (ModelKind.UNCLIP_DECODER, ModelKind.UNCLIP_SR):
        raise ValueError(f"'{kind}' is not an unCLIP network kind")
    unet = settings_for(kind, arch, UNetConfig)
    if kind == ModelKind.UNCLIP_DECODER:
        if not unet.clip_dim:
            raise ValueError("an unCLIP decoder needs clip_dim > 0")
        return Text2ImUNet(unet)
    if not unet.super_res:
        raise ValueError("unCLIP's super-resolution U-Nets need super_res = true")
    return ImprovedSuperRes(unet)


def materialize_buffers(kind: str, model: nn.Module, device: torch.device | str) -> None:
    """Rebuild the buffers a checkpoint does not hold (left on the meta device when the network
    was built there): the prior's placeholder stats and CLIP's causal text mask."""
    if kind == ModelKind.UNCLIP_PRIOR:
        prior = cast(PriorTransformer, model)  # what build_unclip_network builds for the kind
        dim = prior.config.clip_dim
        prior.clip_mean = torch.zeros(dim, device=device)
        prior.clip_std = torch.ones(dim, device=device)
    elif kind == ModelKind.OPENCLIP:
        clip = open_clip_parts(model)
        ctx = clip.config.text_ctx
        clip.attn_mask = torch.full((ctx, ctx), float("-inf"), device=device).triu_(1)


def strip_prefix(kind: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's keys without the kind's prefix (files already without it pass as they are)."""
    prefix = KEY_PREFIX.get(kind)
    if prefix and state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state

