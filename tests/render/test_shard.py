"""Splitting work among processes (render/shard.py): balanced contiguous shares, --shard k/N,
and torchrun's environment, checked without starting any process."""

from __future__ import annotations

import pytest

from glidecli.render.shard import Ranks, ShardError, Split, current_split, parse_shard, share, torchrun_ranks

TORCHRUN_ENV = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}


@pytest.mark.parametrize("parts", range(1, 7))
@pytest.mark.parametrize("count", [0, 1, 2, 5, 6, 7, 13])
def test_shares_are_contiguous_balanced_and_cover_everything_once(count, parts):
    shares = [share(count, part, parts) for part in range(parts)]
    assert [i for piece in shares for i in piece] == list(range(count))  # in order, each once
    sizes = [len(piece) for piece in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_a_share_of_ten_among_four():
    assert [share(10, part, 4) for part in range(4)] == [range(0, 3), range(3, 6), range(6, 8), range(8, 10)]
    assert list(share(2, 3, 4)) == []  # more parts than items: the last ones idle
    with pytest.raises(ValueError):
        share(10, 4, 4)


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard("3/8") == (3, 8)
    for bad in ["", "3", "3/", "/8", "a/2", "1/b", "-1/2", "2/2", "5/3", "0/0", "1.0/2", "1/2/3"]:
        with pytest.raises(ShardError, match="--shard"):
            parse_shard(bad)


def test_torchrun_environment():
    assert torchrun_ranks({}) == Ranks()
    assert torchrun_ranks({"WORLD_SIZE": "1", "RANK": "0"}) == Ranks()  # torchrun with one process
    assert torchrun_ranks(TORCHRUN_ENV) == Ranks(rank=2, world=4, local_rank=0)
    assert torchrun_ranks(TORCHRUN_ENV).launched and not torchrun_ranks(TORCHRUN_ENV).is_main


@pytest.mark.parametrize(
    "change, message",
    [
        ({"RANK": None}, "RANK is not set"),
        ({"MASTER_ADDR": None, "MASTER_PORT": None}, "MASTER_ADDR, MASTER_PORT are not set"),
        ({"RANK": "4"}, "RANK 4 is not below WORLD_SIZE 4"),
        ({"WORLD_SIZE": "four"}, "WORLD_SIZE='four'"),
        ({"LOCAL_RANK": "-1"}, "LOCAL_RANK='-1'"),
        ({"MASTER_PORT": "http"}, "MASTER_PORT='http'"),
    ],
)
def test_an_incomplete_torchrun_environment_is_refused(change, message):
    env = {**TORCHRUN_ENV, **change}
    env = {key: value for key, value in env.items() if value is not None}
    with pytest.raises(ShardError, match=message.replace("(", r"\(")):
        torchrun_ranks(env)


def test_splits_combine_job_array_tasks_and_torchrun_ranks():
    alone = current_split(None, {})
    assert (alone.index, alone.parts, alone.active, alone.label()) == (0, 1, False, "")
    assert list(alone.of(5)) == [0, 1, 2, 3, 4]
    task = current_split("1/3", {})
    assert (task.index, task.parts, task.label()) == (1, 3, "shard 1/3")
    assert task.of(7) == range(3, 5)
    rank = current_split(None, TORCHRUN_ENV)
    assert (rank.index, rank.parts, rank.label()) == (2, 4, "rank 2/4")
    # Task 1 of 3 of a job array, each task a torchrun of 4 ranks: 12 parts, this is part 6.
    both = Split(Ranks(2, 4, 2), (1, 3))
    assert (both.index, both.parts, both.label()) == (6, 12, "shard 1/3 rank 2/4")
    # Every (task, rank) together covers the jobs once, in order.
    covered = [i for k in range(3) for r in range(4) for i in Split(Ranks(r, 4, r), (k, 3)).of(30)]
    assert covered == list(range(30))
