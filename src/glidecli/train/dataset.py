"""Training data for `glide train`: reading captioned images, making the generated "shapes"
data set, and building a small prompt tokenizer from a data set's captions.

A data set is either a folder of images, each with a caption in a same-name `.txt` file
(`cat.png` + `cat.txt`), or a JSONL file of {"path": ..., "caption": ...} lines (paths
relative to the JSONL file). Files that cannot be used (unreadable images, missing or empty
captions, bad JSONL lines) are skipped and counted; `scan_dataset` reads every image once,
so a run never fails half-way on a bad file.

The shapes data set: one coloured circle, square or triangle near the middle of a plain
coloured background, captioned "a red circle on a blue background". Small models learn it
in minutes, which makes it a test of the whole training path.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..files.text_file import TextFileError, read_text_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

class DatasetError(Exception):
    """A data set that cannot be used at all; the message is one line."""


# --- reading a data set ------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str


@dataclass
class Skipped:
    """Files left out of a data set, by reason, with a few examples of each."""

    reasons: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, what: str) -> None:
        self.reasons.setdefault(reason, []).append(what)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.reasons.values())

    def summary(self) -> str:
        """'3 without a caption (e.g. a.png), 1 unreadable image (e.g. b.png: ...)'."""
        parts = []
        for reason, items in self.reasons.items():
            parts.append(f"{len(items)} {reason} (e.g. {items[0]})")
        return "; ".join(parts)


@dataclass
class Dataset:
    """Usable examples in a fixed order, and what was skipped."""

    source: Path
    examples: list[Example]
    skipped: Skipped
    images: list[Image.Image] | None = None  # decoded RGB images when kept in memory

    def __len__(self) -> int:
        return len(self.examples)

    def fingerprint(self) -> str:
        """A hash of the examples (file names and captions) in order: a resumed run must see
        the same data to continue exactly."""
        digest = hashlib.sha256()
        for example in self.examples:
            digest.update(f"{example.path.name}\t{example.caption}\n".encode())
        return digest.hexdigest()[:16]

    def image(self, index: int) -> Image.Image:
        if self.images is not None:
            return self.images[index]
        return _read_rgb(self.examples[index].path)

    def report(self) -> str:
        line = f"{len(self.examples)} examples from {self.source}"
        if self.skipped.count:
            line += f"; skipped {self.skipped.count} file{'s' if self.skipped.count != 1 else ''}: {self.skipped.summary()}"
        return line


def _read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P", "PA"):
            # Transparent pixels go to white rather than to whatever colour they hold.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


def _clean_caption(text: str) -> str:
    return " ".join(text.split())


def scan_dataset(source: str | Path, *, max_side: int | None = None, keep_in_memory_mb: int = 1024) -> Dataset:
    """Read a folder or JSONL data set. Every image is decoded once here; when the decoded
    images (shrunk so their short side is at most `max_side`) fit in `keep_in_memory_mb`,
    they are kept, else they are read again when used."""
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"data set not found: {source}")
    skipped = Skipped()
    if source.is_dir():
        candidates = _folder_candidates(source, skipped)
        what = "images in folder"
    elif source.suffix.lower() in (".jsonl", ".json"):
        candidates = _jsonl_candidates(source, skipped)
        what = "lines in"
    else:
        raise DatasetError(f"{source} is neither a folder of captioned images nor a .jsonl file")
    if not candidates and not skipped.count:
        raise DatasetError(f"no {what} {source}" + (" (expected .png, .jpg, ... with same-name .txt captions)" if source.is_dir() else ""))

    examples: list[Example] = []
    images: list[Image.Image] | None = []
    budget = keep_in_memory_mb * 1024 * 1024
    used = 0
    for path, caption in candidates:
        if path.exists() and not path.is_file():  # a folder, or a pipe that would block the read
            skipped.add("paths that are not files", str(path))
            continue
        try:
            image = _read_rgb(path)
        except FileNotFoundError:
            skipped.add("missing images", str(path))
            continue
        except Exception as error:  # PIL raises many types for broken files
            skipped.add("unreadable images", f"{path.name}: {' '.join(str(error).split()) or type(error).__name__}")
            continue
        if min(image.size) < 1:
            skipped.add("empty images", path.name)
            continue
        examples.append(Example(path, caption))
        if images is not None:
            if max_side is not None and min(image.size) > max_side:
                scale = max_side / min(image.size)
                image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
            used += image.width * image.height * 3
            images.append(image)
            if used > budget:
                images = None  # too big to keep: read each image when it is used
    if not examples:
        raise DatasetError(f"no usable examples in {source}: skipped {skipped.count}: {skipped.summary()}")
    return Dataset(source, examples, skipped, images)


def _folder_candidates(folder: Path, skipped: Skipped) -> list[tuple[Path, str]]:
    found = []
    try:
        entries = sorted(folder.rglob("*"))
    except OSError as error:
        raise DatasetError(f"cannot read data folder {folder}: {error.strerror or error}") from None
    image_stems = set()
    for path in entries:
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        image_stems.add(path.with_suffix(""))
        caption_path = path.with_suffix(".txt")
        rel = str(path.relative_to(folder))
        try:
            caption = _clean_caption(caption_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            skipped.add("without a caption", rel)
            continue
        except (UnicodeDecodeError, OSError):
            skipped.add("with an unreadable caption", rel)
            continue
        if not caption:
            skipped.add("with an empty caption", rel)
            continue
        found.append((path, caption))
    for path in entries:
        if path.is_file() and path.suffix.lower() == ".txt" and path.with_suffix("") not in image_stems:
            skipped.add("captions without an image", str(path.relative_to(folder)))
    return found


def _jsonl_candidates(path: Path, skipped: Skipped) -> list[tuple[Path, str]]:
    try:
        text = read_text_file(path, "data set")
    except TextFileError as error:
        raise DatasetError(str(error)) from None
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped.add("lines that are not JSON", f"line {number}")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("path"), str) or not isinstance(record.get("caption"), str):
            skipped.add('lines without "path" and "caption" strings', f"line {number}")
            continue
        caption = _clean_caption(record["caption"])
        if not caption:
            skipped.add("with an empty caption", f"line {number}")
            continue
        image_path = Path(record["path"]).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        found.append((image_path, caption))
    return found


# --- the shapes data set ---------------------------------------------------------------


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open() or mkdir() would give (temporary files get 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def make_folder(path: Path, what: str = "output folder") -> None:
    """mkdir -p, with DatasetError (one line) where `path` is a file or cannot be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DatasetError(f"{what} {path} exists and is not a folder") from None
    except OSError as error:
        raise DatasetError(f"cannot create {what} {path}: {error.strerror or error}") from None


def atomic_write(path: Path, write) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise DatasetError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):  # a full disk, say: the file is not there, half or whole
            raise DatasetError(f"cannot write {path}: {error.strerror or error}") from None
        raise


# --- a tokenizer for a data set's captions ---------------------------------------------


def build_caption_tokenizer(captions: Sequence[str], path: Path, vocab_size: int = 512) -> Path:
    """Train a byte-level BPE (GPT-2's scheme: lowercased text, any string encodable) on the
    captions and save it as a tokenizers JSON, with <|endoftext|> as the last id (the padding).
    Whole caption words become single tokens when the vocabulary allows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ..nets.tokenizer import END_OF_TEXT

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    scratch = Tokenizer(models.BPE())
    scratch.pre_tokenizer = byte_level
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - 1, 257),
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    scratch.train_from_iterator([c.lower() for c in captions], trainer=trainer)
    spec = json.loads(scratch.to_str())
    vocab = dict(spec["model"]["vocab"])
    vocab[END_OF_TEXT] = len(vocab)
    if sorted(vocab.values()) != list(range(len(vocab))):  # pragma: no cover - tokenizers guarantees dense ids
        raise RuntimeError("trained vocabulary ids are not dense")
    merges = [(first, second) for first, second in (m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"])]
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tokenizer.save(tmp))
    return path
