"""Commands that name no model take the manifest's roles (files/roles.py): on the shapes models
(models/weights.toml and its [defaults]) every command runs without --model, and a manifest
whose kinds are ambiguous falls back to the packaged names with the message it gave before."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from PIL import Image

from glidecli.files.manifest import toml_value
from glidecli.files.pngfile import read_png_metadata
from glidecli.nets.checkpoint import build_network, random_init_, save_network
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS
from helpers.tiny import TINY_CLIP

SHAPES = ["--weights", str(MODELS / "weights.toml"), "--quiet"]


@pytest.fixture
def glide(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)
    array = np.zeros((32, 32, 4), np.uint8)
    array[:] = (30, 60, 200, 255)
    array[8:24, 8:24] = (220, 30, 30, 255)
    array[4:12, 4:12, 3] = 0  # a transparent corner: what inpaint repaints
    Image.fromarray(array).save("p.png")
    return invoker(capsys, monkeypatch)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_takes_the_shapes_set_and_draws_what_the_named_models_draw(glide):
    args = ["generate", "a red circle", "--steps", "2", "--upsample-steps", "2", "--seed", "3", *SHAPES]
    unnamed = glide(*args, "--out", "unnamed")
    named = glide(*args, "--model", "shapes", "--upsample-model", "shapes-upsample", "--out", "named")
    assert unnamed.code == named.code == 0, unnamed.err + named.err
    meta = read_png_metadata(unnamed.paths[0])
    assert (meta["model"], meta["upsample_model"], meta["size"]) == ("shapes", "shapes-upsample", 64)
    assert np.array_equal(pixels(unnamed.paths[0]), pixels(named.paths[0]))
    # the command line that makes it again names the models (they are not the packaged defaults)
    assert "--model shapes --upsample-model shapes-upsample" in glide("info", "--command", unnamed.paths[0]).out


def test_inpaint_outpaint_and_upsample_take_their_roles(glide):
    inpainted = glide("inpaint", "p.png", "a green square", "--steps", "2", "--seed", "1", "--out", "i", *SHAPES)
    assert inpainted.code == 0, inpainted.err
    meta = read_png_metadata(inpainted.paths[0])
    # no inpainting upsampler in the shapes set: the base model's 32x32, as with --model shapes-inpaint
    assert meta["model"] == "shapes-inpaint" and "upsample_model" not in meta and Image.open(inpainted.paths[0]).size == (32, 32)
    outpainted = glide("outpaint", "p.png", "a blue sky", "--right", "8", "--steps", "2", "--seed", "1", "--out", "o", *SHAPES)
    assert outpainted.code == 0, outpainted.err
    assert read_png_metadata(outpainted.paths[0])["model"] == "shapes-inpaint" and Image.open(outpainted.paths[0]).size == (40, 32)
    upsampled = glide("upsample", "p.png", "a red square", "--steps", "2", "--seed", "1", "--out", "u", *SHAPES)
    assert upsampled.code == 0, upsampled.err
    assert read_png_metadata(upsampled.paths[0])["upsample_model"] == "shapes-upsample"


def test_unclip_vary_and_blend_take_the_shapes_unclip_set(glide):
    made = glide("unclip", "a red circle", "--prior-steps", "2", "--steps", "2", "--seed", "2", "--out", "un", *SHAPES)
    assert made.code == 0, made.err
    meta = read_png_metadata(made.paths[0])
    assert (meta["prior_model"], meta["decoder_model"], meta["clip_model"]) == ("shapes-prior", "shapes-decoder", "shapes-clip")
    assert Image.open(made.paths[0]).size == (32, 32)  # no super-resolution in the shapes set: the decoder's size
    varied = glide("vary", "p.png", "--steps", "2", "--seed", "2", "--out", "va", *SHAPES)
    assert varied.code == 0, varied.err
    assert read_png_metadata(varied.paths[0])["decoder_model"] == "shapes-decoder"
    blended = glide("blend", "p.png", made.paths[0], "--steps", "2", "--seed", "2", "--out", "bl", *SHAPES)
    assert blended.code == 0, blended.err
    assert (read_png_metadata(blended.paths[0])["decoder_model"], read_png_metadata(blended.paths[0])["clip_model"]) == ("shapes-decoder", "shapes-clip")


def test_best_of_and_score_are_judged_by_the_manifests_clip(glide):
    made = glide("generate", "a red circle", "--size", "32", "--steps", "2", "--best-of", "2", "--seed", "5", "--out", "b", *SHAPES)
    assert made.code == 0, made.err
    meta = read_png_metadata(made.paths[0])
    assert meta["rank_model"] == "shapes-clip" and meta["rank_score"] == max(meta["candidate_scores"])
    scored = glide("score", made.paths[0], "--prompt", "a red circle", "--json", "--weights", MODELS / "weights.toml")
    assert scored.code == 0, scored.err
    line = json.loads(scored.out)
    # glide score judges the written picture as best of N judged the candidate (8 bits, base size)
    assert line["rank_model"] == "shapes-clip" and abs(line["score"] - meta["rank_score"]) < 1e-3


def test_clip_guide_says_the_shapes_set_has_no_noised_clip(glide):
    result = glide("clip-guide", "a red circle", "--steps", "2", "--out", "c", *SHAPES)
    assert_one_error_line(result, 1, "no model named 'clip-image'", "shapes-clip")


def test_clip_guide_takes_a_noised_clip_pair_by_kind(glide, tmp_path):
    """The shapes set with a tiny random noised CLIP under names of its own: one model of each
    kind, so no [defaults] line is needed for them."""
    text = (MODELS / "weights.toml").read_text().replace('path = "', f'path = "{MODELS}/')
    for seed, kind in enumerate(("clip-image", "clip-text")):
        network = random_init_(build_network(kind, dataclasses.replace(TINY_CLIP, n_vocab=49408, image_size=32)), seed=seed)
        save_network(network, tmp_path / f"{kind}.safetensors")
        text += f'\n[models.tiny-{kind}]\nkind = "{kind}"\npath = "{tmp_path / kind}.safetensors"\n[models.tiny-{kind}.arch]\n'
        text += "".join(f"{key} = {toml_value(value)}\n" for key, value in dataclasses.asdict(network.config).items())
    manifest = tmp_path / "with-clip.toml"
    manifest.write_text(text)
    result = glide("clip-guide", "a red circle", "--steps", "2", "--upsample-steps", "2", "--seed", "1", "--weights", manifest, "--quiet", "--out", "g")
    assert result.code == 0, result.err
    meta = read_png_metadata(result.paths[0])
    assert (meta["model"], meta["upsample_model"]) == ("shapes", "shapes-upsample")
    assert (meta["clip_image_model"], meta["clip_text_model"]) == ("tiny-clip-image", "tiny-clip-text")


def test_weights_list_shows_the_roles(glide):
    rows = {row["name"]: row for row in json.loads(glide("weights", "list", "--json", *SHAPES[:2]).out)}
    assert rows["shapes"]["roles"] == ["base"] and rows["shapes-clip"]["roles"] == ["clip", "rank"]
    assert rows["shapes-tokenizer"]["roles"] == []
    table = glide("weights", "list", *SHAPES[:2]).out
    assert re.search(r"^base +shapes +\[defaults\] *$", table, re.M)
    assert re.search(r"^upsample-inpaint +upsample-inpaint +the packaged name, not in this manifest *$", table, re.M)


def test_ambiguous_kinds_fall_back_to_the_packaged_names_and_their_message(glide, tmp_path):
    text = (MODELS / "weights.toml").read_text()
    text = text[: text.index("[defaults]")] + text[text.index("[models."):]  # no [defaults]
    second = text[text.index('[models."shapes"]'): text.index('[models."shapes-inpaint"]')].replace('"shapes"', '"shapes-again"')
    (tmp_path / "models").mkdir()
    for path in MODELS.glob("*"):
        (tmp_path / "models" / path.name).symlink_to(path)
    manifest = tmp_path / "models" / "two-bases.toml"
    manifest.write_text(text + "\n" + second)
    result = glide("generate", "a red circle", "--steps", "2", "--weights", manifest, "--quiet")
    assert_one_error_line(result, 1, f"{manifest}: no model named 'base'; known models: shapes, ", "shapes-again")
    # the kinds held once still play their roles without [defaults]
    inpainted = glide("inpaint", "p.png", "x", "--steps", "2", "--weights", manifest, "--quiet", "--out", "i2")
    assert inpainted.code == 0, inpainted.err
    assert read_png_metadata(inpainted.paths[0])["model"] == "shapes-inpaint"
