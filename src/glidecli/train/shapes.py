"""The shapes data set: coloured circles, squares and triangles on plain backgrounds with
their captions, for trying `glide train` (`glide dataset shapes`), and the colour checks
that read such pictures back (tests, models/README.md's measurements)."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .dataset import IMAGE_SUFFIXES, DatasetError, atomic_write, make_folder
from .vocabulary import MAX_SHAPE_SPREAD, SHAPE_SPREAD

# Well-separated colours (8-bit RGB) for the shapes data set and for tests that read them back.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")


def shape_scene(rng: random.Random, size: int = 64, spread: float = SHAPE_SPREAD) -> tuple[Image.Image, str]:
    """One picture of a random coloured shape on a coloured background, and its caption."""
    colour, background = rng.sample(list(SHAPE_COLOURS), 2)
    shape = rng.choice(SHAPES)
    return draw_scene(colour, shape, background, size, rng, spread), shape_caption(colour, shape, background)


def draw_scene(
    colour: str, shape: str, background: str, size: int = 64, rng: random.Random | None = None, spread: float = SHAPE_SPREAD
) -> Image.Image:
    """A `colour` `shape` on a `background`: without `rng` centred, 29% of the side from centre
    to edge; with it of random size (24-34%) and place (its centre within `spread` of the side
    from the picture's, in each axis)."""
    if not 0.0 <= spread <= MAX_SHAPE_SPREAD:
        raise ValueError(f"spread must be within 0..{MAX_SHAPE_SPREAD}, got {spread}")
    factor = 4  # drawn large, then shrunk: smooth edges
    big = size * factor
    image = Image.new("RGB", (big, big), SHAPE_COLOURS[background])
    draw = ImageDraw.Draw(image)
    radius = (rng.uniform(0.24, 0.34) if rng else 0.29) * big  # half the shape's extent
    jitter = spread * big
    cx = big / 2 + (rng.uniform(-jitter, jitter) if rng else 0.0)
    cy = big / 2 + (rng.uniform(-jitter, jitter) if rng else 0.0)
    fill = SHAPE_COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "square":
        half = radius * 0.9
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif shape == "triangle":  # upward, its centroid at the centre
        draw.polygon(
            [(cx, cy - 1.15 * radius), (cx - 1.1 * radius, cy + 0.75 * radius), (cx + 1.1 * radius, cy + 0.75 * radius)], fill=fill
        )
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    return image.resize((size, size), Image.Resampling.BOX)


# A fixed set of scenes for measuring a shapes model: every colour appears once as an
# object and once as a background.
EVAL_SCENES = (
    ("red", "circle", "blue"),
    ("blue", "square", "yellow"),
    ("yellow", "triangle", "purple"),
    ("green", "circle", "white"),
    ("white", "square", "black"),
    ("black", "triangle", "orange"),
    ("orange", "circle", "green"),
    ("purple", "square", "red"),
)


def nearest_colour(rgb: np.ndarray) -> str:
    """The name of the SHAPE_COLOURS entry nearest to an RGB triple (0-255)."""
    names = list(SHAPE_COLOURS)
    palette = np.array([SHAPE_COLOURS[name] for name in names], dtype=np.float64)
    return names[int(np.argmin(((palette - np.asarray(rgb, dtype=np.float64)) ** 2).sum(axis=1)))]


def scene_colours(picture: np.ndarray) -> tuple[str, str]:
    """(object, background) colour names of a shapes picture [H, W, 3] (0-255): the colours
    nearest to the mean of the central quarter-side square and of the outermost eighth of
    each side. Shapes are drawn centred, at least half the picture wide."""
    size = picture.shape[0]
    lo, hi = size * 3 // 8, size * 5 // 8
    band = max(1, size // 8)
    centre = picture[lo:hi, lo:hi].reshape(-1, 3).mean(axis=0)
    ring = np.ones(picture.shape[:2], dtype=bool)
    ring[band:-band, band:-band] = False
    return nearest_colour(centre), nearest_colour(picture[ring].mean(axis=0))


def colour_hits(pictures: Sequence[np.ndarray], scenes: Sequence[tuple[str, str, str]]) -> tuple[int, int]:
    """(pictures whose object AND background colours are those of their scene, single
    colours right), for pictures of (colour, shape, background) scenes."""
    both = single = 0
    for picture, (colour, _, background) in zip(pictures, scenes):
        found = scene_colours(picture)
        both += found == (colour, background)
        single += (found[0] == colour) + (found[1] == background)
    return both, single


def shape_caption(colour: str, shape: str, background: str) -> str:
    """'a red circle on a blue background', 'an orange square on a white background'."""
    return f"{_article(colour)} {colour} {shape} on {_article(background)} {background} background"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def write_shapes(
    out: Path, count: int, *, size: int = 64, seed: int = 0, jsonl: bool = False, overwrite: bool = False, spread: float = SHAPE_SPREAD
) -> Iterator[Path]:
    """Write `count` shape scenes as NNNNN.png with NNNNN.txt captions (or one captions.jsonl);
    yields each picture's path. The same seed gives the same files. `spread`: how far from the
    centre the shapes may sit (draw_scene)."""
    if not 0.0 <= spread <= MAX_SHAPE_SPREAD:  # before anything is written
        raise DatasetError(f"the spread must be within 0..{MAX_SHAPE_SPREAD} of the side, got {spread}")
    make_folder(out)
    if not overwrite:
        clash = next((p for p in sorted(out.iterdir()) if p.suffix.lower() in (*IMAGE_SUFFIXES, ".txt", ".jsonl")), None)
        if clash is not None:
            raise DatasetError(f"{out} already holds a data set ({clash.name}); choose an empty folder or use --overwrite")
    rng = random.Random(seed)
    width = max(5, len(str(count - 1)))
    lines = []
    for index in range(count):
        image, caption = shape_scene(rng, size, spread)
        path = out / f"{index:0{width}d}.png"
        atomic_write(path, functools.partial(image.save, format="PNG"))
        if jsonl:
            lines.append(json.dumps({"path": path.name, "caption": caption}))
        else:
            atomic_write(path.with_suffix(".txt"), functools.partial(_write_text, text=caption + "\n"))
        yield path
    if jsonl:
        atomic_write(out / "captions.jsonl", functools.partial(_write_text, text="\n".join(lines) + "\n"))


def _write_text(path: str | Path, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")
