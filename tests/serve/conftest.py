"""Fixtures of the server's tests: a server on the shapes models, a picture and a mask."""

from __future__ import annotations

from typing import Any

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

from helpers.pictures import picture, square_mask  # noqa: E402, F401 - fixtures these tests share
