"""Reading images and masks into GLIDE's tensors (writing PNGs is `pngfile.py`).

Tensor conventions (as in GLIDE's reference code):
  * images are float in [-1, 1], shape [B, 3, H, W];
  * masks are float in {0, 1}, shape [B, 1, H, W], with 1 = keep and 0 = repaint.

Users give masks the way every other tool takes them: WHITE = repaint, BLACK = keep,
or an RGBA image whose TRANSPARENT pixels are repainted. This module converts both to
GLIDE's polarity, so nothing else in the package has to think about it.

GLIDE only works on squares; `fit` says how a non-square picture becomes one:
  * crop    - centre crop to the shorter side (the default);
  * pad     - letterbox: the whole picture, scaled down, centred on BLACK borders. The
              borders are "keep" in masks, so only what the user masked is repainted;
  * stretch - resize both sides independently (distorts the aspect ratio).
Images are resized bicubic and masks nearest, as GLIDE's notebook does; both go through
the same geometry, so a mask stays aligned with its image.

Every failure a user can cause raises `ImageError` with one line that names the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .pngfile import ImageError, check_input_file
from .vocabulary import FIT_MODES

# 8-bit values at or above this count as white (mask) or opaque (alpha): 50% grey.
_THRESHOLD = 128


# --------------------------------------------------------------------------- opening


def _open(path: str | Path, role: str = "image") -> Image.Image:
    """Fully load an image file, upright (phone photos store rotation in EXIF)."""
    path = check_input_file(path, role)
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)  # a copy, so it outlives the file
    except FileNotFoundError:
        raise ImageError(f"{role} file not found: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"{role} path is a directory, not a file: {path}") from None
    except PermissionError:
        raise ImageError(f"cannot read {role} file {path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{role} file {path} is not an image Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{role} file {path} is too large to load: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        # Truncated or corrupt data surfaces here (Pillow uses all three).
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ImageError(f"cannot read {role} file {path}: {reason}") from None


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer greyscale to 8 bits; Pillow's convert would clip instead."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to RGB; transparent pixels become black rather than hidden colours."""
    image = _to_8bit(image)
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def _alpha_channel(image: Image.Image) -> Image.Image | None:
    if not _has_alpha(image):
        return None
    return _to_8bit(image).convert("RGBA").getchannel("A")


# --------------------------------------------------------------------------- geometry


def _check_fit(fit: str, path: str | Path) -> None:
    if fit not in FIT_MODES:
        raise ImageError(f"unknown fit mode {fit!r} for {path}; choose one of {', '.join(FIT_MODES)}")


def _fit_square(image: Image.Image, size: int | tuple[int, int], fit: str, resample: int, fill: Any) -> Image.Image:
    """Make `image` size x size (or, for a (width, height) pair, that rectangle). The
    geometry depends only on the image's dimensions, so an image and its mask of the same
    dimensions land on the same pixels."""
    width, height = image.size
    out_w, out_h = (size, size) if isinstance(size, int) else size
    if fit == "stretch":
        return image.resize((out_w, out_h), resample)
    if fit == "crop":
        # The largest centred box of the target's aspect ratio.
        scale = min(width / out_w, height / out_h)
        box_w, box_h = min(width, round(out_w * scale)), min(height, round(out_h * scale))
        left, top = (width - box_w) // 2, (height - box_h) // 2
        return image.crop((left, top, left + box_w, top + box_h)).resize((out_w, out_h), resample)
    # pad: scale the picture to fit inside, then centre on the border colour. Resizing
    # before padding keeps the borders exactly `fill` (no bicubic bleed into them).
    scale = min(out_w / width, out_h / height)
    inner = (max(1, min(out_w, round(width * scale))), max(1, min(out_h, round(height * scale))))
    canvas = Image.new(image.mode, (out_w, out_h), fill)
    canvas.paste(image.resize(inner, resample), ((out_w - inner[0]) // 2, (out_h - inner[1]) // 2))
    return canvas


# --------------------------------------------------------------------------- tensors


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image (any mode) -> float tensor [3, H, W] in [-1, 1]; inverse of tensor_to_pil."""
    pixels = np.asarray(_to_rgb(image), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1.0


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor [3, H, W] (or [1, 3, H, W]) in [-1, 1] -> RGB PIL image (see batch_to_pil)."""
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a tensor of shape [3, H, W], got {list(x.shape)}")
    return batch_to_pil(x[None])[0]


def batch_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """Float tensor [B, 3, H, W] in [-1, 1] -> B RGB PIL images.

    Uses the reference's rounding, ((x + 1) * 127.5).round().clamp(0, 255) in float32, so
    that values from pil_to_tensor come back bit-exact. On a GPU the whole batch is rounded
    there (the same IEEE float32 operations) and copied to the host once, a quarter of the
    float32 bytes, instead of one copy and one wait per picture. On the CPU nothing is copied,
    and picture by picture stays in the cache (at batch 64, 25 ms against 39 ms for the batch
    at once, benchmarks/host_work.py)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a tensor of shape [B, 3, H, W], got {list(x.shape)}")
    pixels: Iterable[torch.Tensor]
    if x.device.type == "cpu":
        pixels = (_quantize(picture).permute(1, 2, 0) for picture in x)
    else:
        pixels = _pixels_at_once(x)
    return [Image.fromarray(picture.numpy(), "RGB") for picture in pixels]


def _pixels_at_once(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] wherever it lies -> uint8 [B, H, W, 3] on the host, in one copy."""
    return _quantize(x).permute(0, 2, 3, 1).contiguous().cpu()


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """The rounding, where x lies: ((x + 1) * 127.5).round().clamp(0, 255) as uint8."""
    return x.detach().float().add(1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def _mask_tensor(keep: np.ndarray) -> torch.Tensor:
    """Boolean keep-array [H, W] -> GLIDE mask [1, 1, H, W] (1 = keep)."""
    return torch.from_numpy(keep.astype(np.float32))[None, None]


# --------------------------------------------------------------------------- loading


def open_rgb(path: str | Path, role: str = "image") -> Image.Image:
    """Any picture file as an upright RGB image at its own size (transparent pixels black)."""
    return _to_rgb(_open(path, role))


def load_image(path: str | Path, size: int | tuple[int, int] | None, fit: str = "crop") -> torch.Tensor:
    """Load any image as GLIDE input: tensor [1, 3, size, size] in [-1, 1] (for a
    (width, height) `size`, [1, 3, height, width]; for None, the picture's own size)."""
    _check_fit(fit, path)
    rgb = _to_rgb(_open(path))
    if size is not None:
        rgb = _fit_square(rgb, size, fit, Image.Resampling.BICUBIC, (0, 0, 0))
    return pil_to_tensor(rgb)[None]


def load_image_rgba(
    path: str | Path, size: int | tuple[int, int], fit: str = "crop"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like load_image, plus the alpha channel as [1, 1, size, size] in [0, 1]
    (1 = opaque), or None when the file has no transparency. Alpha is resized nearest,
    like masks, and padding counts as opaque."""
    _check_fit(fit, path)
    image = _open(path)
    rgb = pil_to_tensor(_fit_square(_to_rgb(image), size, fit, Image.Resampling.BICUBIC, (0, 0, 0)))[None]
    alpha = _alpha_channel(image)
    if alpha is None:
        return rgb, None
    fitted = np.asarray(_fit_square(alpha, size, fit, Image.Resampling.NEAREST, 255), dtype=np.float32)
    return rgb, torch.from_numpy(fitted / 255.0)[None, None]


def has_alpha(path: str | Path) -> bool:
    """Whether the image has an alpha channel or a transparent colour."""
    return _has_alpha(_open(path))


def load_mask(path: str | Path, size: int | tuple[int, int], fit: str = "crop", invert: bool = False) -> torch.Tensor:
    """Load a user mask (WHITE = repaint, BLACK = keep) as GLIDE's mask [1, 1, size, size]
    with 1 = keep, 0 = repaint. Grey at or above 50% counts as white; `invert` swaps the
    meaning. Transparent pixels of the mask file count as black (keep)."""
    _check_fit(fit, path)
    grey = _to_rgb(_open(path, "mask")).convert("L")
    fitted = np.asarray(_fit_square(grey, size, fit, Image.Resampling.NEAREST, 0))  # pad = black = keep
    keep = fitted < _THRESHOLD
    return _mask_tensor(~keep if invert else keep)


def mask_from_alpha(path: str | Path, size: int | tuple[int, int], fit: str = "crop") -> torch.Tensor:
    """GLIDE mask from an RGBA image's transparency: pixels less than 50% opaque are
    repainted (0), the rest kept (1)."""
    _check_fit(fit, path)
    alpha = _alpha_channel(_open(path))
    if alpha is None:
        raise ImageError(f"image {path} has no transparency to use as a mask; give a mask file")
    fitted = np.asarray(_fit_square(alpha, size, fit, Image.Resampling.NEAREST, 255))  # pad = opaque = keep
    return _mask_tensor(fitted >= _THRESHOLD)


def check_same_size(image_path: str | Path, mask_path: str | Path) -> None:
    """Refuse a mask whose original size differs from its image's: after fitting they
    would silently cover different regions."""
    image_size = _open(image_path).size
    mask_size = _open(mask_path, "mask").size
    if image_size != mask_size:
        raise ImageError(
            f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but image {image_path} "
            f"is {image_size[0]}x{image_size[1]}; they must be the same size"
        )
