"""A1111's attention syntax (render/prompt_syntax.py): parity with A1111's own
`parse_prompt_attention` on a corpus of prompts, BREAK and tags removed, and no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glidecli.render.prompt_syntax import PromptTag, Segment, parse_attention, read_prompt, spoken_text, strip_tags

# Produced by running parse_prompt_attention of AUTOMATIC1111/stable-diffusion-webui
# (modules/prompt_parser.py, commit 0674fabd) outside this repository on generated prompts:
# nesting, escapes, unbalanced brackets, weights, BREAK. Prompts its parser raises on
# (a weight like ':.)') are not in it.
CORPUS = json.loads((Path(__file__).parent / "data" / "a1111_attention.json").read_text(encoding="utf-8"))


def test_the_corpus_is_large_and_varied():
    prompts = [entry["prompt"] for entry in CORPUS]
    assert len(set(prompts)) >= 200
    for needle in ("((", "[[", "\\(", "\\]", "\\\\", ":1.2)", "BREAK", "(unbalanced"):
        assert any(needle in prompt for prompt in prompts), needle
    assert any(prompt.count("(") != prompt.count(")") for prompt in prompts)


def test_every_prompt_of_the_corpus_parses_as_a1111_parses_it():
    wrong = [(entry["prompt"], entry["parsed"], parse_attention(entry["prompt"])) for entry in CORPUS
             if [[text, weight] for text, weight in parse_attention(entry["prompt"])] != entry["parsed"]]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("prompt, expected", [
    ("a (red:1.3) hat", [("a ", 1.0), ("red", 1.3), (" hat", 1.0)]),
    ("((sharp))", [("sharp", 1.1 * 1.1)]),
    ("[blurry]", [("blurry", 1 / 1.1)]),
    ("\\(escaped\\)", [("(escaped)", 1.0)]),
    ("a ) b ]", [("a ) b ]", 1.0)]),
])
def test_the_constructs(prompt, expected):
    assert parse_attention(prompt) == [(text, pytest.approx(weight)) for text, weight in expected]


def test_a_weight_that_is_no_number_raises_as_a1111s_does():
    with pytest.raises(ValueError):
        parse_attention("(a:1.2.3)")


def test_break_and_tags_are_removed_and_listed():
    prompt = read_prompt("a (red:1.5) hat BREAK on <lora:hats:0.8> a <hypernet:x> table")
    assert prompt.text == "a red hat on  a  table"
    assert prompt.segments[1] == Segment("red", 1.5)
    assert prompt.removed == ("<lora:hats:0.8>", "<hypernet:x>", "BREAK")
    assert not prompt.plain


def test_break_inside_brackets_is_removed_too():
    prompt = read_prompt("((a BREAK b))")
    assert prompt.text == "a b" and prompt.removed == ("BREAK",)
    assert [segment.weight for segment in prompt.segments] == [pytest.approx(1.21), 1.0, pytest.approx(1.21)]


def test_tags_are_found_by_one_small_function():
    text, tags = strip_tags("<lora:red-style:0.7> a cat <hypernet:x> <3")
    assert text == " a cat  <3"
    assert tags == (PromptTag("lora", ("red-style", "0.7"), "<lora:red-style:0.7>"), PromptTag("hypernet", ("x",), "<hypernet:x>"))
    assert strip_tags("a <b> c") == ("a  c", (PromptTag("b", (), "<b>"),))


def test_a_plain_prompt_reads_as_itself():
    for text in ("a red circle on a blue background", "", "  spaced  ", "photo: closeup", "a_b {not} |wild|"):
        prompt = read_prompt(text)
        assert prompt.plain and prompt.text == text and prompt.removed == ()


def test_all_weights_one_is_plain():
    prompt = read_prompt("a (red:1) hat (on:1)")
    assert prompt.plain and prompt.text == "a red hat on"


def test_spoken_text_drops_the_syntax_unless_literal():
    assert spoken_text("a ((red)) [hat]") == "a red hat"
    assert spoken_text("a ((red)) [hat]", literal=True) == "a ((red)) [hat]"


def test_the_parser_needs_no_torch():
    code = "import sys, glidecli.render.prompt_syntax, glidecli.request.wildcards; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize(
    "prompt, edits",
    [
        ("a [cat:dog:0.5] on a mat", ("[cat:dog:0.5]",)),  # from:to:when, a fraction of the steps
        ("[cat:10] hat", ("[cat:10]",)),  # to:when, a step
        ("a [cat::0.3]", ("[cat::0.3]",)),  # from::when
        ("a [ cat : dog : 4] and [x|y|z]", ("[ cat : dog : 4]", "[x|y|z]")),
        ("a [cat:dog:4 ]", ()),  # A1111's grammar takes no space after the step
        ("a [cat|]", ("[cat|]",)),
        ("a [red] hat", ()),  # de-emphasis
        ("a (red:1.2) hat", ()),  # emphasis
        ("a \\[x:1\\] y", ()),  # escaped brackets are text
        ("a [cat:dog]", ()),  # no step: de-emphasised text, in A1111 too
    ],
)
def test_a1111_prompt_editing_is_found(prompt, edits):
    assert read_prompt(prompt).prompt_edits == edits
