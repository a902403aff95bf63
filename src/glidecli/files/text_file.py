"""A user's text file read whole (a prompts file, a wildcard file, a JSON Lines data set),
with one line for each way it can fail, named by what the file is to the command."""

from __future__ import annotations

from pathlib import Path


class TextFileError(ValueError):
    """A text file that cannot be read; its text is the one line the front ends show."""


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text at `path`, the user's `what` ("prompts file"), or TextFileError."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TextFileError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise TextFileError(f"{what} {path} is a folder, not a file") from None
    except UnicodeDecodeError as error:
        raise TextFileError(f"{what} {path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise TextFileError(f"cannot read {what} {path}: {error.strerror or error}") from None
