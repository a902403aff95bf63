"""A stand-in for a network in loss tests: it answers an oracle's fixed output and keeps the
inputs it was called with, so a test compares a recipe's loss (and what it fed the network)
with a reference implementation's on the same batch."""

from __future__ import annotations

from typing import Any


class FixedNet:
    def __init__(self, output: Any):
        self.output, self.inputs = output, None

    def __call__(self, *inputs: Any) -> Any:
        self.inputs = inputs
        return self.output
