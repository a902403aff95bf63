"""Prompts joined with AND (Composable Diffusion, Liu et al. 2022, arXiv 2206.01714, first
shown on GLIDE): `a red circle :1.2 AND a blue background AND blurry :-0.5`.

Each component is a prompt with an optional weight (` :W`, default 1; a negative weight
steers away from it). Guidance sums the components' differences from the unconditional
prediction, all of them and the unconditional half in one batched network call per step:

    eps = eps(x | empty) + scale * sum_i w_i * (eps(x | c_i) - eps(x | empty))

One component of weight 1 is plain classifier-free guidance, bit for bit. `\\AND` is a
literal AND, and `\\:` a colon that starts no weight. Plain text only: no torch here, so
the request layer checks prompts before any model loads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

MAX_COMPONENTS = 8  # each costs a network row per step: 8 is already 9x a plain picture's calls

_SEPARATOR = re.compile(r"(?:(?<=\s)|^)AND(?=\s|$)")  # AND as a word of its own (\AND is text)
_WEIGHT = re.compile(r"(?<!\\)\s:\s*(\S+)\s*$|^:\s*(\S+)\s*$")


class CompositionError(ValueError):
    """A composed prompt no render can use; one line."""


@dataclass(frozen=True)
class Component:
    text: str
    weight: float = 1.0


def parse_prompt(prompt: str) -> list[Component]:
    """The prompt's components, with their weights. A prompt without AND is one component
    (a trailing numeric ` :W` still weighs it; other text after a colon is the prompt's own)."""
    parts = _SEPARATOR.split(prompt)
    composed = len(parts) > 1
    if len(parts) > MAX_COMPONENTS:
        raise CompositionError(f"the prompt has {len(parts)} components joined by AND; at most {MAX_COMPONENTS}")
    components = []
    for number, part in enumerate(parts, 1):
        text, weight, weighed = _weighed(part, number, composed)
        text = text.replace("\\AND", "AND").replace("\\:", ":")
        if composed or weighed:  # a plain prompt stays as written (its tokens, its picture)
            text = text.strip()
        if composed and not text:
            raise CompositionError(f"component {number} of the prompt is empty (nothing between its ANDs)")
        components.append(Component(text, weight))
    return components


def _weighed(part: str, number: int, composed: bool) -> tuple[str, float, bool]:
    """(the part without its weight, the weight, whether it had one)."""
    match = _WEIGHT.search(part)
    if match is None:
        return part, 1.0, False
    token = match.group(1) or match.group(2)
    if token.endswith(")"):  # '(red :1.2)': an emphasis's weight (render/prompt_syntax.py), not the component's
        return part, 1.0, False
    try:
        weight = float(token)
    except ValueError:
        if composed:
            raise CompositionError(f"the weight {token!r} of component {number} is not a number (write ' :1.5'; '\\:' is a plain colon)") from None
        return part, 1.0, False
    if not math.isfinite(weight):
        raise CompositionError(f"the weight {token!r} of component {number} is not a finite number")
    return part[: match.start()], weight, True


def is_composed(components: list[Component]) -> bool:
    """More than a plain prompt: several components, or one with a weight other than 1."""
    return len(components) > 1 or components[0].weight != 1.0


def plain_text(components: list[Component]) -> str:
    """What a stage that takes one text reads (the upsampler, a CLIP judge): the components
    that are drawn (positive weights), joined."""
    drawn = [c.text for c in components if c.weight > 0] or [components[0].text]
    return ", ".join(drawn)


def record(components: list[Component]) -> list[dict[str, Any]]:
    """The components as a PNG records them."""
    return [{"prompt": c.text, "weight": c.weight} for c in components]
