"""`--batch-size auto` (render/batching.py): the arithmetic on injected measurements, and on a
GPU the measurement itself."""

from __future__ import annotations

import pytest
import torch

from glidecli.render import batching
from glidecli.render.batching import StageMemory, auto_batch_size, measure_stage, plan_batch_size, unet_probe
from helpers.tiny import tiny_network

GiB = 2**30


def test_the_largest_batch_that_fits_with_every_stage_held_at_once():
    base, upsample = StageMemory(2 * GiB, 1 * GiB), StageMemory(1 * GiB, 2 * GiB)
    # 100 GiB free, 85 usable, 3 fixed: (85 - 3) / (1 + 2) = 27.3 pictures fit.
    assert plan_batch_size(27, 100 * GiB, [base, upsample]) == 27
    assert plan_batch_size(20, 100 * GiB, [base, upsample]) == 20  # never more than asked for
    assert plan_batch_size(54, 100 * GiB, [base, upsample]) == 27  # two full passes
    # 64 pictures need 3 passes of at most 27: evened out to 22 + 22 + 20, not 27 + 27 + 10.
    assert plan_batch_size(64, 100 * GiB, [base, upsample]) == 22
    # Without the margin 32.3 fit: two passes of 32.
    assert plan_batch_size(64, 100 * GiB, [base, upsample], margin=1.0) == 32


def test_at_least_one_picture_and_no_limit_without_growth():
    assert plan_batch_size(8, 1 * GiB, [StageMemory(4 * GiB, 1 * GiB)]) == 1  # nothing fits: try one
    assert plan_batch_size(8, 1 * GiB, [StageMemory(0, 0)]) == 8
    with pytest.raises(ValueError):
        plan_batch_size(0, GiB, [])


def test_auto_is_one_on_the_cpu_and_for_one_picture_without_measuring():
    def probe(pictures):
        raise AssertionError("nothing is measured")

    assert auto_batch_size(64, torch.device("cpu"), [probe]) == 1
    assert auto_batch_size(1, torch.device("cuda"), [probe]) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measured_growth_on_a_gpu():
    model = tiny_network("upsample").cuda().half()
    small, guided = (measure_stage(unet_probe(model, guided), torch.device("cuda")) for guided in (False, True))
    assert 0 < small.per_picture < guided.per_picture <= 2.5 * small.per_picture
    assert 1 <= auto_batch_size(10**9, torch.device("cuda"), [unet_probe(model, True)]) < 10**9


def test_offloaded_stages_are_planned_one_at_a_time(monkeypatch):
    """With offload one network is on the GPU at a time: each stage must fit alone, its
    weights among its fixed cost, in the memory free with none of them there."""
    gib = 2**30
    measured = iter([batching.StageMemory(2 * gib, gib), batching.StageMemory(3 * gib, gib // 2)])
    calls = []
    monkeypatch.setattr(batching, "measure_stage", lambda probe, device, evict=None: calls.append(("measure", evict)) or next(measured))
    monkeypatch.setattr(batching, "free_memory", lambda device: calls.append(("free", None)) or 10 * gib)
    evict = lambda: calls.append(("evict", None))  # noqa: E731
    # 8.5 GiB usable: alone, 6 and 11 pictures fit; together (no offload) only 2 would.
    assert batching.auto_batch_size(64, torch.device("cuda"), [None, None], evict=evict) == 6
    assert calls == [("measure", evict), ("measure", evict), ("evict", None), ("free", None)]
    measured = iter([batching.StageMemory(2 * gib, gib), batching.StageMemory(3 * gib, gib // 2)])
    assert batching.auto_batch_size(64, torch.device("cuda"), [None, None]) == 2
