"""Fixtures of the MCP front end's tests: the shapes models' server with its MCP tools,
driven by the SDK's own client (in memory here; over stdio and HTTP in test_transports)."""

from __future__ import annotations

from collections.abc import Iterator

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

from helpers.pictures import picture, square_mask  # noqa: E402, F401 - fixtures these tests share
