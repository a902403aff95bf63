"""A user's text file: one line for each way it cannot be read, naming the file and what it is."""

from __future__ import annotations

import pytest

from glidecli.files.text_file import TextFileError, read_text_file


def test_reads_utf8_text(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a corgi\nun café\n", encoding="utf-8")
    assert read_text_file(path, "prompts file") == "a corgi\nun café\n"


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: None, "prompts file not found: {p}"),
    (lambda p: p.mkdir(), "prompts file {p} is a folder, not a file"),
    (lambda p: p.write_bytes(b"a red \xff circle"), "prompts file {p} is not UTF-8 text (byte 6)"),
])
def test_each_failure_is_one_line(tmp_path, make, expected):
    path = tmp_path / "prompts.txt"
    make(path)
    with pytest.raises(TextFileError) as caught:
        read_text_file(path, "prompts file")
    assert str(caught.value) == expected.format(p=path)
    assert "\n" not in str(caught.value)
