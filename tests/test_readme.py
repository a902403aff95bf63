"""README's Python example runs as written (from a folder holding the small models)."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from glidecli.files.pngfile import read_png_metadata
from helpers.paths import MODELS, REPO_ROOT


def python_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").symlink_to(MODELS)
    monkeypatch.chdir(tmp_path)
    exec(compile(python_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out.split("\n")
    assert printed[0] == "circle-10.png (64, 64)" and printed[1] == "circle-11.png (64, 64)"
    first, second = (np.asarray(Image.open(tmp_path / f"circle-{seed}.png")) for seed in (10, 11))
    assert first.shape == (64, 64, 3) and np.abs(first.astype(int) - second).max() > 0
    meta = read_png_metadata(tmp_path / "circle-10.png")
    assert meta["seed"] == 10 and meta["model"] == "shapes" and meta["upsample_model"] == "shapes-upsample"
