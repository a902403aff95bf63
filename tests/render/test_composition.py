"""Prompts joined with AND (render/composition.py) on the shapes model: the syntax, plain
generation bit for bit for one component of weight 1, one network call per step for all
components, the record in the PNG, negation steering away from a colour, and the commands
that refuse composition."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glidecli.files.manifest import load_manifest
from glidecli.files.pngfile import read_png_metadata
from glidecli.render.composition import MAX_COMPONENTS, Component, CompositionError, parse_prompt
from glidecli.render.engine import DEFAULT_BASE, Job, RenderOptions, Session, Stage, render_generate
from glidecli.train.shapes import scene_colours
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS

BASE = Stage("shapes", DEFAULT_BASE.sampler, scale=3.0)


@pytest.mark.parametrize("prompt, components", [
    ("a red circle", [Component("a red circle")]),
    ("  a red circle ", [Component("  a red circle ")]),  # a plain prompt is read as written
    ("a red circle AND a blue background", [Component("a red circle"), Component("a blue background")]),
    ("a cat :1.2 AND a dog", [Component("a cat", 1.2), Component("a dog")]),
    ("a cat AND blurry : -0.5", [Component("a cat"), Component("blurry", -0.5)]),
    ("a cat :-1", [Component("a cat", -1.0)]),
    ("rock \\AND roll", [Component("rock AND roll")]),
    ("a cat and a dog", [Component("a cat and a dog")]),
    ("photo: closeup", [Component("photo: closeup")]),
    ("ratio \\: 16 AND x", [Component("ratio : 16"), Component("x")]),
])
def test_the_syntax(prompt, components):
    assert parse_prompt(prompt) == components


@pytest.mark.parametrize("prompt, fragment", [
    ("a cat AND", "component 2 of the prompt is empty"),
    ("AND a cat", "component 1 of the prompt is empty"),
    ("a cat AND  AND a dog", "empty"),
    ("a cat :abc AND a dog", "the weight 'abc' of component 1 is not a number"),
    ("a cat :inf AND a dog", "not a finite number"),
    ("a cat :nan", "not a finite number"),
    (" AND ".join(["x"] * (MAX_COMPONENTS + 1)), f"at most {MAX_COMPONENTS}"),
])
def test_bad_compositions(prompt, fragment):
    with pytest.raises(CompositionError, match=fragment):
        parse_prompt(prompt)


@pytest.fixture(scope="module")
def session() -> Session:
    return Session(load_manifest(MODELS / "weights.toml"), device="cpu", dtype="fp32", offline=True)


def pixels(session, jobs, batch_size=None) -> list[np.ndarray]:
    done = render_generate(session, jobs, BASE, None, options=RenderOptions(batch_size=batch_size or len(jobs)))
    return [np.asarray(item.image) for item in done]


def test_one_component_of_weight_1_is_plain_generation(session):
    plain = pixels(session, [Job("a red circle on a blue background", seed, i) for i, seed in enumerate((3, 4))])
    weighted = pixels(session, [Job("a red circle on a blue background :1", seed, i) for i, seed in enumerate((3, 4))])
    assert all(np.array_equal(a, b) for a, b in zip(plain, weighted))
    # In a batch with a composed prompt, a plain prompt goes through the composed path: the same picture.
    mixed = pixels(session, [Job("a red circle on a blue background", 3, 0), Job("a red circle AND a blue background", 4, 1)])
    assert np.abs(mixed[0].astype(int) - plain[0]).max() <= 1


def test_all_components_and_the_unconditional_half_run_in_one_call_per_step(session):
    model = session.unet("shapes", "base")
    rows: list[int] = []
    hook = model.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    try:
        pixels(session, [Job("a red circle AND a blue background AND blurry :-0.5", 1, 0), Job("a green square", 2, 1)])
    finally:
        hook.remove()
    steps = len(DEFAULT_BASE.sampler.schedule("squaredcos_cap_v2"))
    assert len(rows) == steps  # one call per step (the solver makes one per step)
    assert set(rows) == {3 + 1 + 2}  # 3 components and 1 plain prompt, then an unconditional row per picture


def test_negation_steers_away_from_a_colour(session):
    seeds = range(8)
    prompt = "a circle on a blue background"
    plain = [scene_colours(p)[0] for p in pixels(session, [Job(prompt, s, s) for s in seeds])]
    negated = [scene_colours(p)[0] for p in pixels(session, [Job(f"{prompt} AND a green circle :-1", s, s) for s in seeds])]
    assert plain.count("green") >= 4 and negated.count("green") < plain.count("green") // 2, (plain, negated)


def test_the_png_records_the_components_and_glide_info_shows_them(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    glide = invoker(capsys, monkeypatch)
    made = glide("generate", "a red circle :1.5 AND a blue background", "--weights", MODELS / "weights.toml", "--model", "shapes",
                 "--upsample-model", "shapes-upsample", "--steps", "3", "--upsample-steps", "2", "--seed", "1", "--quiet")
    assert made.code == 0, made.err
    record = read_png_metadata(made.paths[0])
    assert record["components"] == [{"prompt": "a red circle", "weight": 1.5}, {"prompt": "a blue background", "weight": 1.0}]
    shown = glide("info", made.paths[0], "--json")
    assert json.loads(shown.out)["components"][0]["weight"] == 1.5


@pytest.mark.parametrize("args, code, fragment", [
    (["generate", "a cat AND", "--model", "shapes"], 2, "component 2 of the prompt is empty"),
    (["generate", "a cat :x AND a dog", "--model", "shapes"], 2, "the weight 'x' of component 1 is not a number"),
    (["clip-guide", "a cat AND a dog", "--model", "shapes"], 2, "clip-guide takes one prompt"),
    (["upsample", "{picture}", "a cat AND a dog", "--model", "shapes-upsample"], 2, "upsample takes one prompt"),
])
def test_commands_refuse_what_they_cannot_compose(tmp_path, capsys, monkeypatch, args, code, fragment):
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "p.png")
    monkeypatch.chdir(tmp_path)
    result = invoker(capsys, monkeypatch)(*[a.format(picture=tmp_path / "p.png") for a in args], "--weights", MODELS / "weights.toml", "--out", tmp_path / "o")
    assert_one_error_line(result, code, fragment)
    assert not (tmp_path / "o").exists()
