"""Captions for a picture by CLIP: rank a list of candidate captions by the cosine between
the picture's CLIP image embedding and each caption's text embedding (the unCLIP set's CLIP,
an `openclip` manifest entry). What the candidates are is the caller's choice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..files.images import open_rgb
from ..nets.clip_vit import clip_text, image_embedding, preprocess_image
from ..nets.kinds import ModelKind
from .session import Session

CAPTION_BATCH = 64  # captions embedded at once


def rank_captions(session: Session, clip_model: str, picture: Path, captions: Sequence[str]) -> list[tuple[str, float]]:
    """(caption, cosine) of every caption, best first."""
    clip = session.network(clip_model, ModelKind.OPENCLIP)
    device = session.device
    with torch.no_grad():
        pixels = preprocess_image(open_rgb(picture), clip.config)[None].to(device)
        image_z = F.normalize(image_embedding(clip, pixels), dim=-1)
        scores: list[float] = []
        for start in range(0, len(captions), CAPTION_BATCH):
            part = list(captions[start : start + CAPTION_BATCH])
            batch = session.clip_tokenizer(clip.config.text_ctx).batch(part)
            mask = torch.arange(batch.tokens.shape[1])[None] < batch.lengths[:, None]
            text = clip_text(clip, batch.tokens.to(device), mask.to(device))
            scores += (F.normalize(text.pooled, dim=-1) @ image_z[0]).tolist()
    return sorted(zip(captions, scores), key=lambda pair: -pair[1])
