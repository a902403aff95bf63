"""A CPU stand-in for CUDA graph capture (render/accel.GraphBackend), shared by the tests of
graphed sampling."""

from __future__ import annotations

from collections import Counter


class ReplayingBackend:
    """CUDA graphs' contract on the CPU: capture runs the function once on the static buffers;
    replay runs it again on the buffers' current values, into the same output tensor. So any
    input the wrapper forgot to copy (or rebuilt wrongly) shows up as a wrong result.
    `replays[id(output)]` counts the replays of the graph whose output that is."""

    def __init__(self):
        self.captures = 0
        self.replays: Counter = Counter()

    def capture(self, run):
        self.captures += 1
        output = run()

        def replay():
            self.replays[id(output)] += 1
            output.copy_(run())

        return replay, output

    def replays_of(self, graphed) -> int:
        """How many calls a GraphedNetwork answered by replaying its graphs."""
        return sum(self.replays[id(captured.output)] for captured in graphed.graphs.values())
