"""`<lora:NAME:WEIGHT>` tags in prompts (AUTOMATIC1111's spelling): each selects the manifest
adapter NAME (kind lora) at WEIGHT (default 1) and is removed from the text before the text
goes anywhere (tokenizer, record, file name). A tag's weight that is not a number is refused
here; a name that is no manifest adapter when the request is planned (request/lora.py)."""

from __future__ import annotations

import re

from .values import RequestError

# <lora:NAME> or <lora:NAME:WEIGHT>; the name holds no colon, angle bracket or path separator.
LORA_TAG = re.compile(r"<lora:([^:<>]*)(?::([^<>]*))?>", re.IGNORECASE)


def take_lora_tags(text: str) -> tuple[str, tuple[str, ...]]:
    """(the text without its lora tags, their NAME:WEIGHT specs in order). The spaces a tag
    leaves are folded, so "a <lora:x:1> cat" reads "a cat"."""
    specs: list[str] = []

    def take(match: re.Match[str]) -> str:
        name, weight = match.group(1).strip(), (match.group(2) or "1").strip()
        if not name or "/" in name or "\\" in name:
            raise RequestError(f"{match.group(0)!r} names no manifest adapter (a tag takes a name, not a path)", "PROMPT")
        try:
            float(weight)
        except ValueError:
            raise RequestError(f"the weight of {match.group(0)!r}, {weight!r}, is not a number", "PROMPT") from None
        specs.append(f"{name}:{weight}")
        return " "

    if "<" not in text:
        return text, ()
    cleaned = LORA_TAG.sub(take, text)
    if not specs:
        return text, ()
    return re.sub(r"\s{2,}", " ", cleaned).strip(), tuple(specs)


def take_prompts_tags(prompts: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The prompts without their tags, and every tag's spec once (adapters apply to the whole
    command, whichever prompt names them)."""
    cleaned, specs = [], []
    for prompt in prompts:
        text, found = take_lora_tags(prompt)
        cleaned.append(text)
        specs += [spec for spec in found if spec not in specs]
    return tuple(cleaned), tuple(specs)
