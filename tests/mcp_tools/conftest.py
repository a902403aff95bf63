"""Fixtures of the MCP front end's tests: the shapes models' server with its MCP tools,
driven by the SDK's own client (in memory here; over stdio and HTTP in test_transports)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("mcp")

from helpers.mcp_rig import McpRig  # noqa: E402


@pytest.fixture
def rig(tmp_path, monkeypatch) -> Iterator[McpRig]:
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    made = McpRig(tmp_path / "mcp")
    yield made
    made.service.close()


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
