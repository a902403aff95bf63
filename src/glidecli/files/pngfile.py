"""Writing glide's PNGs: settings in text chunks, atomic writes, and output file names.

Every PNG carries two text chunks: `parameters` in A1111's format (what most image tools
show, parameters.py) and `glide`, the full JSON record needed to reproduce the image (a
rendered picture's is record.py's PictureRecord). Files are written to
a temporary name and renamed, and never overwrite an existing file unless asked. This module
needs no torch, so `glide info` starts quickly.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import stat
import string
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .metadata import PictureTexts, picture_texts, record_from_texts, record_json
from .parameters import build_parameters_text
from .record import PictureRecord
from .vocabulary import DEFAULT_PATTERN, ImageFormat

PATTERN_FIELDS = ("index", "seed", "slug", "prompt_hash")
# Suffixes that mean the user asked for a format we do not write (not a directory name).
_OTHER_IMAGE_SUFFIXES = (".gif", ".bmp", ".tif", ".tiff")

# PNG text chunks: A1111's human-readable one, and our full JSON record.
PARAMETERS_KEY = "parameters"
GLIDE_KEY = "glide"


class ImageError(Exception):
    """A problem with a user's image, mask or output path; the message is one line."""


# --------------------------------------------------------------------------- metadata


def _add_text_chunk(info: PngImagePlugin.PngInfo, key: str, text: str) -> None:
    """tEXt holds Latin-1 only; anything else (Japanese, emoji) must go in UTF-8 iTXt."""
    # A file name that is not UTF-8 reaches Python as lone surrogates, which UTF-8 cannot
    # hold: write them as \udcXX escapes.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        info.add_itxt(key, text)
    else:
        info.add_text(key, text)


def png_info(meta: Mapping[str, Any]) -> PngImagePlugin.PngInfo:
    """The `parameters` and `glide` text chunks of a record."""
    info = PngImagePlugin.PngInfo()
    _add_text_chunk(info, PARAMETERS_KEY, build_parameters_text(meta))
    _add_text_chunk(info, GLIDE_KEY, record_json(meta))
    return info


def check_input_file(path: str | Path, role: str = "image") -> Path:
    """`path` as a Path when it names a regular file; else ImageError. A FIFO or a device
    would block or be consumed by the first of the several reads a picture gets."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"{role} file not found: {path}") from None
    except OSError as error:
        raise ImageError(f"cannot read {role} file {path}: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{role} path is a directory, not a file: {path}")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{role} path {path} is not a regular file (a pipe or a device?); save the picture to a file first")
    return path


def read_png_metadata(path: str | Path) -> dict[str, Any]:
    """The settings stored in a PNG: the `glide` JSON when present, else whatever can be
    parsed from A1111's `parameters`, else {}. (pictures.read_picture_record reads JPEG and
    WebP too.)"""
    return record_from_texts(read_picture_texts(path, ("PNG",)))


# Pillow's formats -> how messages name them.
_FORMAT_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}


def read_picture_texts(source: str | Path | bytes, formats: tuple[str, ...]) -> PictureTexts:
    """The `parameters` text and glide's JSON record in a picture file (a path, or the file's
    bytes: an upload) of one of Pillow's `formats`; ImageError otherwise, one line naming it."""
    opened: io.BytesIO | Path
    if isinstance(source, bytes):
        name, opened = "the picture", io.BytesIO(source)
    else:
        opened = check_input_file(source)
        name = str(opened)
    names = list(dict.fromkeys(_FORMAT_NAMES.get(kind, kind) for kind in formats))
    wanted = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"  # "PNG, JPEG or WebP"
    try:
        with Image.open(opened) as image:
            if image.format not in formats:
                raise ImageError(f"{name} is a {image.format} file, not a {wanted}")
            return picture_texts(image)
    except FileNotFoundError:
        raise ImageError(f"image file not found: {name}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not a {wanted} image") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name} is too large to read: {error}") from None
    except OSError as error:
        raise ImageError(f"cannot read {name}: {error.strerror or error}") from None
    except (SyntaxError, ValueError) as error:
        raise ImageError(f"cannot read {name}: {error}") from None


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
    except OSError:  # a file system without hard links: check again, as late as possible
        if os.path.lexists(path):
            raise _exists_error(path) from None
        os.replace(temp, path)
    else:
        os.unlink(temp)


def _exists_error(path: Path) -> ImageError:
    return ImageError(f"output file {path} already exists; use --overwrite to replace it")


def write_png(image: Image.Image, path: str | Path, meta: PictureRecord | Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write `image` as a PNG with `parameters` and `glide` metadata, atomically (write_whole):
    a picture's record (files/record.py), or any settings by key."""
    record = meta.as_meta() if isinstance(meta, PictureRecord) else meta
    return write_whole(path, lambda file: image.save(file, format="PNG", pnginfo=png_info(record)), overwrite=overwrite)


def write_whole(path: str | Path, save: Callable[[BinaryIO], None], *, overwrite: bool = False) -> Path:
    """Write a file whole or not at all: `save(file)` fills a temp file in the same directory
    that then takes the name `path`, so a crash or Ctrl-C never leaves a partial file (or the
    temp file) behind; an existing file is refused unless `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"output path {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise _exists_error(path)
    _make_parent(path)
    try:
        fd, temp = _create_temp(path)
    except OSError as error:
        raise ImageError(f"cannot write to directory {path.parent}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            save(file)
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


_MAX_NAME_BYTES = 255  # one path component, on every common file system


def _check_pattern(pattern: str) -> None:
    allowed = ", ".join(PATTERN_FIELDS)
    try:
        fields = [(name, spec) for _, name, spec, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as error:
        raise ImageError(f"bad output pattern {pattern!r}: {error}") from None
    for name, spec in fields:
        if any(int(width) > _MAX_NAME_BYTES for width in re.findall(r"\d+", spec or "")):
            # '{index:>1000000000}' would build a gigabyte-long name before any check
            raise ImageError(f"output pattern {pattern!r}: a field wider than a file name can be ({_MAX_NAME_BYTES})")
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
    image_format: ImageFormat = ImageFormat.PNG,
) -> Path:
    """Where image `index` of `count` goes, a picture in `image_format`.

    A `out` ending in the format's suffix (.png; .jpg or .jpeg; .webp) names the file itself;
    with several images each gets "-{index}" before the suffix (zero-padded so they sort).
    Otherwise `out` is a directory and `pattern` (fields: index, seed, slug, prompt_hash)
    names the file, its suffix the format's: a pattern's .png (the default patterns') becomes
    .jpg for JPEG, and one without a picture suffix gets it appended."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = Path(out)
    named = ImageFormat.of_path(out)
    if out.suffix.lower() in _OTHER_IMAGE_SUFFIXES:
        raise ImageError(f"output {out}: glide writes PNG, JPEG and WebP files only; use a {image_format.suffix} name or a directory")
    if named is not None and not out.is_dir():
        if named is not image_format:
            raise ImageError(
                f"output {out}: --format {image_format} writes {image_format.pillow} files only; use a {image_format.suffix} name,"
                f" a directory or --format {named}"
            )
        if count == 1:
            return out
        return out.with_name(f"{out.stem}-{index:0{len(str(count))}d}{out.suffix}")
    _check_pattern(pattern)
    fields = {"index": index, "seed": seed, "slug": slugify(prompt), "prompt_hash": prompt_hash(prompt)}
    try:
        name = pattern.format(**fields)
    except (ValueError, TypeError) as error:
        raise ImageError(f"bad output pattern {pattern!r}: {error}") from None
    name = _with_suffix(name, image_format)
    longest = max(len(os.fsencode(part)) for part in Path(name).parts)
    if longest > _MAX_NAME_BYTES:
        raise ImageError(f"output pattern {pattern!r} makes a file name of {longest} bytes; file systems take {_MAX_NAME_BYTES} at most")
    # Fields hold only digits, hex and [a-z0-9-] slugs, so only the pattern's own text can
    # leave `out` ("../x", "/tmp/x"); sub-folders inside `out` are fine.
    relative = Path(name)
    if relative.is_absolute() or relative.drive or ".." in relative.parts:
        raise ImageError(f"output pattern {pattern!r} would write {name} outside the output directory {out}")
    return out / name


def _with_suffix(name: str, image_format: ImageFormat) -> str:
    """`name` ending in the format's suffix: another picture format's suffix replaced by it."""
    named = ImageFormat.of_path(name)
    if named is image_format:
        return name
    if named is not None:
        name = name[: -len(PurePath(name).suffix)]
    return name + image_format.suffix


def next_free_index(directory: str | Path) -> int:
    """One past the largest number that starts the name of a picture glide writes (.png, .jpg,
    .jpeg, .webp) in `directory` (0 if none), so numbered outputs continue across runs as in A1111."""
    try:
        names = [entry.name for entry in Path(directory).iterdir()]
    except OSError:  # missing or unreadable: nothing numbered yet, as glob would say
        names = []
    numbers = [int(match.group()) for name in names if ImageFormat.of_path(name) is not None and (match := re.match(r"\d+", name))]
    return max(numbers, default=-1) + 1
