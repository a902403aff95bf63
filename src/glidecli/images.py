"""Reading images and masks into GLIDE's tensors, and writing PNGs back out.

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

import hashlib
import json
import os
import re
import secrets
import string
import unicodedata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

FIT_MODES = ("crop", "pad", "stretch")
DEFAULT_PATTERN = "{index:05d}-{seed}-{slug}.png"
PATTERN_FIELDS = ("index", "seed", "slug", "prompt_hash")
# Suffixes that mean the user asked for a format we do not write (not a directory name).
_OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")

# PNG text chunks: A1111's human-readable one, and our full JSON record.
PARAMETERS_KEY = "parameters"
GLIDE_KEY = "glide"

# 8-bit values at or above this count as white (mask) or opaque (alpha): 50% grey.
_THRESHOLD = 128


class ImageError(Exception):
    """A problem with a user's image, mask or output path; the message is one line."""


# --------------------------------------------------------------------------- opening


def _open(path: str | Path, role: str = "image") -> Image.Image:
    """Fully load an image file, upright (phone photos store rotation in EXIF)."""
    path = Path(path)
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
        raise ImageError(f"cannot read {role} file {path}: {error}") from None


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


def _fit_square(image: Image.Image, size: int, fit: str, resample: int, fill: Any) -> Image.Image:
    """Make `image` size x size. The geometry depends only on the image's dimensions,
    so an image and its mask of the same dimensions land on the same pixels."""
    width, height = image.size
    if fit == "stretch":
        return image.resize((size, size), resample)
    if fit == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side)).resize((size, size), resample)
    # pad: scale the longer side to `size`, then centre on the border colour. Resizing
    # before padding keeps the borders exactly `fill` (no bicubic bleed into them).
    longest = max(width, height)
    inner = (max(1, round(width * size / longest)), max(1, round(height * size / longest)))
    canvas = Image.new(image.mode, (size, size), fill)
    canvas.paste(image.resize(inner, resample), ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return canvas


# --------------------------------------------------------------------------- tensors


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image (any mode) -> float tensor [3, H, W] in [-1, 1]; inverse of tensor_to_pil."""
    pixels = np.asarray(_to_rgb(image), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1.0


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor [3, H, W] (or [1, 3, H, W]) in [-1, 1] -> RGB PIL image.

    Uses the reference's rounding, ((x + 1) * 127.5).round().clamp(0, 255), so that
    values from pil_to_tensor come back bit-exact."""
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a tensor of shape [3, H, W], got {list(x.shape)}")
    scaled = ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
    return Image.fromarray(scaled.to(torch.uint8).permute(1, 2, 0).numpy(), "RGB")


def _mask_tensor(keep: np.ndarray) -> torch.Tensor:
    """Boolean keep-array [H, W] -> GLIDE mask [1, 1, H, W] (1 = keep)."""
    return torch.from_numpy(keep.astype(np.float32))[None, None]


# --------------------------------------------------------------------------- loading


def load_image(path: str | Path, size: int, fit: str = "crop") -> torch.Tensor:
    """Load any image as GLIDE input: tensor [1, 3, size, size] in [-1, 1]."""
    _check_fit(fit, path)
    rgb = _to_rgb(_open(path))
    return pil_to_tensor(_fit_square(rgb, size, fit, Image.BICUBIC, (0, 0, 0)))[None]


def load_image_rgba(
    path: str | Path, size: int, fit: str = "crop"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like load_image, plus the alpha channel as [1, 1, size, size] in [0, 1]
    (1 = opaque), or None when the file has no transparency. Alpha is resized nearest,
    like masks, and padding counts as opaque."""
    _check_fit(fit, path)
    image = _open(path)
    rgb = pil_to_tensor(_fit_square(_to_rgb(image), size, fit, Image.BICUBIC, (0, 0, 0)))[None]
    alpha = _alpha_channel(image)
    if alpha is None:
        return rgb, None
    fitted = np.asarray(_fit_square(alpha, size, fit, Image.NEAREST, 255), dtype=np.float32)
    return rgb, torch.from_numpy(fitted / 255.0)[None, None]


def has_alpha(path: str | Path) -> bool:
    """Whether the image has an alpha channel or a transparent colour."""
    return _has_alpha(_open(path))


def load_mask(path: str | Path, size: int, fit: str = "crop", invert: bool = False) -> torch.Tensor:
    """Load a user mask (WHITE = repaint, BLACK = keep) as GLIDE's mask [1, 1, size, size]
    with 1 = keep, 0 = repaint. Grey at or above 50% counts as white; `invert` swaps the
    meaning. Transparent pixels of the mask file count as black (keep)."""
    _check_fit(fit, path)
    grey = _to_rgb(_open(path, "mask")).convert("L")
    fitted = np.asarray(_fit_square(grey, size, fit, Image.NEAREST, 0))  # pad = black = keep
    keep = fitted < _THRESHOLD
    return _mask_tensor(~keep if invert else keep)


def mask_from_alpha(path: str | Path, size: int, fit: str = "crop") -> torch.Tensor:
    """GLIDE mask from an RGBA image's transparency: pixels less than 50% opaque are
    repainted (0), the rest kept (1)."""
    _check_fit(fit, path)
    alpha = _alpha_channel(_open(path))
    if alpha is None:
        raise ImageError(f"image {path} has no transparency to use as a mask; give a mask file")
    fitted = np.asarray(_fit_square(alpha, size, fit, Image.NEAREST, 255))  # pad = opaque = keep
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


# --------------------------------------------------------------------------- metadata

# meta key (and accepted aliases) -> label in A1111's settings line, in A1111's order.
_PARAMETER_LABELS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("steps",), "Steps"),
    (("sampler",), "Sampler"),
    (("scale", "cfg_scale"), "CFG scale"),
    (("seed",), "Seed"),
    (("size",), "Size"),
    (("model",), "Model"),
    (("model_hash",), "Model hash"),
    (("upsample_steps",), "Upsample steps"),
    (("upsample_temp",), "Upsample temp"),
)
_NEGATIVE_KEYS = ("negative_prompt", "negative")
_NEGATIVE_PREFIX = "Negative prompt: "


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # A1111 writes "CFG scale: 3", not "3.0"
    return str(value)


def _format_size(meta: Mapping[str, Any]) -> str | None:
    size = meta.get("size")
    if size is None and "width" in meta and "height" in meta:
        size = (meta["width"], meta["height"])
    if size is None:
        return None
    if isinstance(size, (list, tuple)):
        return f"{size[0]}x{size[1]}"
    if isinstance(size, int):
        return f"{size}x{size}"
    return str(size)


def _quote(text: str) -> str:
    """Quote a value that would otherwise break the "Key: value, Key: value" line."""
    if any(c in text for c in ',:"\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _first_present(meta: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if meta.get(key) is not None:
            return meta[key]
    return None


def _setting_text(meta: Mapping[str, Any], keys: tuple[str, ...], label: str) -> str | None:
    if label == "Size":
        return _format_size(meta)
    value = _first_present(meta, keys)
    return None if value is None else _format_value(value)


def build_parameters_text(meta: Mapping[str, Any]) -> str:
    """A1111's `parameters` text: the prompt, an optional "Negative prompt: ..." line,
    then one "Key: value, ..." line holding only the settings present in `meta`."""
    lines = [str(meta.get("prompt", ""))]
    negative = _first_present(meta, _NEGATIVE_KEYS)
    if negative:
        lines.append(_NEGATIVE_PREFIX + str(negative))
    settings = []
    for keys, label in _PARAMETER_LABELS:
        text = _setting_text(meta, keys, label)
        if text is not None:
            settings.append(f"{label}: {_quote(text)}")
    if settings:
        lines.append(", ".join(settings))
    return "\n".join(lines)


# One "Label: value" pair, the value either a JSON string or plain text up to a comma.
_SETTING_PAIR = re.compile(r'\s*([^:,]+):\s*("(?:\\.|[^"\\])*"|[^,]*)\s*(?:,|$)')
_SETTINGS_LINE = re.compile(r"^\s*[A-Za-z][\w ]*: ")


def _parse_setting_value(raw: str) -> Any:
    if raw.startswith('"'):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_parameters_text(text: str) -> dict[str, Any]:
    """Best-effort inverse of build_parameters_text (also reads other tools' text):
    known labels map back to meta keys, others become snake_case keys."""
    lines = text.split("\n")
    settings_line = ""
    if len(lines) > 1 and _SETTINGS_LINE.match(lines[-1]):
        settings_line = lines.pop()
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith(_NEGATIVE_PREFIX) and not negative_lines:
            negative_lines.append(line[len(_NEGATIVE_PREFIX):])
        elif negative_lines:
            negative_lines.append(line)  # a multi-line negative prompt continues
        else:
            prompt_lines.append(line)

    meta: dict[str, Any] = {"prompt": "\n".join(prompt_lines)}
    if negative_lines:
        meta["negative_prompt"] = "\n".join(negative_lines)
    keys_by_label = {label: keys[0] for keys, label in _PARAMETER_LABELS}
    for label, raw in _SETTING_PAIR.findall(settings_line):
        label = label.strip()
        key = keys_by_label.get(label, re.sub(r"\W+", "_", label.lower()).strip("_"))
        value = _parse_setting_value(raw.strip())
        meta[key] = str(value) if key in ("sampler", "model", "model_hash", "size") else value
    return meta


def _add_text_chunk(info: PngImagePlugin.PngInfo, key: str, text: str) -> None:
    """tEXt holds Latin-1 only; anything else (Japanese, emoji) must go in UTF-8 iTXt."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        info.add_itxt(key, text)
    else:
        info.add_text(key, text)


def _png_info(meta: Mapping[str, Any]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    _add_text_chunk(info, PARAMETERS_KEY, build_parameters_text(meta))
    _add_text_chunk(info, GLIDE_KEY, json.dumps(dict(meta), ensure_ascii=False, default=str))
    return info


def read_png_metadata(path: str | Path) -> dict[str, Any]:
    """The settings stored in a PNG: the `glide` JSON when present, else whatever can be
    parsed from A1111's `parameters`, else {}."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise ImageError(f"{path} is a {image.format} file, not a PNG")
            texts = dict(image.text)  # reads every text chunk, also those after the pixels
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not a PNG image") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot read {path}: {error}") from None
    if GLIDE_KEY in texts:
        try:
            return json.loads(texts[GLIDE_KEY])
        except json.JSONDecodeError:
            pass  # damaged or foreign; fall back to the readable chunk
    if PARAMETERS_KEY in texts:
        return parse_parameters_text(texts[PARAMETERS_KEY])
    return {}


# --------------------------------------------------------------------------- writing


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageError(f"cannot create output directory {path.parent}: {error.strerror or error}") from None


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new hidden file beside `path`. os.open (not mkstemp) so that the final file
    gets the usual umask permissions instead of mkstemp's private 0600."""
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue


def _publish(temp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished temp file into place in one step."""
    if overwrite:
        os.replace(temp, path)
        return
    # A hard link fails if `path` appeared meanwhile (say another glide run), where
    # os.replace would silently clobber it.
    try:
        os.link(temp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:
        os.replace(temp, path)  # file system without hard links
    else:
        os.unlink(temp)


def _exists_error(path: Path) -> ImageError:
    return ImageError(f"output file {path} already exists; use --overwrite to replace it")


def write_png(image: Image.Image, path: str | Path, meta: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write `image` as a PNG with `parameters` and `glide` metadata, atomically: the
    data goes to a temp file in the same directory that then replaces `path`, so a crash
    or Ctrl-C never leaves a partial image (or the temp file) behind."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"output path {path} is a directory; give a file name ending in .png")
    if path.exists() and not overwrite:
        raise _exists_error(path)
    _make_parent(path)
    try:
        fd, temp = _create_temp(path)
    except OSError as error:
        raise ImageError(f"cannot write to directory {path.parent}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            image.save(file, format="PNG", pnginfo=_png_info(meta))
            file.flush()
            os.fsync(file.fileno())  # data on disk before the rename makes it visible
        _publish(temp, path, overwrite)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ImageError(f"cannot write {path}: {error.strerror or error}") from error
        raise
    return path


# --------------------------------------------------------------------------- naming


def slugify(prompt: str, max_len: int = 48) -> str:
    """A file-name-safe summary of a prompt: lowercase ASCII words joined by hyphens,
    cut at a word boundary, "untitled" when nothing is left (e.g. a Japanese prompt)."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_len:
        cut = slug[:max_len]
        # Prefer ending on a whole word unless that would throw most of it away.
        slug = cut.rsplit("-", 1)[0] if "-" in cut[max_len // 2:] else cut
        slug = slug.strip("-")
    return slug or "untitled"


def prompt_hash(prompt: str) -> str:
    """Short stable id of a prompt, for names that must not depend on its wording."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]


def _check_pattern(pattern: str) -> None:
    allowed = ", ".join(PATTERN_FIELDS)
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as error:
        raise ImageError(f"bad output pattern {pattern!r}: {error}") from None
    for name in fields:
        # Exact names only: no positional "{}" and no attribute or index access.
        if name not in PATTERN_FIELDS:
            raise ImageError(f"unknown field {{{name}}} in output pattern {pattern!r}; allowed: {allowed}")


def render_output_path(
    out: str | Path,
    *,
    index: int,
    seed: int,
    prompt: str,
    pattern: str = DEFAULT_PATTERN,
    count: int,
) -> Path:
    """Where image `index` of `count` goes.

    A `out` ending in .png names the file itself; with several images each gets
    "-{index}" before the suffix (zero-padded so they sort). Otherwise `out` is a
    directory and `pattern` (fields: index, seed, slug, prompt_hash) names the file;
    ".png" is appended when the pattern lacks it."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = Path(out)
    if out.suffix.lower() in _OTHER_IMAGE_SUFFIXES:
        raise ImageError(f"output {out}: glide writes PNG files only; use a .png name or a directory")
    if out.suffix.lower() == ".png" and not out.is_dir():
        if count == 1:
            return out
        return out.with_name(f"{out.stem}-{index:0{len(str(count))}d}{out.suffix}")
    _check_pattern(pattern)
    fields = {"index": index, "seed": seed, "slug": slugify(prompt), "prompt_hash": prompt_hash(prompt)}
    try:
        name = pattern.format(**fields)
    except (ValueError, TypeError) as error:
        raise ImageError(f"bad output pattern {pattern!r}: {error}") from None
    if not name.lower().endswith(".png"):
        name += ".png"
    return out / name


def next_free_index(directory: str | Path) -> int:
    """One past the largest number that starts a .png name in `directory` (0 if none),
    so numbered outputs continue across runs as in A1111."""
    numbers = [
        int(match.group())
        for entry in Path(directory).glob("*.png")
        if (match := re.match(r"\d+", entry.name))
    ]
    return max(numbers, default=-1) + 1
