"""Running the `glide` command inside a test and checking its one-line errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import NamedTuple

from glidecli.cli import main as cli


class Result(NamedTuple):
    code: int
    out: str
    err: str

    @property
    def paths(self) -> list[Path]:
        return [Path(line) for line in self.out.splitlines()]


def invoker(capsys, monkeypatch):
    """A function that runs `glide ARGS...` in-process and returns its exit code and output."""

    def invoke(*args, stdin: str | None = None) -> Result:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = cli.run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def invoker_with_weights(capsys, monkeypatch, tmp_path, weights):
    """`invoker` with GLIDE_WEIGHTS set to the manifest `weights` and a cache of the test's own."""
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLIDE_WEIGHTS", str(weights))
    return invoker(capsys, monkeypatch)


def assert_one_error_line(result: Result, code: int, *fragments: str) -> None:
    """Exit `code`, no traceback, and exactly one 'error: ' line holding every fragment."""
    assert result.code == code, result
    assert "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
