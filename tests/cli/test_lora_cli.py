"""`--lora NAME[:WEIGHT]` on the rendering commands with the shapes models: weight 0 is the
base picture, weight 1 the picture of the merged weights, the PNG records each adapter and
`--from` / `glide info --command` replay it; every bad adapter is one line, nothing written."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

from glidecli.files.lora_file import read_adapter, write_adapter
from glidecli.files.manifest import load_manifest
from glidecli.files.pngfile import read_png_metadata
from glidecli.nets.checkpoint import load_network, save_network
from glidecli.nets.lora import merged_delta
from glidecli.request.lora_tags import take_lora_tags
from glidecli.request.values import RequestError
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.lora import shapes_adapter, shapes_manifest_with
from helpers.paths import MODELS

BASE = ["generate", "a red circle on a blue background", "--model", "shapes", "--size", "32", "--steps", "4", "--seed", "5", "--quiet", "--device", "cpu", "--dtype", "fp32"]


@pytest.fixture
def glide(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    shapes_adapter(tmp_path / "strong", seed=1)
    shapes_adapter(tmp_path / "other", seed=2)
    shapes_manifest_with(tmp_path / "weights.toml", {"strong": tmp_path / "strong", "other": tmp_path / "other"})
    return invoker(capsys, monkeypatch)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int16)


def test_weight_zero_is_the_base_picture_and_the_record_replays(glide, tmp_path):
    plain = glide(*BASE, "--weights", "weights.toml", "--out", "plain")
    zero = glide(*BASE, "--weights", "weights.toml", "--lora", "strong:0", "--out", "zero")
    one = glide(*BASE, "--weights", "weights.toml", "--lora", "strong", "--lora", "other:-0.5", "--out", "one")
    assert plain.code == zero.code == one.code == 0, (plain.err, zero.err, one.err)
    assert np.array_equal(_pixels(plain.paths[0]), _pixels(zero.paths[0]))
    assert np.abs(_pixels(plain.paths[0]) - _pixels(one.paths[0])).max() > 20
    assert "lora" not in read_png_metadata(plain.paths[0])
    recorded = read_png_metadata(one.paths[0])["lora"]
    sha = read_adapter(tmp_path / "strong").sha256
    assert recorded[0] == {"name": "strong", "sha256": sha, "weight": 1.0} and recorded[1]["weight"] == -0.5
    again = glide("generate", "--from", one.paths[0], "--weights", "weights.toml", "--quiet", "--out", "again")
    assert again.code == 0, again.err
    assert again.paths[0].read_bytes() == one.paths[0].read_bytes()
    shown = glide("info", "--command", one.paths[0])
    assert "--lora strong:1.0 --lora other:-0.5" in shown.out
    redo = glide(*shlex.split(shown.out)[1:], "--weights", "weights.toml", "--quiet", "--out", "redo")
    assert redo.code == 0 and np.array_equal(_pixels(redo.paths[0]), _pixels(one.paths[0]))


def test_weight_one_is_the_picture_of_the_merged_weights(glide, tmp_path):
    entry = load_manifest(MODELS / "weights.toml").model("shapes")
    network = load_network(entry.kind, entry.arch, entry.source.path, "cpu", torch.float32)
    adapter = read_adapter(tmp_path / "strong").load()
    with torch.no_grad():
        for path, pair in adapter.pairs.items():
            layer = network.get_submodule(path)
            layer.weight += merged_delta(layer, pair)
    save_network(network, tmp_path / "merged.safetensors")
    text = (tmp_path / "weights.toml").read_text()
    block = text[text.index('[models."shapes"]') : text.index('[models."shapes-inpaint"]')]
    block = block.replace('models."shapes"', 'models."merged"').replace(f'{MODELS}/shapes.safetensors', str(tmp_path / "merged.safetensors"))
    block = "\n".join(line for line in block.splitlines() if not line.startswith(("sha256", "size")))
    (tmp_path / "weights.toml").write_text(text + "\n" + block + "\n")
    adapted = glide(*BASE, "--weights", "weights.toml", "--lora", "strong:1", "--out", "adapted")
    merged = glide(*[w if w != "shapes" else "merged" for w in BASE], "--weights", "weights.toml", "--out", "merged")
    assert adapted.code == merged.code == 0, (adapted.err, merged.err)
    assert np.abs(_pixels(adapted.paths[0]) - _pixels(merged.paths[0])).max() <= 1


def test_a_folder_path_works_and_lists_as_a_manifest_kind(glide, tmp_path):
    by_path = glide(*BASE, "--weights", "weights.toml", "--lora", str(tmp_path / "strong" / "adapter_model.safetensors") + ":0.5", "--out", "p")
    assert by_path.code == 0, by_path.err
    assert read_png_metadata(by_path.paths[0])["lora"][0]["name"] == str(tmp_path / "strong" / "adapter_model.safetensors")
    listed = glide("weights", "list", "--weights", "weights.toml")
    assert listed.code == 0
    rows = [line for line in listed.out.splitlines() if "strong" in line]
    assert rows and "lora" in rows[0] and "yes" in rows[0]


def test_bad_adapters_are_one_line_and_nothing_is_written(glide, tmp_path):
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    rank0 = tmp_path / "rank0"
    shapes_adapter(rank0, config={"r": 0})
    shapes_adapter(tmp_path / "for-inpainting", model="shapes-inpaint")
    shapes_adapter(tmp_path / "other-weights", base_sha256="0" * 64)
    cases = [
        (["--lora", "nowhere"], 1, "no adapter of that name"),
        (["--lora", "adapter_model.bin"], 1, "pickled"),
        (["--lora", "corrupt"], 1, "not a readable safetensors"),
        (["--lora", "rank0"], 1, "rank"),
        (["--lora", "shapes-upsample"], 1, "not a lora adapter"),
        (["--lora", "strong:abc"], 2, "is not a number"),
        (["--lora", "for-inpainting"], 1, "does not run"),
        (["--lora", "other-weights"], 1, "--force"),
    ]
    for flags, code, words in cases:
        result = glide(*BASE, "--weights", "weights.toml", *flags, "--out", "bad")
        assert_one_error_line(result, code, words)
        assert not (tmp_path / "bad").exists()
    forced = glide(*BASE, "--weights", "weights.toml", "--lora", "other-weights", "--force", "--out", "forced")
    assert forced.code == 0, forced.err
    assert read_png_metadata(forced.paths[0])["force"] is True
    assert " --force" in glide("info", "--command", forced.paths[0]).out  # its replay forces it too
    # An adapter of other shapes is refused even with --force.
    torch.manual_seed(0)
    odd = {"base_model.model.middle_block.1.qkv.lora_A.weight": torch.randn(4, 7, 1), "base_model.model.middle_block.1.qkv.lora_B.weight": torch.randn(21, 4, 1)}
    write_adapter(tmp_path / "odd", odd, {"r": 4}, base_model="elsewhere", base_kind="base", base_sha256=None)
    wrong_shapes = glide(*BASE, "--weights", "weights.toml", "--lora", "odd", "--force", "--out", "bad")
    assert_one_error_line(wrong_shapes, 1, "does not fit")
    assert not (tmp_path / "bad").exists()


def test_lora_tags_are_taken_out_of_the_prompt_text():
    assert take_lora_tags("a <lora:strong:0.5> red circle <LORA:other>") == ("a red circle", ("strong:0.5", "other:1"))
    assert take_lora_tags("no tags <b>here</b>") == ("no tags <b>here</b>", ())
    with pytest.raises(RequestError, match="is not a number"):
        take_lora_tags("x <lora:strong:lots>")
    with pytest.raises(RequestError, match="not a path"):
        take_lora_tags("x <lora:/etc/thing:1>")


def test_a_prompt_tag_is_the_lora_option(glide, tmp_path):
    tagged = glide(*[w if w != "a red circle on a blue background" else "a red circle <lora:strong:0.6> on a blue background" for w in BASE],
                   "--weights", "weights.toml", "--out", "tagged")
    flagged = glide(*BASE, "--weights", "weights.toml", "--lora", "strong:0.6", "--out", "flagged")
    assert tagged.code == flagged.code == 0, tagged.err
    assert tagged.paths[0].name == flagged.paths[0].name  # the file name's slug has no tag
    assert np.array_equal(_pixels(tagged.paths[0]), _pixels(flagged.paths[0]))
    assert read_png_metadata(tagged.paths[0])["prompt"] == "a red circle on a blue background"
    unknown = glide(*BASE[:1], "a circle <lora:nowhere:1>", *BASE[2:], "--weights", "weights.toml", "--out", "bad")
    assert_one_error_line(unknown, 1, "no adapter of that name")
    assert not (tmp_path / "bad").exists()


def test_from_warns_once_when_the_adapter_under_a_recorded_name_changed(glide, tmp_path):
    """--from replays the adapter by its name; another file under that name is one warning
    line (the name and both short hashes), and the render goes on with the adapter found now."""
    made = glide(*BASE, "--weights", "weights.toml", "--lora", "strong:0.7", "--out", "made")
    assert made.code == 0, made.err
    before = read_adapter(tmp_path / "strong").sha256
    same = glide("generate", "--from", made.paths[0], "--weights", "weights.toml", "--quiet", "--out", "same")
    assert same.code == 0 and "warning" not in same.err
    shapes_adapter(tmp_path / "strong", seed=9)  # another adapter now under the name
    after = read_adapter(tmp_path / "strong").sha256
    assert after != before
    again = glide("generate", "--from", made.paths[0], "--weights", "weights.toml", "--quiet", "--out", "again")
    assert again.code == 0, again.err
    warnings = [line for line in again.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "adapter strong" in warnings[0] and before[:12] in warnings[0] and after[:12] in warnings[0]
    assert read_png_metadata(again.paths[0])["lora"] == [{"name": "strong", "sha256": after, "weight": 0.7}]
    assert not np.array_equal(_pixels(again.paths[0]), _pixels(made.paths[0]))
    given = glide("generate", "--from", made.paths[0], "--weights", "weights.toml", "--lora", "other", "--quiet", "--out", "given")
    assert given.code == 0 and "warning" not in given.err  # the command line's adapters replace the recorded ones
