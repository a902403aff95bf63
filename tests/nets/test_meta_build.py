"""Networks built on the meta device skip PyTorch's initializers for the building thread
alone: a network another thread builds meanwhile keeps its initial values (a training beside
a server's worker that loads a model)."""

from __future__ import annotations

import threading

import torch
from torch import nn

from glidecli.nets import checkpoint


def test_a_meta_build_leaves_another_threads_initial_values_alone():
    inside, release = threading.Event(), threading.Event()

    def build_on_meta_slowly() -> None:
        with checkpoint._skipping_init():
            inside.set()
            release.wait(10)

    builder = threading.Thread(target=build_on_meta_slowly)
    builder.start()
    assert inside.wait(10)
    torch.manual_seed(0)
    beside = nn.Linear(32, 32).weight.detach().clone()
    release.set()
    builder.join()
    torch.manual_seed(0)
    alone = nn.Linear(32, 32).weight.detach().clone()
    assert torch.equal(beside, alone)


def test_the_building_thread_skips_and_the_initializers_come_back():
    original = torch.nn.init.normal_
    with checkpoint._skipping_init():
        tensor = torch.full((3,), 7.0)
        assert torch.nn.init.normal_(tensor) is tensor and torch.equal(tensor, torch.full((3,), 7.0))
    assert torch.nn.init.normal_ is original
