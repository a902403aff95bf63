"""AUTOMATIC1111's attention syntax: `(word)` weighs a part of a prompt by 1.1, `((word))`
by 1.21, `[word]` by 1/1.1, `(word:1.3)` by 1.3; `\\(` `\\)` `\\[` `\\]` `\\\\` are the
characters themselves. Brackets left open weigh everything after them, as A1111's do; a
closing bracket with nothing open is text. `BREAK` (A1111's start of a new 75-token chunk;
GLIDE reads one context) and extra-network tags such as `<hypernet:name:1>` are removed with
a warning; A1111's prompt editing, `[from:to:when]` and `[a|b]`, is read as brackets and text,
with a warning. How a weight acts on the features is an Emphasis (A1111's or ComfyUI's).

Plain text only, no torch (like composition.py, which splits `AND` first): the request
layer checks prompts with it before any model loads, and every stage of the render layer
reads its prompts' components through it. The networks' side of the weights is emphasis.py.
docs/prompts.md has the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK = "BREAK"
BREAK_WEIGHT = -1.0  # how parse_attention marks a BREAK, as A1111's parser does

_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")
_EXPLICIT_WEIGHT = re.compile(r":([+-]?[.\d]+)\)")  # ':1.3)' closing a round bracket
_STOPS = frozenset("\\()[]:")  # characters that end a run of plain text
_ESCAPABLE = frozenset("()[]\\")
_TAG = re.compile(r"<([^<>:\s]+)(?::([^<>]*))?>")  # <kind:args>, extra networks (LoRA, hypernetworks...)
# A1111's prompt editing, which it reads before emphasis: `[from:to:when]`, `[to:when]` and
# `[from::when]` change the text at a step, `[a|b]` alternates it every step. glide draws with
# one text for all steps, so it reads these as brackets and text, and says so. (As A1111's
# grammar: optional spaces before the step, none after it.)
_PROMPT_EDITS = re.compile(
    r"(?<!\\)\[[^\[\]]*(?::\s*[+-]?(?:\d+\.?\d*|\.\d+)|(?<!\\)\|[^\[\]]*)(?<!\\)\]"
)


class Emphasis(StrEnum):
    """How a segment's weight acts on its tokens' features (render/emphasis.py, docs/prompts.md)."""

    A1111 = "a1111"  # multiplied by the weight, then the sequence's mean restored (A1111's)
    COMFY = "comfy"  # moved from the empty prompt's feature at its position: empty + w (z - empty) (ComfyUI's)


@dataclass(frozen=True)
class Segment:
    """A run of a prompt's text and the weight its tokens' features get."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class PromptTag:
    """An extra-network tag (`<lora:name:0.8>`): its kind, its arguments and its text."""

    kind: str
    args: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class WeightedPrompt:
    """A prompt read in A1111's language: its segments, and what was removed (BREAK, tags)."""

    segments: tuple[Segment, ...]
    removed: tuple[str, ...] = ()
    prompt_edits: tuple[str, ...] = ()  # A1111's [from:to:when] and [a|b], read here as brackets and text

    @property
    def text(self) -> str:
        """What the tokenizer reads: the segments' text, brackets and weights gone."""
        return "".join(segment.text for segment in self.segments)

    @property
    def plain(self) -> bool:
        """Every weight 1: the networks see exactly the prompt `text`."""
        return all(segment.weight == 1.0 for segment in self.segments)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """The prompt's runs of text with their weights, exactly as A1111's
    `parse_prompt_attention` gives them (tests/render/data/a1111_attention.json holds its
    answers): runs of equal weight merged, a BREAK as ("BREAK", -1 times the brackets around
    it), and [("", 1.0)] for nothing. A lone backslash is dropped, as there. A weight that
    is no number (`:1.2.3)`) raises ValueError, as there."""
    return _merged([(BREAK if run.is_break else run.text, run.weight) for run in _weighted_runs(text)])


@dataclass
class _Run:
    text: str
    weight: float
    is_break: bool = False


def _weighted_runs(text: str) -> list[_Run]:
    """The runs of `text` as its brackets weigh them, unmerged; a BREAK is a run of its own."""
    runs: list[_Run] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def weigh_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            run.weight *= factor

    position = 0
    while position < len(text):
        char = text[position]
        explicit = _EXPLICIT_WEIGHT.match(text, position) if char == ":" else None
        if char == "\\":
            escaped = text[position + 1 : position + 2]
            literal = escaped if escaped in _ESCAPABLE else ""
            runs.append(_Run(literal, 1.0))
            position += 1 + len(literal)
            continue
        if char == "(":
            open_round.append(len(runs))
        elif char == "[":
            open_square.append(len(runs))
        elif explicit is not None and open_round:
            weigh_from(open_round.pop(), float(explicit.group(1)))
            position = explicit.end()
            continue
        elif char == ")" and open_round:
            weigh_from(open_round.pop(), ROUND_MULTIPLIER)
        elif char == "]" and open_square:
            weigh_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            end = _plain_run_end(text, position, explicit)
            for number, part in enumerate(_BREAK_SPLIT.split(text[position:end])):
                if number:
                    runs.append(_Run(BREAK, BREAK_WEIGHT, is_break=True))
                runs.append(_Run(part, 1.0))
            position = end
            continue
        position += 1
    for start in open_round:
        weigh_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        weigh_from(start, SQUARE_MULTIPLIER)
    return runs


def _plain_run_end(text: str, position: int, explicit: re.Match[str] | None) -> int:
    """Where the text token starting at `position` ends: a weight with no bracket open is
    text as a whole, a stray bracket or colon is one character, else up to the next stop."""
    if explicit is not None:
        return explicit.end()
    if text[position] in _STOPS:
        return position + 1
    end = position
    while end < len(text) and text[end] not in _STOPS:
        end += 1
    return end


def _merged(runs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Neighbouring runs of equal weight as one."""
    merged: list[tuple[str, float]] = []
    for text, weight in runs:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged or [("", 1.0)]


def strip_tags(text: str) -> tuple[str, tuple[PromptTag, ...]]:
    """The prompt without its `<kind:args>` tags, and the tags in order. Whatever reads
    tags (LoRA) takes them from here; the rest of the prompt never sees them."""
    tags = tuple(PromptTag(m.group(1), tuple((m.group(2) or "").split(":")) if m.group(2) else (), m.group(0)) for m in _TAG.finditer(text))
    return (_TAG.sub("", text) if tags else text), tags


def read_prompt(text: str) -> WeightedPrompt:
    """A prompt (one component of an AND composition) in A1111's language. Tags and BREAK
    are removed (a BREAK leaves a space) and listed in `removed`."""
    untagged, tags = strip_tags(text)
    runs = _weighted_runs(untagged)
    merged = _merged([(" ", 1.0) if run.is_break else (run.text, run.weight) for run in runs])
    removed = tuple(tag.text for tag in tags) + ((BREAK,) if any(run.is_break for run in runs) else ())
    edits = tuple(match.group(0) for match in _PROMPT_EDITS.finditer(untagged))
    return WeightedPrompt(tuple(Segment(part, weight) for part, weight in merged), removed, edits)


def spoken_text(text: str, literal: bool = False) -> str:
    """The words of a prompt for what reads text without weights (a CLIP judge, CLIP
    guidance): the syntax removed, unless `literal`."""
    return text if literal else read_prompt(text).text


def prompt_warning(prompt: str, row: WeightedPrompt) -> str | None:
    """The one line that says what a prompt lost, and what glide reads otherwise than A1111
    does; None when neither."""
    shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    said = []
    if row.removed:
        said.append(f"ignored {', '.join(row.removed)} in {shown!r}: glide reads no extra networks and one token context")
    if row.prompt_edits:
        where = "" if row.removed else f" in {shown!r}"
        said.append(f"read {', '.join(row.prompt_edits)}{where} as brackets and text: glide does not change the prompt between"
                    " steps as A1111's [from:to:when] and [a|b] do")
    return "; ".join(said) + " (docs/prompts.md)" if said else None
