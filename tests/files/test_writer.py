"""The background writer behind `glide`'s file output (files/writer.py)."""

from __future__ import annotations

import threading
import time

import pytest

from glidecli.files.writer import BackgroundWriter


def test_one_thread_runs_tasks_in_order_off_the_callers_thread_and_close_waits_for_them():
    release = threading.Event()
    ran = []

    def task(i):
        release.wait(5)
        ran.append((i, threading.current_thread().name))

    writer = BackgroundWriter(threads=1)
    for i in range(5):
        writer.submit(task, i)  # returns at once although no task can finish yet
    assert ran == [] and writer.done == 0
    release.set()
    writer.close()
    assert [i for i, _ in ran] == list(range(5)) and writer.done == 5
    assert all(name.startswith("glidecli-writer") for _, name in ran)
    writer.close()  # again: nothing left, no error


def test_reports_come_in_the_order_given_although_the_work_finishes_out_of_order():
    finished, reported, running, most = [], [], [0], [0]
    lock = threading.Lock()

    def work(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 * (6 - i))  # the first given sleeps longest
        with lock:
            running[0] -= 1
            finished.append(i)
        return f"file-{i}"

    writer = BackgroundWriter(threads=4)
    for i in range(6):
        writer.submit(work, i, report=reported.append)
    writer.close()
    assert reported == [f"file-{i}" for i in range(6)] and writer.done == 6
    assert most[0] > 1 and finished != sorted(finished)  # several at once, landing out of order


def test_close_waits_for_every_task():
    landed = []
    writer = BackgroundWriter(threads=3)
    for i in range(7):
        writer.submit(lambda i: (time.sleep(0.05), landed.append(i)), i)
    writer.close()
    assert sorted(landed) == list(range(7)) and writer.done == 7


def test_the_first_failure_reaches_the_caller_and_stops_the_rest():
    ran = []

    def task(i):
        if i == 1:
            raise OSError("disk full")
        ran.append(i)

    writer = BackgroundWriter(threads=1)
    writer.submit(task, 0)
    writer.submit(task, 1)
    writer.submit(task, 2)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert ran == [0] and writer.done == 1
    writer.close()  # raised once


def test_with_a_pool_the_first_failure_in_order_is_raised_once_and_nothing_after_it_is_reported():
    reported = []

    def work(i):
        time.sleep(0.1 if i == 2 else 0.01)  # task 2 fails after 3 and 5 have failed or finished
        if i in (2, 3, 5):
            raise OSError(f"disk full at {i}")
        return i

    writer = BackgroundWriter(threads=4)
    for i in range(8):
        writer.submit(work, i, report=reported.append)
    with pytest.raises(OSError, match="disk full at 2"):
        writer.close()
    assert reported == [0, 1] and writer.done == 2
    writer.close()  # raised once


def test_a_failure_is_raised_by_the_next_submit_and_later_tasks_are_dropped():
    reported = []
    writer = BackgroundWriter(threads=2)
    writer.submit(lambda: 1 / 0, report=reported.append)
    deadline = time.monotonic() + 5
    while writer._error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ZeroDivisionError):
        writer.submit(lambda: "late", report=reported.append)
    writer.submit(lambda: "later", report=reported.append)  # raised once: this one is taken, then dropped
    writer.close()
    assert reported == [] and writer.done == 0


def test_a_failing_report_stops_the_writer_too():
    def report(result):
        raise BrokenPipeError("stdout closed")

    release = threading.Event()
    writer = BackgroundWriter(threads=2)
    writer.submit(release.wait, 5, report=report)
    writer.submit(release.wait, 5, report=report)
    release.set()
    with pytest.raises(BrokenPipeError):
        writer.close()
    assert writer.done == 0


def test_a_closed_writer_takes_no_more_tasks():
    writer = BackgroundWriter()
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(print, "x")


@pytest.mark.parametrize("max_pending, threads", [(1, 1), (2, 4)])
def test_a_full_queue_makes_the_caller_wait_instead_of_piling_up(max_pending, threads):
    release = threading.Event()
    writer = BackgroundWriter(max_pending=max_pending, threads=threads)
    for _ in range(max_pending + 1):
        writer.submit(release.wait, 5)  # one being reported, the rest waiting behind it: full
    blocked = threading.Thread(target=writer.submit, args=(release.wait, 5))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()
    release.set()
    blocked.join(5)
    writer.close()
    assert writer.done == max_pending + 2


def test_a_ctrl_c_inside_submit_drops_that_task_whole_and_close_does_not_hang(monkeypatch):
    release, ran, reported = threading.Event(), [], []

    def work(i):
        release.wait(5)
        ran.append(i)
        return i

    writer = BackgroundWriter(threads=1)
    writer.submit(work, 0, report=reported.append)
    real_submit = writer._pool.submit

    def interrupted_before(*args):
        raise KeyboardInterrupt

    def interrupted_after(*args):
        real_submit(*args)  # queued behind task 0, then the Ctrl-C arrives
        raise KeyboardInterrupt

    for fake in (interrupted_before, interrupted_after):
        monkeypatch.setattr(writer._pool, "submit", fake)
        with pytest.raises(KeyboardInterrupt):
            writer.submit(work, 1, report=reported.append)
    monkeypatch.setattr(writer._pool, "submit", real_submit)
    writer.submit(work, 2, report=reported.append)
    release.set()
    writer.close()
    assert ran == reported == [0, 2] and writer.done == 2
