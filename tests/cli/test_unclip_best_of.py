"""--best-of N on `glide unclip`, `glide vary` and `glide blend`, on tiny random unCLIP networks
(helpers/tiny_unclip.py) judged by a tiny random open_clip model (helpers/tiny.py): the pick,
its recorded scores and seeds, the winner-only super-resolution, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidecli.files.pngfile import read_png_metadata
from glidecli.render.ranking import candidate_seed
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.tiny import tiny_open_clip

PROMPT = "a red cube"
FAST = ["--prior-steps", "3", "--steps", "3", "--quiet"]
FAST_DECODE = ["--steps", "3", "--quiet"]
DECODER_ONLY = ["--size", "16"]  # the tiny decoder's size: no super-resolution


@pytest.fixture(scope="module")
def judge(tmp_path_factory) -> str:
    return tiny_open_clip(tmp_path_factory.mktemp("open_clip"), "GlidecliTestUnclipJudge", seed=1)[0]


@pytest.fixture
def glide(capsys, monkeypatch, tmp_path, tiny_unclip_manifest):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLIDE_WEIGHTS", str(tiny_unclip_manifest))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return invoker(capsys, monkeypatch)


@pytest.fixture
def picture(tmp_path) -> Path:
    path = tmp_path / "source.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def check_pick(glide, record: dict, count: int, judge: str, prompt: str) -> dict:
    """The recorded pick is the best candidate, its seed the documented one; returns the settings."""
    settings = record["settings"]
    scores = settings["candidate_scores"]
    assert len(scores) == count and settings["best_of"] == count and settings["rank_model"] == judge
    assert all(settings["rank_score"] >= score for score in scores)
    assert settings["rank_score"] == scores[settings["candidate"]]
    assert settings["candidate_seed"] == candidate_seed(record["seed"], settings["candidate"])
    meta = read_png_metadata(Path(record["path"]))
    assert (meta["rank_score"], meta["candidate"], meta["candidate_scores"]) == (settings["rank_score"], settings["candidate"], scores)
    return settings


def test_unclip_best_of_at_the_decoders_size_scores_the_written_picture(glide, tmp_path, judge):
    result = glide("unclip", PROMPT, *FAST, *DECODER_ONLY, "--seed", 7, "-n", 2, "--batch-size", 2, "--best-of", 3,
                   "--rank-model", judge, "--json", "--out", tmp_path / "best")
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [record["seed"] for record in records] == [7, 8]
    for record in records:
        settings = check_pick(glide, record, 3, judge, PROMPT)
        # At the decoder's size the file is what was ranked: glide score agrees.
        scored = glide("score", record["path"], "--prompt", PROMPT, "--rank-model", judge, "--json")
        assert scored.code == 0, scored.err
        assert json.loads(scored.out)["score"] == pytest.approx(settings["rank_score"], abs=1e-3)
        # The winner is what its candidate seed gives alone (candidates ran two at a time:
        # batched kernels may round differently, at most one 8-bit level).
        alone = glide("unclip", PROMPT, *FAST, *DECODER_ONLY, "--seed", settings["candidate_seed"], "--out", tmp_path / f"a{record['seed']}")
        assert np.abs(pixels(alone.paths[0]) - pixels(record["path"])).max() <= 1


def test_unclip_best_of_super_resolves_the_winner_only(glide, tmp_path, judge):
    best = glide("unclip", PROMPT, *FAST, "--seed", 3, "--best-of", 3, "--rank-model", judge, "--out", tmp_path / "b")
    assert best.code == 0, best.err
    meta = read_png_metadata(best.paths[0])
    assert Image.open(best.paths[0]).size == (32, 32) and meta["sr_model"] == "karlo-sr"
    # The SR continues the winner's own noise: bit for bit the picture of its seed alone.
    alone = glide("unclip", PROMPT, *FAST, "--seed", meta["candidate_seed"], "--out", tmp_path / "a")
    assert np.array_equal(pixels(alone.paths[0]), pixels(best.paths[0]))
    one = glide("unclip", PROMPT, *FAST, "--seed", 3, "--best-of", 1, "--rank-model", judge, "--out", tmp_path / "one")
    plain = glide("unclip", PROMPT, *FAST, "--seed", 3, "--out", tmp_path / "plain")
    assert one.paths[0].read_bytes() == plain.paths[0].read_bytes()
    assert "best_of" not in read_png_metadata(one.paths[0])


def test_vary_and_blend_best_of_rank_against_the_prompt(glide, tmp_path, judge, picture):
    # Seed 5: with these tiny networks a later candidate wins, so "alone" below is not seed 5's own.
    vary = glide("vary", picture, "--prompt", PROMPT, *FAST_DECODE, "--seed", 5, "--best-of", 2, "--rank-model", judge,
                 "--json", "--out", tmp_path / "vary")
    assert vary.code == 0, vary.err
    settings = check_pick(glide, json.loads(vary.out), 2, judge, PROMPT)
    alone = glide("vary", picture, "--prompt", PROMPT, *FAST_DECODE, "--seed", settings["candidate_seed"], "--out", tmp_path / "va")
    assert np.array_equal(pixels(alone.paths[0]), pixels(json.loads(vary.out)["path"]))
    blend = glide("blend", picture, picture, "--mix", "0.25", "--prompt", PROMPT, *FAST_DECODE, *DECODER_ONLY, "--seed", 4,
                  "--best-of", 2, "--rank-model", judge, "--json", "--out", tmp_path / "blend")
    assert blend.code == 0, blend.err
    record = json.loads(blend.out)
    settings = check_pick(glide, record, 2, judge, PROMPT)
    assert settings["mix"] == 0.25
    scored = glide("score", record["path"], "--prompt", PROMPT, "--rank-model", judge, "--json")
    assert json.loads(scored.out)["score"] == pytest.approx(settings["rank_score"], abs=1e-3)


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["unclip", PROMPT, "--best-of", "0"], 2, "--best-of"),
        (["unclip", PROMPT, "--best-of", "65"], 2, "--best-of"),
        (["vary", "{picture}", "--best-of", "2"], 2, "--prompt"),
        (["blend", "{picture}", "{picture}", "--frames", "3", "--prompt", "x", "--best-of", "2"], 2, "--frames"),
        (["unclip", PROMPT, "--best-of", "2", "--rank-model", "NoSuchModel-B-32"], 1, "NoSuchModel-B-32"),
        (["vary", "{picture}", "--prompt", "x", "--best-of", "2", "--rank-model", "noised-clip"], 1, "clip-image"),
    ],
)
def test_bad_best_of_is_one_line_and_writes_nothing(glide, tmp_path, picture, args, code, fragment):
    out = tmp_path / "never"
    result = glide(*[str(a).format(picture=picture) for a in args], *FAST_DECODE, "--out", out)
    assert_one_error_line(result, code, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_the_default_rank_model_is_generates():
    import inspect

    from glidecli.cli import generate as cli_generate
    from glidecli.cli import unclip as cli_unclip
    from glidecli.files.manifest import load_manifest, packaged_manifest_path
    from glidecli.files.roles import Role
    from glidecli.render.defaults import RANK_MODEL as DEFAULT_RANK_MODEL

    # the judge is the manifest's rank role (None on the command line), the same for every command
    for command in (cli_unclip.unclip, cli_unclip.vary, cli_unclip.blend, cli_generate.generate):
        assert inspect.signature(command).parameters["rank_model"].default is None
        assert inspect.signature(command).parameters["best_of"].default == 1
    assert load_manifest(packaged_manifest_path()).roles()[Role.RANK] == DEFAULT_RANK_MODEL
