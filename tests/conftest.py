"""Setup shared by every test module."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run the suite on one intra-op thread. Its tensors are small, so extra threads only add
    synchronisation, and on a busy 2-core machine torch's spinning workers made the heavy
    modules about 3x slower (104 s against 33 s for the reference parity tests)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The expected pictures are the CPU's fp32 ones: on a GPU machine `--device auto` would pick
# CUDA and fp16. Set at import, so subprocesses (torchrun tests) inherit it; the CUDA tests
# ask for `device="cuda"` explicitly.
os.environ["GLIDE_DEVICE"] = "cpu"
# And fp32: on a CPU with native bf16, `--dtype auto` picks bf16 (render/cpu.py).
os.environ["GLIDE_DTYPE"] = "fp32"


@pytest.fixture(scope="session")
def tiny_unclip_manifest(tmp_path_factory):
    """A manifest of tiny random unCLIP networks (helpers/tiny_unclip.py), built once for the
    suite; tests read it and write their pictures elsewhere."""
    from helpers.tiny_unclip import write_tiny_unclip_manifest

    return write_tiny_unclip_manifest(tmp_path_factory.mktemp("unclip-weights"))
