"""Splitting work among processes: the ranks torchrun starts, and the independent tasks of a
job array (`--shard k/N`).

The work is a list (a command's jobs, a training step's examples); each process takes one
contiguous run of it, the runs balanced to within one item and laid out in order, so that
the processes together do exactly the whole list, each item once. Plain functions over the
environment that torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
torch is imported only to join a process group or pick a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torchrun's variables that a process of a multi-process run needs besides WORLD_SIZE.
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Ranks wait for each other at the start and at the end of a render; with --skip-existing one
# may finish hours before another, so the process group waits long (torchrun ends the whole
# run anyway as soon as any rank fails).
GROUP_TIMEOUT = timedelta(days=7)


class ShardError(ValueError):
    """A bad --shard or an incomplete torchrun environment (a usage error: exit 2)."""


def share(count: int, part: int, parts: int) -> range:
    """Part `part` of `parts` balanced contiguous runs of range(count): the first
    count % parts runs hold one item more. Empty when there are more parts than items."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} is not among {parts}")
    base, extra = divmod(count, parts)
    start = part * base + min(part, extra)
    return range(start, start + base + (1 if part < extra else 0))


def parse_shard(text: str) -> tuple[int, int]:
    """'k/N' -> (k, N) with 0 <= k < N."""
    index, slash, total = text.partition("/")
    if not slash or not index.strip().isdigit() or not total.strip().isdigit():
        raise ShardError(f"--shard {text!r}: expected k/N, e.g. 0/4 (task k of N, counted from 0)")
    k, n = int(index), int(total)
    if n < 1 or k >= n:
        raise ShardError(f"--shard {text!r}: k must be 0..N-1 (task k of N, counted from 0)")
    return k, n


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun launch (rank 0 of 1 when not launched by it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def launched(self) -> bool:
        """Several processes started by torchrun, which talk through a process group."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_ranks(environ: Mapping[str, str] | None = None) -> Ranks:
    """The ranks torchrun's variables describe. WORLD_SIZE unset or 1: a single process.
    A world of several without the other variables, or with values that do not fit, is
    refused: glide was not started by torchrun, or not completely."""
    env = os.environ if environ is None else environ
    world_text = env.get("WORLD_SIZE")
    if world_text is None:
        return Ranks()
    world = _count("WORLD_SIZE", world_text)
    if world <= 1:
        return Ranks()
    missing = [name for name in TORCHRUN_VARIABLES if not env.get(name)]
    if missing:
        raise ShardError(
            f"WORLD_SIZE is {world} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set;"
            " start several processes with torchrun (e.g. torchrun --nproc-per-node 2 -m glidecli ...)"
        )
    rank, local_rank = _count("RANK", env["RANK"]), _count("LOCAL_RANK", env["LOCAL_RANK"])
    if rank >= world:
        raise ShardError(f"RANK {rank} is not below WORLD_SIZE {world}")
    _count("MASTER_PORT", env["MASTER_PORT"])
    return Ranks(rank, world, local_rank)


def _count(name: str, text: str) -> int:
    if not text.strip().isdigit():
        raise ShardError(f"{name}={text!r} is not a whole number; start several processes with torchrun")
    return int(text)


@dataclass(frozen=True)
class Split:
    """Which part of the work this process does: task k of N of a job array (--shard),
    and within it this rank's part among torchrun's ranks."""

    ranks: Ranks = Ranks()
    shard: tuple[int, int] | None = None

    @property
    def index(self) -> int:
        k = self.shard[0] if self.shard else 0
        return k * self.ranks.world + self.ranks.rank

    @property
    def parts(self) -> int:
        return (self.shard[1] if self.shard else 1) * self.ranks.world

    @property
    def active(self) -> bool:
        return self.parts > 1

    def of(self, count: int) -> range:
        """This process's items among range(count)."""
        return share(count, self.index, self.parts)

    def label(self) -> str:
        """How messages name this process: '' alone, else 'rank 1/4' or 'shard 2/8'."""
        if self.ranks.launched and self.shard:
            return f"shard {self.shard[0]}/{self.shard[1]} rank {self.ranks.rank}/{self.ranks.world}"
        if self.ranks.launched:
            return f"rank {self.ranks.rank}/{self.ranks.world}"
        return f"shard {self.shard[0]}/{self.shard[1]}" if self.shard else ""


def current_split(shard: str | None, environ: Mapping[str, str] | None = None) -> Split:
    return Split(torchrun_ranks(environ), parse_shard(shard) if shard is not None else None)


# --- process groups ----------------------------------------------------------------------------


def join_group(ranks: Ranks, backend: str = "gloo") -> None:
    """Join torchrun's process group once (a no-op for a single process)."""
    import torch.distributed as dist

    if ranks.launched and not dist.is_initialized():
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world, timeout=GROUP_TIMEOUT)


def leave_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.launched:
        import torch.distributed as dist

        join_group(ranks)
        dist.barrier()


def gather(ranks: Ranks, value: object) -> list[object]:
    """Every rank's `value`, in rank order (on every rank)."""
    if not ranks.launched:
        return [value]
    import torch.distributed as dist

    join_group(ranks)
    values: list[object] = [None] * ranks.world
    dist.all_gather_object(values, value)
    return values


def from_main(ranks: Ranks, value: object) -> object:
    """Rank 0's `value`, on every rank."""
    if not ranks.launched:
        return value
    import torch.distributed as dist

    join_group(ranks)
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def rank_device(name: str, ranks: Ranks) -> torch.device:
    """The device this rank runs on: `name` resolved as usual (session.resolve_device), and
    on CUDA the GPU numbered LOCAL_RANK (each rank its own)."""
    import torch

    from .session import RenderError, resolve_device

    device = resolve_device(name)
    if device.type != "cuda" or not ranks.launched:
        return device
    count = torch.cuda.device_count()
    if ranks.local_rank >= count:
        raise RenderError(
            f"LOCAL_RANK {ranks.local_rank} has no GPU of its own: this machine has {count};"
            f" start at most {count} processes per node (torchrun --nproc-per-node {count})"
        )
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


# How a collective fails when a peer is gone, where the error is a plain RuntimeError (gloo's
# transport errors surface so, e.g. when raised inside autograd's backward pass).
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "gloo/transport")


def peer_failure(error: BaseException) -> bool:
    """An error raised because another rank of the run is gone."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(sign in str(error) for sign in _PEER_GONE)
