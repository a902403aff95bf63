"""What the training tests share: a dozen 20x20 shapes pictures with captions."""

from __future__ import annotations

from pathlib import Path

import pytest

from glidecli.train.shapes import write_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    list(write_shapes(folder, 12, size=20, seed=3))
    return folder
