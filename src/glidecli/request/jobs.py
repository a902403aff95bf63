"""Prompts and seeds into jobs: picture i of every prompt uses seed + i, and indexes run over
the whole request (prompt k, picture i -> k * num + i)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from ..diffusion.vocabulary import MAX_SEED
from .commands import PromptLanguage
from .values import RequestError
from .wildcards import Wildcards, wildcards_folder

if TYPE_CHECKING:
    from ..render.engine import Job

# More pictures than this in one request is a typo rather than a plan: the jobs alone would
# take gigabytes before the first picture (a million take about 1 GB and 13 s to plan).
MAX_IMAGES = 1_000_000


def check_image_count(count: int, option: str) -> None:
    if count > MAX_IMAGES:
        raise RequestError(f"{count} pictures in one command is more than {MAX_IMAGES}; split the run into several commands", option)


def check_text(text: str, what: str) -> None:
    """Bytes a terminal could not decode reach Python as lone surrogates: refuse them here,
    not in the tokenizer after the models have loaded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{what} {text!r} holds bytes that are not UTF-8 text") from None


def check_prompt(prompt: str, composable: bool = True, command: str = "", literal: bool = False) -> None:
    """A prompt's text, its AND composition (render/composition.py): refused where a
    command cannot compose (`composable` False), and its weights (render/prompt_syntax.py)
    unless `literal`."""
    from ..render.composition import CompositionError, is_composed, parse_prompt
    from ..render.prompt_syntax import read_prompt

    check_text(prompt, "the prompt")
    try:
        components = parse_prompt(prompt)
    except CompositionError as error:
        raise RequestError(str(error)) from None
    if not composable and is_composed(components):
        raise RequestError(f"{command} takes one prompt: AND composition (or a weight) works with generate, inpaint and outpaint; write \\AND for a literal AND")
    for component in components if not literal else ():
        try:
            read_prompt(component.text)
        except ValueError:
            raise RequestError(f"a weight in {component.text!r} is not a number (write (word:1.2); \\( is a plain bracket)") from None


A1111_LANGUAGE = PromptLanguage()  # A1111's language and emphasis, wildcards from $GLIDE_WILDCARDS


def make_jobs(
    prompts: Sequence[str], num: int, seed: int | None, negative: str | None, shard: str | None = None, *,
    composable: bool = True, command: str = "", language: PromptLanguage = A1111_LANGUAGE,
) -> list[Job]:
    """`num` pictures per prompt from `seed` on. A random seed is drawn by rank 0 of a
    torchrun launch for all ranks; the tasks of a job array must be given one. Prompts joined
    with AND are refused unless `composable`. Unless the `language` is literal, each picture's
    prompt is its template with the wildcards resolved from its seed (request/wildcards.py;
    `language.wildcards`: the folder of __name__'s files, default $GLIDE_WILDCARDS)."""
    from ..render.engine import Job
    from ..render.shard import current_split, from_main

    if not prompts:
        raise RequestError("missing PROMPT (or --prompts-file FILE)")
    for prompt in prompts:
        check_text(prompt, "the prompt")
    if negative is not None:
        check_text(negative, "--negative")
    check_image_count(num * len(prompts), "--num")
    if seed is None:
        split = current_split(shard)
        if split.shard is not None:
            raise RequestError("--shard needs --seed: the tasks of a job array must render with the same seeds")
        seed = cast(int, from_main(split.ranks, secrets.randbelow(MAX_SEED - num + 2)))  # rank 0's draw, an int
    elif seed + num - 1 > MAX_SEED:
        raise RequestError(f"{seed} + {num} images would pass the largest seed, {MAX_SEED}", "--seed")
    literal = language.literal_prompt
    resolver = Wildcards(wildcards_folder(language.wildcards)) if not literal else None
    jobs = []
    for k, template in enumerate(prompts):
        for i in range(num):
            prompt = resolver.resolve(template, seed + i) if resolver is not None else template
            changed = template if prompt != template else None
            jobs.append(Job(prompt, seed + i, k * num + i, negative, literal=literal, template=changed, emphasis=language.emphasis))
    for prompt in {job.prompt for job in jobs}:
        check_prompt(prompt, composable, command, literal)
    return jobs
