"""The kinds of model a manifest entry can hold, each named once. A kind says which network
reads the entry's weights (nets/checkpoint.py), which settings its `arch` table takes
(files/manifest.py) and which stage of a command may use it."""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    """A manifest model's kind; its value is the word weights.toml spells."""

    # GLIDE's four text-conditional U-Nets and the two halves of its noised CLIP.
    BASE = "base"
    UPSAMPLE = "upsample"
    BASE_INPAINT = "base-inpaint"
    UPSAMPLE_INPAINT = "upsample-inpaint"
    CLIP_IMAGE = "clip-image"
    CLIP_TEXT = "clip-text"
    # unCLIP (Karlo): the prior, the decoder, the super-resolution pair, the CLIP ViT that
    # conditions them (built by open_clip) and the prior's embedding statistics (no network).
    UNCLIP_PRIOR = "unclip-prior"
    UNCLIP_DECODER = "unclip-decoder"
    UNCLIP_SR = "unclip-sr"
    OPENCLIP = "openclip"
    CLIP_STATS = "clip-stats"
    # A LoRA adapter (PEFT's format) for one of the networks above: no network of its own.
    LORA = "lora"

    @property
    def upsampler(self) -> ModelKind:
        """The upsampler that follows a GLIDE base model of this kind."""
        return UPSAMPLER_OF[self]


UNET_KINDS = (ModelKind.BASE, ModelKind.UPSAMPLE, ModelKind.BASE_INPAINT, ModelKind.UPSAMPLE_INPAINT)
CLIP_KINDS = (ModelKind.CLIP_IMAGE, ModelKind.CLIP_TEXT)
UNCLIP_KINDS = (ModelKind.UNCLIP_PRIOR, ModelKind.UNCLIP_DECODER, ModelKind.UNCLIP_SR, ModelKind.OPENCLIP, ModelKind.CLIP_STATS)
MODEL_KINDS = tuple(ModelKind)
UPSAMPLER_OF = {ModelKind.BASE: ModelKind.UPSAMPLE, ModelKind.BASE_INPAINT: ModelKind.UPSAMPLE_INPAINT}
# The stages that read prompts joined with AND (render/composition.py); the upsamplers, which
# run without guidance and mostly sharpen, read the components drawn.
COMPOSING_KINDS = (ModelKind.BASE, ModelKind.BASE_INPAINT)
# The networks a LoRA adapter can adapt (nets/lora.py): those that sample a diffusion.
ADAPTABLE_KINDS = (*UNET_KINDS, ModelKind.UNCLIP_PRIOR, ModelKind.UNCLIP_DECODER, ModelKind.UNCLIP_SR)
