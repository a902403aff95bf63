"""`glide train --kind unclip-sr --decoder NAME`: unCLIP's super-resolution U-Net (DALL-E 2's
64 -> 256 upsampler, as Karlo v1.0 alpha builds it) for the pictures of decoder NAME.

Karlo's SR (nets/unclip_config.karlo_sr_config) is an ADM super-resolution U-Net without
attention, text or CLIP: it sees only x_t and the decoder's picture, resized bicubic to its
own size (render/unclip.sr_low_res), predicts the noise with a fixed (small) variance on the
cosine schedule, and was trained with the plain DDPM objective (improved DDPM's MSE of eps,
diffusion/losses.fixed_variance_loss). Its input is 4x smaller than its output, the decoder's
picture size, so the recipe takes the decoder from the manifest (--decoder, with --weights)
and makes an SR of 4x its size.

The low-resolution input is a training picture shrunk to the decoder's size and degraded, so
that the network does not expect the pictures the decoder never quite makes: DALL-E 2 (section
2.1, appendix C) "slightly corrupt[s] the conditioning images" of its first upsampler with a
gaussian blur, and Karlo published no training code, so the degradation is ours: a gaussian
blur of sigma drawn uniformly in [0, BLUR_SIGMA] low-resolution pixels and a gaussian noise of
standard deviation drawn uniformly in [0, NOISE_STD] (pixels on the [-1, 1] scale).

Karlo's release holds two U-Nets of one shape, `model_first_steps` (the DDPM-trained network)
and `model_last_step` (a copy fine-tuned with adversarial and perceptual losses for the last
step alone). A run here trains the first; the exported file holds its EMA weights under both
names (no adversarial fine-tuning), so it loads as an `unclip-sr` entry as the release does.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..diffusion.losses import fixed_variance_loss, q_sample
from ..files.manifest import Manifest, ManifestError, ModelEntry, load_manifest
from ..nets.config import UNetConfig
from ..nets.kinds import ModelKind
from ..nets.unclip_config import karlo_sr_config
from ..nets.unet import Text2ImUNet
from ..render.unclip import sr_low_res
from .data import pil_to_tensor, random_crop
from .dataset import default_mode
from .recipe import LossTerms
from .run_manifest import made_entry, used_entry, write_run_manifest
from .start import TrainingError
from .state import arch_dict, enable_gradient_checkpointing, init_fresh_, network_as, network_from_weights
from .unclip_common import USED, UnclipRecipe, checked_config, preset_values
from .vocabulary import PresetName

SR_FACTOR = 4  # Karlo's and DALL-E 2's first upsampler: 64 -> 256
BLUR_SIGMA = 0.8  # largest blur of the low-resolution input, in its pixels
NOISE_STD = 0.03  # largest noise added to it (about 4 of 255 levels)
BLUR_RADIUS = 2  # taps on each side: 2.5 sigma at the largest blur
# The release's two U-Nets, each a full copy (nets/unclip.ImprovedSuperRes).
SR_PARTS = ("model_first_steps", "model_last_step")

# micro's 32 channels normalized in 8 groups (UNetConfig.norm_groups): in ADM's 32 it could not keep colours.
SR_PRESETS: dict[PresetName, dict[str, Any]] = {
    "micro": dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2), norm_groups=8),
    "tiny": dict(model_channels=64, num_res_blocks=2, channel_mult=(1, 2, 2, 4)),
    "small": dict(model_channels=128, num_res_blocks=2, channel_mult=(1, 2, 3, 4), dropout=0.1),
}


def gaussian_blur(picture: Tensor, sigma: float) -> Tensor:
    """[C, H, W] blurred by a normalized gaussian of `sigma` pixels (2 * BLUR_RADIUS + 1 taps,
    reflected at the edges); sigma 0 leaves it as it is."""
    if sigma <= 0:
        return picture
    offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=torch.float32)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    channels = picture.shape[0]
    padded = F.pad(picture[None], (BLUR_RADIUS,) * 4, mode="reflect")
    rows = F.conv2d(padded, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)[0]


def degraded_low_res(picture: Tensor, low: int, sigma: float, noise: Tensor) -> Tensor:
    """The SR's conditioning for a training picture [3, S, S]: shrunk to low x low (bicubic,
    antialiased), blurred by `sigma`, `noise` [3, low, low] added; at the picture's size as
    the network sees a decoder's output (render/unclip.sr_low_res)."""
    size = picture.shape[-1]
    small = F.interpolate(picture[None], size=(low, low), mode="bicubic", align_corners=False, antialias=True)[0]
    return sr_low_res((gaussian_blur(small, sigma) + noise)[None], size)[0]


class SuperResForward(nn.Module):
    """The SR's training call: x_t with the low-resolution picture."""

    def __init__(self, model: Text2ImUNet):
        super().__init__()
        self.model = model

    def forward(self, x_t: Tensor, t: Tensor, low_res: Tensor) -> Tensor:
        return self.model(x_t, t, low_res=low_res)


class SuperResRecipe(UnclipRecipe):
    kind = ModelKind.UNCLIP_SR

    def _decoder(self, trainer: Any) -> tuple[ModelEntry, UNetConfig]:
        """The decoder entry (--decoder) whose pictures the SR enlarges, with its settings."""
        name = trainer.source.decoder
        if not name:
            raise TrainingError(f"--kind {self.kind} needs --decoder NAME: the unCLIP decoder (an unclip-decoder entry of --weights) it enlarges")
        if trainer.manifest is None:
            raise TrainingError(f"--kind {self.kind} needs the manifest holding decoder {name} (--weights)")
        try:
            entry = trainer.manifest.model(name)
        except ManifestError as error:
            raise TrainingError(str(error)) from None
        if entry.kind != ModelKind.UNCLIP_DECODER or not isinstance(entry.arch, UNetConfig):
            raise TrainingError(f"--decoder {name}: that model is a {entry.kind}, not an unCLIP decoder (unclip-decoder)")
        return entry, entry.arch

    def image_size(self, trainer: Any, state, entry) -> int:
        if state is not None:
            return int(state["arch"]["image_size"])
        return SR_FACTOR * self._decoder(trainer)[1].image_size

    def prepare(self, trainer: Any, manifest, entry, state, offline) -> tuple[UNetConfig, nn.Module]:
        if state is not None:
            cfg = UNetConfig.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})
            with torch.device("meta"):
                model: nn.Module = Text2ImUNet(cfg)
            self.used = list(load_manifest(trainer.out / USED).models.values())
        else:
            decoder, decoder_cfg = self._decoder(trainer)
            values = {**preset_values(SR_PRESETS, trainer.source.preset, self.kind), "image_size": SR_FACTOR * decoder_cfg.image_size}
            cfg = checked_config(karlo_sr_config, values, trainer.source.arch_changes, self.kind)
            model = init_fresh_(Text2ImUNet(cfg), trainer.hyper.seed)
            self._keep_used(trainer, unclip_around(trainer.manifest, decoder))
        self.low = cfg.image_size // SR_FACTOR
        self._ready(trainer, cfg)
        return cfg, model

    def network(self, kind: str, cfg, weights: dict[str, Tensor], device: torch.device) -> nn.Module:
        # One U-Net trains (an upsample-kind network: super_res, no text); export() writes it twice.
        return network_from_weights(ModelKind.UPSAMPLE, cfg, weights, device)

    def forward_module(self, model: Text2ImUNet) -> nn.Module:
        return SuperResForward(model)

    def checkpointing(self, model: Text2ImUNet) -> None:
        enable_gradient_checkpointing(model)

    def batch(self, trainer: Any, step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x0 [B, 3, S, S], t [B], noise [B, 3, S, S] and the degraded low-resolution pictures
        at size S, every choice of example k drawn from its own generator in that order."""
        indices, generators = self._draws(trainer, step)
        cfg, hyper = trainer.cfg, trainer.hyper
        size = cfg.image_size
        pictures, lows, ts, noises = [], [], [], []
        for index, g in zip(indices, generators):
            crop = torch.rand(3, generator=g)
            ts.append(torch.randint(0, cfg.diffusion_steps, (), generator=g))
            noises.append(torch.randn(cfg.image_channels, size, size, generator=g))
            sigma, level = (float(v) for v in torch.rand(2, generator=g) * torch.tensor([BLUR_SIGMA, NOISE_STD]))
            pixel_noise = torch.randn(cfg.image_channels, self.low, self.low, generator=g) * level
            picture = pil_to_tensor(random_crop(trainer.dataset.image(index), size, hyper.crop_min, crop))
            pictures.append(picture)
            lows.append(degraded_low_res(picture, self.low, sigma, pixel_noise))
        return torch.stack(pictures), torch.stack(ts), torch.stack(noises), torch.stack(lows)

    def loss(self, trainer: Any, step: int, autocast=contextlib.nullcontext()) -> LossTerms:
        x0, t, noise, low_res = self.batch(trainer, step)
        device = trainer.device
        x0, t, noise = x0.to(device), t.to(device), noise.to(device)
        x_t = q_sample(self.schedule, x0, t, noise)
        with autocast:
            output = trainer.net(x_t, t, low_res.to(device))
        terms = fixed_variance_loss(self.schedule, output, x0, t, noise, min_snr_gamma=trainer.hyper.min_snr, prediction=trainer.cfg.prediction)
        return LossTerms(terms.loss)

    def samples(self, trainer: Any, path: Path, count: int = 4) -> Path:
        """The EMA SR on the first pictures shrunk to the decoder's size (no blur, no noise), as
        `glide unclip` runs it (its default sampler): rows of [low-resolution input | SR | picture]."""
        from ..diffusion.noise import ImageNoise
        from ..nets.unclip import ImprovedSuperRes
        from ..render import defaults
        from ..render.pipeline import SamplerChoice
        from ..render.unclip import super_resolve
        from .state import write_png

        count = min(count, len(trainer.dataset))
        size, device = trainer.cfg.image_size, trainer.device
        pictures = torch.stack([pil_to_tensor(random_crop(trainer.dataset.image(i), size, 1.0, torch.full((3,), 0.5))) for i in range(count)])
        small = F.interpolate(pictures, size=(self.low, self.low), mode="bicubic", align_corners=False, antialias=True)
        weights = sr_weights(trainer.ema.state_dict())
        sr = network_as(ImprovedSuperRes, network_from_weights(self.kind, trainer.cfg, weights, device))
        choice = SamplerChoice(defaults.UNCLIP_SR.sampler, defaults.UNCLIP_SR.steps)
        with torch.no_grad():
            made = super_resolve(sr, small.to(device), ImageNoise(list(range(count))), choice).cpu()
        rows = [torch.cat([sr_low_res(small[i : i + 1], size)[0], made[i], pictures[i]], dim=2) for i in range(count)]
        pixels = ((torch.cat(rows, dim=1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return write_png(path, pixels.permute(1, 2, 0).numpy())

    def export(self, trainer: Any, weights: Path, comment: list[str]) -> Path:
        """The trained U-Net as the release's two (rewritten in place, whole), and the manifest:
        the unCLIP the decoder belongs to and the new SR, so `glide unclip --sr-model NAME` runs all."""
        with safe_open(str(weights), "pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=f".{weights.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(sr_weights(tensors), tmp, metadata=metadata)
            os.chmod(tmp, default_mode())
            os.replace(tmp, weights)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        folder = trainer.out
        blocks = [used_entry(e, folder) for e in self.used]
        blocks.append(made_entry(trainer.source.name, self.kind, weights, arch_dict(trainer.cfg), folder))
        return write_run_manifest(folder / "weights.toml", blocks, comment)


def sr_weights(unet: dict[str, Tensor]) -> dict[str, Tensor]:
    """One SR U-Net's weights in the release's layout: a copy under each of SR_PARTS."""
    return {f"{part}.{key}": value.clone() for part in SR_PARTS for key, value in unet.items()}


def unclip_around(manifest: Manifest, decoder: ModelEntry) -> list[ModelEntry]:
    """The decoder with the unCLIP entries of the manifest that go with it (the CLIPs, priors
    and their stats of its embedding width), for the run's manifest to hold a whole unCLIP."""
    width = getattr(decoder.arch, "clip_dim", None)
    kept: list[ModelEntry] = []
    for entry in manifest.models.values():
        if entry.kind == ModelKind.OPENCLIP:
            fits = getattr(entry.arch, "embed_dim", None) == width
        elif entry.kind == ModelKind.UNCLIP_PRIOR:
            fits = getattr(entry.arch, "clip_dim", None) == width
        elif entry.kind == ModelKind.CLIP_STATS:
            prior = manifest.models.get(entry.name.removesuffix("-stats"))
            fits = prior is not None and prior.kind == ModelKind.UNCLIP_PRIOR and getattr(prior.arch, "clip_dim", None) == width
        else:
            fits = entry.name == decoder.name
        if fits:
            kept.append(entry)
    return kept
