"""The background writer behind `glide`'s file output (files/writer.py)."""

from __future__ import annotations

import threading

import pytest

from glidecli.files.writer import BackgroundWriter


def test_tasks_run_in_order_off_the_callers_thread_and_close_waits_for_them():
    release = threading.Event()
    ran = []

    def task(i):
        release.wait(5)
        ran.append((i, threading.current_thread().name))

    writer = BackgroundWriter()
    for i in range(5):
        writer.submit(task, i)  # returns at once although no task can finish yet
    assert ran == [] and writer.done == 0
    release.set()
    writer.close()
    assert ran == [(i, "glidecli-writer") for i in range(5)] and writer.done == 5
    writer.close()  # again: nothing left, no error


def test_the_first_failure_reaches_the_caller_and_stops_the_rest():
    ran = []

    def task(i):
        if i == 1:
            raise OSError("disk full")
        ran.append(i)

    writer = BackgroundWriter()
    writer.submit(task, 0)
    writer.submit(task, 1)
    writer.submit(task, 2)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert ran == [0] and writer.done == 1


def test_a_full_queue_makes_the_caller_wait_instead_of_piling_up():
    release = threading.Event()
    writer = BackgroundWriter(max_pending=1)
    writer.submit(release.wait, 5)  # running
    writer.submit(release.wait, 5)  # queued: the queue is full now
    blocked = threading.Thread(target=writer.submit, args=(release.wait, 5))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()
    release.set()
    blocked.join(5)
    writer.close()
    assert writer.done == 3
