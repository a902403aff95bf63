"""`glide vary --toward/--away/--amount` (text diffs) and `--keep-layout` on vary and blend, end
to end on tiny random unCLIP networks (helpers/tiny_unclip.py), offline: files, records,
replay, animations and one-line refusals. What the edits do to pictures is measured on the
trained shapes unCLIP (benchmarks/unclip_text_diff.py, tests/render/test_unclip_edits.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glidecli.files.pngfile import read_png_metadata, write_png
from glidecli.request.building import from_mapping
from glidecli.request.commands import VaryRequest
from glidecli.request.values import RequestError
from helpers.glide_cli import assert_one_error_line, invoker_with_weights

FAST = ["--steps", "3", "--size", "16", "--quiet"]
TOWARD = "a green cube"


@pytest.fixture
def glide(capsys, monkeypatch, tmp_path, tiny_unclip_manifest):
    return invoker_with_weights(capsys, monkeypatch, tmp_path, tiny_unclip_manifest)


@pytest.fixture
def pictures(tmp_path):
    """A square PNG recording the prompt 'a red cube', a square JPEG (no record), a tall PNG."""
    rng = np.random.default_rng(0)
    captioned, plain, tall = tmp_path / "captioned.png", tmp_path / "plain.jpg", tmp_path / "tall.png"
    write_png(Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)), captioned, {"prompt": "a red cube", "command": "unclip"})
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(plain)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tall)
    return {"captioned": captioned, "plain": plain, "tall": tall}


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_amounts_give_one_picture_each_and_record_the_texts(glide, tmp_path, pictures):
    result = glide("vary", pictures["captioned"], "--toward", TOWARD, "--amount", "0,0.5,1", "--seed", "4", "--out", tmp_path / "diff", "--json", *FAST)
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [r["settings"]["amount"] for r in records] == [0.0, 0.5, 1.0] and {r["seed"] for r in records} == {4}
    meta = read_png_metadata(records[1]["path"])
    assert (meta["toward"], meta["away"], meta["amount"]) == (TOWARD, "a red cube", 0.5)  # --away: the recorded prompt
    # Amount 0 is the picture's own embedding: the plain variation with the same seed.
    plain = glide("vary", pictures["captioned"], "--seed", "4", "--out", tmp_path / "plain", *FAST)
    assert np.abs(pixels(records[0]["path"]) - pixels(plain.paths[0])).max() <= 1
    assert not np.array_equal(pixels(records[0]["path"]), pixels(records[2]["path"]))
    away = glide("vary", pictures["plain"], "--toward", TOWARD, "--away", "a blue ball", "--seed", "4", "--out", tmp_path / "away", *FAST)
    assert away.code == 0, away.err
    assert read_png_metadata(away.paths[0])["away"] == "a blue ball" and read_png_metadata(away.paths[0])["amount"] == 0.5


def test_a_picture_replays_with_its_texts_amount_and_layout(glide, tmp_path, pictures):
    made = glide("vary", pictures["captioned"], "--toward", TOWARD, "--amount", "0.25,0.75", "--keep-layout", "--layout-refine", "1", "--seed", "2",
                 "--out", tmp_path / "made", *FAST)
    assert made.code == 0, made.err
    meta = read_png_metadata(made.paths[1])
    assert meta["keep_layout"] is True and meta["layout_refine"] == 1 and meta["decoder_sampler"] == "ddim" and meta["amount"] == 0.75
    info = glide("info", "--command", made.paths[1])
    assert info.code == 0, info.err
    assert "--toward 'a green cube'" in info.out and "--away 'a red cube'" in info.out
    assert "--amount 0.75" in info.out and "--keep-layout" in info.out and "--layout-refine 1" in info.out and "--sampler ddim" in info.out
    again = glide("vary", "--from", made.paths[1], "--out", tmp_path / "again", "--quiet")
    assert again.code == 0, again.err
    assert "map onto no option" not in again.err
    assert again.paths[0].name == made.paths[1].name
    assert np.array_equal(pixels(again.paths[0]), pixels(made.paths[1]))


def test_several_amounts_animate(glide, tmp_path, pictures):
    result = glide("vary", pictures["captioned"], "--toward", TOWARD, "--amount", "0,0.5,1", "--animate", "gif", "--seed", "1",
                   "--out", tmp_path / "strip", *FAST)
    assert result.code == 0, result.err
    animation = result.paths[-1]
    assert animation.suffix == ".gif"
    with Image.open(animation) as gif:
        assert gif.n_frames == 3


def test_keep_layout_decodes_the_same_picture_from_every_seed(glide, tmp_path, pictures):
    result = glide("vary", pictures["captioned"], "-n", "2", "--keep-layout", "--seed", "1", "--out", tmp_path / "kept", "--steps", "3", "--size", "16")
    assert result.code == 0, result.err
    assert "the 2 pictures of each amount or mix are the same picture" in " ".join(result.err.split())
    assert np.array_equal(pixels(result.paths[0]), pixels(result.paths[1]))
    blend = glide("blend", pictures["captioned"], pictures["plain"], "--frames", "2", "--keep-layout", "--seed", "1", "--out", tmp_path / "blend", *FAST)
    assert blend.code == 0, blend.err
    metas = [read_png_metadata(path) for path in blend.paths]
    assert all(m["keep_layout"] is True for m in metas) and [m["mix"] for m in metas] == [0.0, 1.0]
    # Mix 0 is picture A's embedding, decoded from A's inversion: the variation keeping its layout.
    assert np.abs(pixels(blend.paths[0]) - pixels(result.paths[0])).max() <= 1


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["vary", "{plain}", "--toward", TOWARD], 2, "records no prompt for --toward"),
        (["vary", "{captioned}", "--toward", TOWARD, "--amount", "1.5"], 2, "'--amount': 1.5 is not in the range 0 to 1"),
        (["vary", "{captioned}", "--toward", TOWARD, "--amount", "0,-0.1"], 2, "--amount"),
        (["vary", "{captioned}", "--toward", TOWARD, "--amount", "half"], 2, "comma-separated list of numbers"),
        (["vary", "{captioned}", "--amount", "0.5"], 2, "give --toward"),
        (["vary", "{captioned}", "--away", "a red cube"], 2, "give --toward"),
        (["vary", "{captioned}", "--toward", " "], 2, "--toward"),
        (["vary", "{captioned}", "--toward", TOWARD, "--animate", "gif"], 2, "several amounts"),
        (["vary", "{tall}", "--keep-layout"], 2, "56x40: crop it square"),
        (["blend", "{tall}", "{captioned}", "--keep-layout"], 2, "crop it square"),
        (["vary", "{captioned}", "--keep-layout", "--best-of", "2", "--prompt", "x"], 2, "--best-of"),
        (["vary", "{captioned}", "--keep-layout", "--sampler", "plms"], 2, "--sampler"),
        (["vary", "{captioned}", "--layout-refine", "1"], 2, "give --keep-layout"),
        (["blend", "{captioned}", "{plain}", "--keep-layout", "--layout-refine", "21"], 2, "--layout-refine"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(glide, tmp_path, pictures, args, code, fragment):
    out = tmp_path / "never"
    result = glide(*[a.format(**pictures) for a in args], "--out", out, "--quiet")
    assert_one_error_line(result, code, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_the_server_reads_the_new_options_by_their_names(tmp_path):
    """serve/native.py builds requests with from_mapping: JSON lists and numbers for --amount."""
    image = {"image": tmp_path / "upload.png"}
    request = from_mapping(VaryRequest, {"toward": TOWARD, "away": "a red cube", "amount": [0, 0.5], "keep-layout": True}, image)
    assert (request.toward, request.away, request.amount, request.keep_layout) == (TOWARD, "a red cube", (0.0, 0.5), True)
    assert from_mapping(VaryRequest, {"amount": 0.25}, image).amount == (0.25,)
    assert from_mapping(VaryRequest, {"amount": "0.25, 1"}, image).amount == (0.25, 1.0)
    with pytest.raises(RequestError, match="not in the range 0 to 1"):
        from_mapping(VaryRequest, {"amount": [0.5, 2]}, image)
    with pytest.raises(RequestError, match="comma-separated"):
        from_mapping(VaryRequest, {"amount": [True]}, image)
