"""A1111's prompt language through the request layer and the CLI: wildcards resolved from
each picture's seed (request/wildcards.py), the template and the resolved prompt recorded,
`--from` replaying the resolved text, `glide info` showing both, `--literal-prompt`, and
one-line errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from glidecli.files.pngfile import read_png_metadata
from glidecli.request.commands import PromptLanguage
from glidecli.request.jobs import make_jobs
from glidecli.request.values import RequestError
from glidecli.request.wildcards import WILDCARDS_ENV, Wildcards
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

SHAPES = ["--weights", str(MODELS / "weights.toml"), "--quiet", "--model", "shapes", "--size", "32", "--steps", "2"]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "colour.txt").write_text("# colours\nred\n\ngreen\nblue\n", encoding="utf-8")
    (tmp_path / "cards" / "shape.txt").write_text("{big|small} circle\n__colour__ square\n", encoding="utf-8")
    (tmp_path / "cards" / "sub").mkdir()
    (tmp_path / "cards" / "sub" / "loop.txt").write_text("__sub/loop__\n", encoding="utf-8")
    return tmp_path / "cards"


def test_the_same_seed_picks_the_same_and_every_option_comes_up(folder):
    cards = Wildcards(folder)
    template = "a {red|green|blue} __shape__ on a {white|black} background"
    assert cards.resolve(template, 7) == Wildcards(folder).resolve(template, 7)
    made = {seed: cards.resolve(template, seed) for seed in range(60)}
    assert all("{" not in text and "__" not in text for text in made.values())
    colours = Counter(text.split()[1] for text in made.values())
    assert set(colours) == {"red", "green", "blue"} and min(colours.values()) >= 8
    shapes = {" ".join(text.split()[2:-4]) for text in made.values()}
    assert {"big circle", "small circle", "red square", "green square", "blue square"} <= shapes  # nested in the file
    assert len(set(made.values())) > 20


def test_counts_ranges_joiners_nesting_and_escapes(folder):
    cards = Wildcards(folder)
    for seed in range(30):
        two = cards.resolve("{2$$red|green|blue}", seed).split(", ")
        assert len(two) == 2 and len(set(two)) == 2 and set(two) <= {"red", "green", "blue"}
        some = cards.resolve("{1-3$$ and $$a|b|c}", seed).split(" and ")
        assert 1 <= len(some) <= 3 and len(set(some)) == len(some)
        nested = cards.resolve("{a {big|small} dog|{one|two} cats}", seed)
        assert nested in {"a big dog", "a small dog", "one cats", "two cats"}
    assert cards.resolve("{5$$x|y}", 1) in ("x, y", "y, x")  # more than there are: all of them
    assert cards.resolve("a \\{literal\\} {b|b} \\| c", 3) == "a \\{literal\\} b \\| c"
    assert cards.resolve("a {lone brace", 3) == "a {lone brace"
    assert cards.resolve("snake_case and __init", 3) == "snake_case and __init"


def test_missing_files_and_folders_are_one_line_errors(folder, monkeypatch):
    with pytest.raises(RequestError, match=r"wildcard file not found: .*animal\.txt"):
        Wildcards(folder).resolve("a __animal__", 1)
    monkeypatch.delenv(WILDCARDS_ENV, raising=False)
    with pytest.raises(RequestError, match=r"__colour__ reads colour\.txt .*--wildcards DIR"):
        make_jobs(["a __colour__ hat"], 1, 1, None)
    with pytest.raises(RequestError, match="nest more than"):
        Wildcards(folder).resolve("__sub/loop__", 1)


def test_jobs_carry_the_resolved_prompt_and_the_template(folder, monkeypatch):
    monkeypatch.setenv(WILDCARDS_ENV, str(folder))  # the default folder
    jobs = make_jobs(["a __colour__ hat", "plain"], 3, 10, None)
    assert [job.template for job in jobs] == ["a __colour__ hat"] * 3 + [None] * 3
    assert all(job.prompt.split()[1] in ("red", "green", "blue") for job in jobs[:3])
    assert [job.prompt for job in jobs] == [job.prompt for job in make_jobs(["a __colour__ hat", "plain"], 3, 10, None)]
    literal = make_jobs(["a __colour__ (hat:2)"], 1, 10, None, language=PromptLanguage(literal_prompt=True))
    assert literal[0].prompt == "a __colour__ (hat:2)" and literal[0].literal and literal[0].template is None
    with pytest.raises(RequestError, match="is not a number"):
        make_jobs(["a (hat:1.2.3)"], 1, 10, None)


@pytest.fixture
def glide(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(WILDCARDS_ENV, raising=False)
    return invoker(capsys, monkeypatch)


def test_generate_records_the_template_and_from_replays_the_resolved_prompt(glide, folder):
    made = glide("generate", "a {big|small} __colour__ circle", "--wildcards", folder, "-n", "3", "--seed", "4", *SHAPES, "--out", "made")
    assert made.code == 0, made.err
    records = [read_png_metadata(path) for path in made.paths]
    assert all(r["prompt_template"] == "a {big|small} __colour__ circle" and "{" not in r["prompt"] for r in records)
    again = glide("generate", "a {big|small} __colour__ circle", "--wildcards", folder, "-n", "3", "--seed", "4", *SHAPES, "--out", "again")
    assert [read_png_metadata(path)["prompt"] for path in again.paths] == [r["prompt"] for r in records]
    shown = glide("info", made.paths[1])
    assert shown.code == 0
    lines = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in shown.out.splitlines() if "  " in line}
    assert lines["prompt"] == records[1]["prompt"] and lines["prompt template"] == "a {big|small} __colour__ circle"
    replay = glide("generate", "--from", made.paths[1], "--weights", MODELS / "weights.toml", "--quiet", "--out", "replay")
    assert replay.code == 0, replay.err
    assert read_png_metadata(replay.paths[0])["prompt"] == records[1]["prompt"]
    assert np.array_equal(np.asarray(Image.open(replay.paths[0])), np.asarray(Image.open(made.paths[1])))


def test_the_prompts_file_reads_the_language(glide, folder, tmp_path):
    (tmp_path / "prompts.txt").write_text("a __colour__ circle\na ((red)) square\n", encoding="utf-8")
    made = glide("generate", "--prompts-file", tmp_path / "prompts.txt", "--wildcards", folder, "--seed", "2", *SHAPES, "--json")
    assert made.code == 0, made.err
    records = [json.loads(line)["settings"] for line in made.out.splitlines()]
    assert records[0]["prompt_template"] == "a __colour__ circle" and records[0]["prompt"] != "a __colour__ circle"
    assert records[1]["prompt"] == "a ((red)) square" and "prompt_template" not in records[1]


def test_literal_prompt_turns_the_language_off_and_is_replayed(glide):
    syntax = glide("generate", "a ((red)) circle", "--seed", "3", *SHAPES, "--out", "syntax")
    plain = glide("generate", "a ((red)) circle", "--literal-prompt", "--seed", "3", *SHAPES, "--out", "literal")
    assert syntax.code == 0 and plain.code == 0, (syntax.err, plain.err)
    assert read_png_metadata(plain.paths[0])["literal_prompt"] is True
    assert "literal_prompt" not in read_png_metadata(syntax.paths[0])
    assert not np.array_equal(np.asarray(Image.open(syntax.paths[0])), np.asarray(Image.open(plain.paths[0])))
    replay = glide("generate", "--from", plain.paths[0], "--weights", MODELS / "weights.toml", "--quiet", "--out", "replay")
    assert replay.code == 0, replay.err
    assert replay.paths[0].read_bytes() == plain.paths[0].read_bytes()


def test_ignored_syntax_is_one_warning_line(glide):
    made = glide("generate", "a red circle BREAK <hypernet:x:1>", "--seed", "3", *SHAPES, "--out", "w")
    assert made.code == 0, made.err
    warnings = [line for line in made.err.splitlines() if "ignored" in line]
    assert len(warnings) == 1 and "BREAK" in warnings[0] and "<hypernet:x:1>" in warnings[0]


def test_a1111_prompt_editing_is_read_as_text_with_one_warning_line(glide):
    """[from:to:when] and [a|b] change A1111's prompt between steps; glide draws one text, so it
    reads them as brackets and text and says so once, naming them; --literal-prompt is silent."""
    made = glide("generate", "a [red:green:0.5] circle on a [black|white] background", "--seed", "3", *SHAPES, "--out", "e")
    assert made.code == 0, made.err
    warnings = [line for line in made.err.splitlines() if "as brackets and text" in line]
    assert len(warnings) == 1 and "[red:green:0.5], [black|white]" in warnings[0] and "docs/prompts.md" in warnings[0]
    literal = glide("generate", "a [red:green:0.5] circle", "--literal-prompt", "--seed", "3", *SHAPES, "--out", "l")
    assert literal.code == 0 and "as brackets and text" not in literal.err


def test_bad_prompts_are_one_line_errors(glide, folder):
    assert_one_error_line(glide("generate", "a __animal__", "--wildcards", folder, *SHAPES), 2, "wildcard file not found", "animal.txt")
    assert_one_error_line(glide("generate", "a __animal__", *SHAPES), 2, "__animal__", "--wildcards DIR")
    assert_one_error_line(glide("generate", "a (red:1.2.3) hat", *SHAPES), 2, "is not a number")
