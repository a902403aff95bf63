"""Wildcards, as the Dynamic Prompts extension of A1111 writes them: `{red|green|blue}` is one
of the options, `{2$$red|green|blue}` two different ones joined with ", " (`{1-3$$...}` one
to three, `{2$$ and $$...}` joined with " and "), `__colours__` a line of colours.txt in the
wildcards folder (--wildcards DIR, default $GLIDE_WILDCARDS). Options and lines may hold
wildcards of their own. `\\{`, `\\}` and `\\|` are the characters themselves.

Each picture's picks come from its own seed, so a seed gives the same prompt every time
(and `--from` replays the prompt it resolved to, which the PNG records beside the template).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..files.text_file import TextFileError, read_text_file
from .values import RequestError

WILDCARDS_ENV = "GLIDE_WILDCARDS"
MAX_DEPTH = 16  # deeper is a wildcard file that names itself
JOINER = ", "

_NAME = re.compile(r"__([A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*?)__")
_VARIANTS = re.compile(r"^\s*(\d+)(?:-(\d+))?\$\$(?:(.*?)\$\$)?", re.S)


def wildcards_folder(given: Path | None) -> Path | None:
    """The folder `__name__` reads from: the option's, else $GLIDE_WILDCARDS, else none."""
    if given is not None:
        return given
    env = os.environ.get(WILDCARDS_ENV)
    return Path(env) if env else None


def has_wildcards(prompt: str) -> bool:
    """Whether the prompt may hold a wildcard (cheap: most prompts hold none)."""
    return "{" in prompt or "__" in prompt


@dataclass
class Wildcards:
    """Resolves prompts against one wildcards folder, reading each file once."""

    folder: Path | None
    _files: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def resolve(self, template: str, seed: int) -> str:
        """The prompt a picture of `seed` draws from `template`."""
        if not has_wildcards(template):
            return template
        return self._expand(template, random.Random(seed), 0)

    def _expand(self, text: str, rng: random.Random, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise RequestError(f"wildcards nest more than {MAX_DEPTH} deep (does a wildcard file name itself?)")
        out: list[str] = []
        position = 0
        while position < len(text):
            char = text[position]
            if char == "\\" and text[position + 1 : position + 2] in ("{", "}", "|"):
                out.append(text[position : position + 2])  # the attention parser drops the backslash
                position += 2
            elif char == "{" and (end := _closing_brace(text, position)) is not None:
                out.append(self._choose(text[position + 1 : end], rng, depth))
                position = end + 1
            elif char == "_" and (name := _NAME.match(text, position)) is not None:
                out.append(self._expand(rng.choice(self._lines(name.group(1))), rng, depth + 1))
                position = name.end()
            else:
                out.append(char)
                position += 1
        return "".join(out)

    def _choose(self, body: str, rng: random.Random, depth: int) -> str:
        """`body` is what stands between the braces: options, maybe a count first."""
        count_low = count_high = 1
        joiner = JOINER
        variants = _VARIANTS.match(body)
        if variants is not None:
            count_low = int(variants.group(1))
            count_high = int(variants.group(2)) if variants.group(2) else count_low
            joiner = variants.group(3) if variants.group(3) is not None else JOINER
            body = body[variants.end() :]
        options = _split_options(body)
        count = min(rng.randint(min(count_low, count_high), max(count_low, count_high)), len(options))
        picked = rng.sample(options, count)
        return joiner.join(self._expand(option, rng, depth + 1) for option in picked)

    def _lines(self, name: str) -> tuple[str, ...]:
        if name not in self._files:
            self._files[name] = self._read(name)
        return self._files[name]

    def _read(self, name: str) -> tuple[str, ...]:
        if self.folder is None:
            raise RequestError(f"__{name}__ reads {name}.txt from a wildcards folder: give --wildcards DIR or set ${WILDCARDS_ENV}")
        path = self.folder / f"{name}.txt"
        try:
            text = read_text_file(path, "wildcard file")
        except TextFileError as error:
            raise RequestError(str(error)) from None
        lines = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
        if not lines:
            raise RequestError(f"wildcard file {path} has no lines to pick from")
        return lines


def _scan(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(position, character, brace depth after it) of each character from `start` that no
    backslash escapes."""
    depth = 0
    position = start
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        yield position, char, depth
        position += 1


def _closing_brace(text: str, start: int) -> int | None:
    """The index of the brace that closes the one at `start`, or None (a lone brace is text)."""
    return next((position for position, char, depth in _scan(text, start) if char == "}" and depth == 0), None)


def _split_options(body: str) -> list[str]:
    """The options of a brace: split at the `|`s outside nested braces."""
    options: list[str] = []
    start = 0
    for position, char, depth in _scan(body):
        if char == "|" and depth == 0:
            options.append(body[start:position])
            start = position + 1
    options.append(body[start:])
    return options
