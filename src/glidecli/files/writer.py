"""Writing finished pictures on threads of their own, so sampling never waits for PNG
encoding or the disk.

`BackgroundWriter.submit(work, *args, report=...)` runs `work(*args)` (encode and write a
file) on a small pool of threads, several at once: PNG compression releases the GIL, so
they share the cores. Then `report(result)` (say that the file is there) runs on one
thread of its own, in the order the tasks were given, so what a caller prints comes out in
a fixed order whatever order the files land in.

Each task writes its file whole or not at all (pictures.write_picture: temporary name, then
rename); two tasks must never be given the same path (cli/run.plan_outputs refuses such
plans). `close()` waits for every task already given, so an interrupted render still keeps
every picture it finished. The first failure, in the order given, stops the writer: tasks
not yet started are skipped, none after it is reported, and it is raised in the caller's
thread, once, by the next `submit` or by `close`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any

_SKIPPED = object()  # the result of a task that did not run because an earlier one failed
# A task given, in the reporter's queue: its future and what reports its result.
_Given = tuple[Future[Any], Callable[[Any], Any] | None]


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class BackgroundWriter:
    def __init__(self, max_pending: int = 16, threads: int | None = None):
        self.threads = threads or default_threads()
        # Bounded: a slow disk makes sampling wait rather than pile pictures up in memory.
        # As with one thread, a task being reported plus `max_pending` waiting behind it.
        self._slots = threading.Semaphore(max_pending + 1)
        self._order: queue.SimpleQueue[_Given | None] = queue.SimpleQueue()  # in the order given; None: stop
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="glidecli-writer")
        self._failed = threading.Event()  # set by the first task that fails, in any order
        self._error: BaseException | None = None
        self.done = 0  # tasks written and reported so far
        self._stopping = False
        # Callers finish the writer in a `finally` (cli/run.py); one that forgets cannot keep
        # the process alive (the reporter is a daemon) nor end it in the middle of a file (the
        # pool's threads finish the tasks given before the interpreter exits).
        self._reporter = threading.Thread(target=self._report_in_order, name="glidecli-writer-report", daemon=True)
        self._reporter.start()

    def _work(self, future: Future[Any], function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if not future.set_running_or_notify_cancel():
            return  # cancelled by a Ctrl-C inside `submit`
        if self._failed.is_set():
            future.set_result(_SKIPPED)  # after a failure, drop what is left
            return
        try:
            future.set_result(function(*args))
        except BaseException as error:  # noqa: BLE001 - handed on through the future
            self._failed.set()
            future.set_exception(error)

    def _report_in_order(self) -> None:
        stopped = False
        while True:
            item = self._order.get()
            if item is None:
                return
            future, report = item
            try:
                result = future.result()
                if stopped or result is _SKIPPED:  # skipped only after the failure that stopped us
                    continue
                if report is not None:
                    report(result)
                self.done += 1
            except CancelledError:
                pass
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                if not stopped:
                    self._error, stopped = error, True
                    self._failed.set()
            finally:
                self._slots.release()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, work: Callable[..., Any], *args: Any, report: Callable[[Any], Any] | None = None) -> None:
        """Queue `work(*args)` on the pool, then `report(its result)` in the order given;
        raises an earlier task's failure instead, if there was one."""
        self._raise_error()
        if self._stopping:
            raise RuntimeError("the writer is closed")
        self._slots.acquire()
        future: Future[Any] = Future()
        try:
            self._order.put((future, report))
            self._pool.submit(self._work, future, work, args)
        except BaseException:
            # A Ctrl-C between the two: the task is dropped whole (cancel fails if it already
            # runs), so the reporter never waits for a task that was not given to the pool.
            future.cancel()
            raise

    def close(self) -> None:
        """Wait for every queued task, then raise the first failure if there was one. Safe to
        call again (e.g. after a Ctrl-C interrupted the wait)."""
        self.finish()
        self._raise_error()

    def finish(self) -> None:
        """Wait for every queued task without raising (an exception is already on its way)."""
        if not self._stopping:
            self._stopping = True
            self._order.put(None)
        self._reporter.join()
        self._pool.shutdown(wait=True)
