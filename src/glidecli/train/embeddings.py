"""A frozen CLIP's view of a data set, for training unCLIP's prior and decoder: every
picture's image embedding and every caption's text features (pooled, per token, mask), plus
the empty caption's (what a dropped caption becomes).

They are computed once per data set and CLIP and cached in `cache_dir()/embeddings/`, with
the CLIP's sha256 and the data set's fingerprint in the file's metadata: a cache made with
another CLIP of the same name is refused in one line rather than silently mixed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..files.convert import save_whole
from ..files.fetch import cache_dir, fetch_entry, recorded_sha256
from ..files.file_facts import safetensors_metadata, sha256_file
from ..files.manifest import Manifest, ManifestError, ModelEntry
from ..nets.checkpoint import load_network
from ..nets.clip_vit import clip_text, image_embedding, preprocess_image
from ..nets.kinds import ModelKind
from ..nets.prior import ClipText
from ..nets.tokenizer import ClipTokenizer
from ..nets.unclip_config import OpenClipConfig
from .dataset import Dataset
from .start import TrainingError

BATCH = 64  # pictures per CLIP call while computing


@dataclass
class ClipData:
    images: Tensor  # [N, D] image embeddings
    text: ClipText  # [N, ...] the captions' features
    empty: ClipText  # [1, ...] the empty caption's
    clip_sha256: str

    def text_rows(self, indices: list[int], dropped: Tensor) -> ClipText:
        """The captions of `indices`, the empty caption's features where `dropped`."""
        rows = ClipText(*(t[indices] for t in self.text))
        keep = ~dropped
        return ClipText(
            torch.where(keep[:, None], rows.pooled, self.empty.pooled),
            torch.where(keep[:, None, None], rows.tokens, self.empty.tokens),
            torch.where(keep[:, None], rows.mask, self.empty.mask),
        )


def clip_entry(manifest: Manifest, name: str) -> ModelEntry:
    try:
        entry = manifest.model(name)
    except ManifestError as error:
        raise TrainingError(str(error)) from None
    cfg = clip_config(entry, name)
    if cfg.text_width != cfg.embed_dim:
        raise TrainingError(
            f"CLIP {name} has text features of width {cfg.text_width} and embeddings of width {cfg.embed_dim}; unCLIP's"
            " prior and decoder read both as one width (clip_dim)"
        )
    return entry


def clip_config(entry: ModelEntry, name: str) -> OpenClipConfig:
    """The architecture of CLIP `entry` (`--clip NAME`), refused when it is no CLIP."""
    if entry.kind != ModelKind.OPENCLIP or not isinstance(entry.arch, OpenClipConfig):
        raise TrainingError(f"--clip {name}: that model is a {entry.kind}, not a CLIP (openclip); train one with --kind clip")
    return entry.arch


def clip_data(dataset: Dataset, entry: ModelEntry, device: torch.device, offline: bool | None) -> ClipData:
    """The data set through CLIP `entry`, from the cache or computed (then cached)."""
    cfg = clip_config(entry, entry.name)
    tokenizer = ClipTokenizer(cfg.text_ctx)
    captions = [example.caption for example in dataset.examples]
    encoded = tokenizer.batch(captions)
    if any(encoded.truncated):
        long = next(c for c, cut in zip(captions, encoded.truncated) if cut)
        raise TrainingError(
            f"{sum(encoded.truncated)} captions are longer than CLIP {entry.name}'s {cfg.text_ctx - 2} tokens"
            f" (e.g. {long[:60]!r}); shorten them or train a CLIP with a longer text_ctx"
        )
    weights = fetch_entry(entry, offline=offline, progress=False)
    digest = entry.sha256 or recorded_sha256(weights) or sha256_file(weights)
    fingerprint = dataset.fingerprint()
    path = cache_dir() / "embeddings" / f"{fingerprint[:16]}-{entry.name}.safetensors"
    recorded = safetensors_metadata(path) if path.is_file() else None
    if recorded is not None:
        if recorded.get("clip_sha256") != digest or recorded.get("data") != fingerprint:
            raise TrainingError(
                f"{path} holds this data set's embeddings by another CLIP named {entry.name} (sha256"
                f" {str(recorded.get('clip_sha256'))[:12]}..., this one {digest[:12]}...); delete it to compute them again"
            )
        return _loaded(path, digest)
    model = load_network(ModelKind.OPENCLIP, cfg, weights, device)
    images, pooled, tokens = [], [], []
    mask = torch.arange(cfg.text_ctx)[None] < encoded.lengths[:, None]
    with torch.no_grad():
        for start in range(0, len(dataset), BATCH):
            rows = range(start, min(start + BATCH, len(dataset)))
            pixels = torch.stack([preprocess_image(dataset.image(i), cfg) for i in rows]).to(device)
            images.append(image_embedding(model, pixels).cpu())
            text = clip_text(model, encoded.tokens[start : rows.stop].to(device), mask[start : rows.stop].to(device))
            pooled.append(text.pooled.cpu())
            tokens.append(text.tokens.cpu())
        empty = tokenizer.batch([""])
        empty_text = clip_text(model, empty.tokens.to(device), (torch.arange(cfg.text_ctx)[None] < empty.lengths[:, None]).to(device))
    tensors = {
        "images": torch.cat(images), "pooled": torch.cat(pooled), "tokens": torch.cat(tokens), "mask": mask,
        "empty_pooled": empty_text.pooled.cpu(), "empty_tokens": empty_text.tokens.cpu(), "empty_mask": empty_text.mask.cpu(),
    }
    save_whole({k: v.contiguous() for k, v in tensors.items()}, path, {"clip_sha256": digest, "data": fingerprint, "clip": entry.name})
    return _loaded(path, digest)


def _loaded(path: Path, digest: str) -> ClipData:
    from safetensors.torch import load_file

    t = load_file(str(path))
    return ClipData(
        images=t["images"], text=ClipText(t["pooled"], t["tokens"], t["mask"].bool()),
        empty=ClipText(t["empty_pooled"], t["empty_tokens"], t["empty_mask"].bool()), clip_sha256=digest,
    )
