"""`glide mcp`'s options refused before it serves, and a missing MCP SDK: one line each. (Its
tools are tested in tests/mcp_tools, where the SDK is installed.)"""

from __future__ import annotations

import pytest

import glidecli.cli.mcp as mcp_cli
from helpers.glide_cli import assert_one_error_line, invoker


@pytest.fixture
def glide(capsys, monkeypatch):
    return invoker(capsys, monkeypatch)


def test_without_the_sdk_glide_mcp_says_how_to_install_it(glide, monkeypatch, tmp_path):
    monkeypatch.setattr(mcp_cli, "sdk_installed", lambda: False)
    assert_one_error_line(glide("mcp", "--out", tmp_path / "out"), 2, "pip install 'glidecli[mcp]'")
    assert_one_error_line(glide("serve", "--port", "0", "--input-dir", tmp_path, "--out", tmp_path / "out"), 2, "--input-dir", "MCP SDK")
    assert not (tmp_path / "out").exists()


def test_a_missing_input_dir_is_refused(glide, tmp_path):
    pytest.importorskip("mcp")
    assert_one_error_line(glide("mcp", "--input-dir", tmp_path / "nowhere", "--out", tmp_path / "out"), 2, "--input-dir", "is not a directory")
    assert_one_error_line(glide("mcp", "--max-images", "0"), 2, "--max-images")
