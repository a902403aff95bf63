"""The one error of getting weight files (fetch.py, download.py, convert.py), and the
helper that keeps its messages to one line."""

from __future__ import annotations


class WeightsError(Exception):
    """A weight file that is missing, corrupt or unusable; the message is one line."""


def first_line(value: object) -> str:
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return lines[0] if lines else type(value).__name__
