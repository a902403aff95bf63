"""unCLIP's networks (Karlo v1.0 alpha) by manifest kind, laid out as the release's checkpoints.

- "unclip-prior": `PriorTransformer` (prior.py); the checkpoint's keys carry a `model.` prefix.
- "unclip-decoder": glidecli's `Text2ImUNet` with CLIP conditioning (`UNetConfig.clip_dim`);
  keys also under `model.`.
- "unclip-sr": two super-resolution `Text2ImUNet`s of the same shape, `model_first_steps`
  (every step but the last) and `model_last_step` (fine-tuned for the last step).
- "openclip": open_clip's CLIP ViT (clip_vit.py), keys as open_clip names them.
"""

from __future__ import annotations

import torch
from torch import nn

from .clip_vit import build_clip_vit
from .config import UNetConfig
from .kinds import ModelKind
from .prior import PriorTransformer
from .unclip_config import OpenClipConfig, PriorConfig
from .unet import Text2ImUNet

# Key prefixes of the release's checkpoints, stripped when loading.
KEY_PREFIX = {ModelKind.UNCLIP_PRIOR: "model.", ModelKind.UNCLIP_DECODER: "model."}
UnclipConfig = PriorConfig | UNetConfig | OpenClipConfig


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


def build_unclip_network(kind: str, arch: UnclipConfig) -> nn.Module:
    """The unCLIP network of `kind`, on the current default device, weights uninitialized."""
    expected = {
        ModelKind.UNCLIP_PRIOR: PriorConfig,
        ModelKind.UNCLIP_DECODER: UNetConfig,
        ModelKind.UNCLIP_SR: UNetConfig,
        ModelKind.OPENCLIP: OpenClipConfig,
    }
    if kind not in expected:
        raise ValueError(f"'{kind}' is not an unCLIP network kind")
    if not isinstance(arch, expected[kind]):
        raise TypeError(f"kind '{kind}' needs a {expected[kind].__name__}")
    if kind == ModelKind.UNCLIP_PRIOR:
        return PriorTransformer(arch)
    if kind == ModelKind.UNCLIP_DECODER:
        if not arch.clip_dim:
            raise ValueError("an unCLIP decoder needs clip_dim > 0")
        return Text2ImUNet(arch)
    if kind == ModelKind.UNCLIP_SR:
        if not arch.super_res:
            raise ValueError("unCLIP's super-resolution U-Nets need super_res = true")
        return ImprovedSuperRes(arch)
    return build_clip_vit(arch)


def materialize_buffers(kind: str, model: nn.Module, device: torch.device | str) -> None:
    """Rebuild the buffers a checkpoint does not hold (left on the meta device when the network
    was built there): the prior's placeholder stats and CLIP's causal text mask."""
    if kind == ModelKind.UNCLIP_PRIOR:
        dim = model.config.clip_dim
        model.clip_mean = torch.zeros(dim, device=device)
        model.clip_std = torch.ones(dim, device=device)
    elif kind == ModelKind.OPENCLIP:
        ctx = model.config.text_ctx
        model.attn_mask = torch.full((ctx, ctx), float("-inf"), device=device).triu_(1)


def strip_prefix(kind: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's keys without the kind's prefix (files already without it pass as they are)."""
    prefix = KEY_PREFIX.get(kind)
    if prefix and state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state

