"""Fixtures of the server's tests: a server on the shapes models, a picture and a mask."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from helpers.serving import Server  # noqa: E402


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server; `server.make(**config)` makes another one (closed with it)."""
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    made: list[Server] = []

    def make(**config: Any) -> Server:
        made.append(Server(tmp_path / f"server{len(made)}", **config))
        return made[-1]

    first = make()
    first.make = make  # type: ignore[attr-defined]
    yield first
    for each in made:
        each.close()


@pytest.fixture
def picture() -> np.ndarray:
    """32x32: a blue background with a red square."""
    array = np.zeros((32, 32, 3), np.uint8)
    array[:] = (30, 60, 200)
    array[8:24, 8:24] = (220, 30, 30)
    return array


@pytest.fixture
def square_mask() -> np.ndarray:
    """White (repaint) over the top-left quarter of the 32x32 picture."""
    mask = np.zeros((32, 32), np.uint8)
    mask[4:16, 4:16] = 255
    return mask
