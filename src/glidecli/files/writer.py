"""Writing finished pictures on a thread of their own, so sampling never waits for PNG
encoding or the disk.

`BackgroundWriter` runs the tasks it is given (write a file, then say so) one at a time, in
the order given, on one thread: what a caller prints from them comes out in a fixed order.
Each task writes its file whole or not at all (pngfile.write_png: temporary name, then
rename); `close()` waits for every task already given, so an interrupted render still keeps
every picture it finished. The first failure stops the writer and is raised in the caller's
thread, by the next `submit` or by `close`.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional

_STOP = object()


class BackgroundWriter:
    def __init__(self, max_pending: int = 16):
        # Bounded: a slow disk makes sampling wait rather than pile pictures up in memory.
        self._tasks: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: Optional[BaseException] = None
        self.done = 0  # tasks finished so far
        self._stopping = False
        # A daemon, so a caller that forgets `finish` cannot keep the process alive; callers
        # finish it in a `finally` (cli/run.py), so the process never ends in the middle of a file.
        self._thread = threading.Thread(target=self._run, name="glidecli-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is _STOP:
                return
            if self._error is not None:
                continue  # after a failure, drop what is left
            function, args = task
            try:
                function(*args)
                self.done += 1
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue `function(*args)`; raises an earlier task's failure instead, if there was one."""
        self._raise_error()
        if not self._thread.is_alive():
            raise RuntimeError("the writer is closed")
        self._tasks.put((function, args))

    def close(self) -> None:
        """Wait for every queued task, then raise the first failure if there was one. Safe to
        call again (e.g. after a Ctrl-C interrupted the wait)."""
        self.finish()
        self._raise_error()

    def finish(self) -> None:
        """Wait for every queued task without raising (an exception is already on its way)."""
        if self._thread.is_alive():
            if not self._stopping:
                self._stopping = True
                self._tasks.put(_STOP)
            self._thread.join()
