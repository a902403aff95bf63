"""The server's jobs: a bounded queue in submission order and one worker per device, each
owning one warm Session (models load on first use and stay; CUDA graphs and compiled
networks are reused by every later job).

A job is a planned request (request.planner). Its pictures are written into the server's
--out as they finish, under names the server makes with the command's file pattern. A job
can be cancelled while queued or while running: a running one stops at its next sampling
step, and a cancelled job leaves no file behind. A job that fails, fails alone, with the
CLI's one-line message; the worker goes on with the next one.
"""

from __future__ import annotations

import base64
import io
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..request.failures import failure_message
from ..request.plan import RenderPlan
from .uploads import hide_uploads

if TYPE_CHECKING:
    from ..diffusion.samplers import StepInfo
    from ..render.engine import RenderedImage
    from ..render.session import Reporter, Session
else:
    # render.session loads torch, which the server leaves to its first job: at run time the
    # job's reporter answers Reporter's two calls without being one of its subclasses.
    Reporter = object

log = logging.getLogger("glidecli.serve")


CLOSE_TIMEOUT = 60.0  # seconds close() waits for a worker to finish its step


class JobState(StrEnum):
    """Where a job is; its value is what GET /jobs/{id} and the events report."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class JobEvent(StrEnum):
    """A job's events other than its changes of state (each of those is named by its state)."""

    STEP = "step"
    IMAGE = "image"
    WARNING = "warning"
    PREVIEW = "preview"  # a PNG of the first picture's clean-image estimate (Job.previews asks for them)


class QueueFull(Exception):
    """The queue holds --max-queue jobs already."""


class JobCancelled(Exception):
    """Raised from a job's progress callback: its job was cancelled."""


@dataclass
class Job:
    """One request in the queue; its fields are what GET /jobs/{id} reports."""

    id: str
    command: str
    plan: RenderPlan
    pattern: str
    labels: dict[str, str] = field(default_factory=dict)  # upload path -> what the PNG records instead
    state: JobState = JobState.QUEUED
    stage: str | None = None
    step: int = 0
    total: int = 0
    images_done: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    worker: str | None = None
    created: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    render_seconds: float = 0.0  # inside the render (sampling), the rest of a job's time is the server's
    write_seconds: float = 0.0  # encoding and writing its PNGs
    keep_finished: bool = False  # a cancel that keeps the pictures finished before it (A1111's interrupt)
    every_step: bool = False  # an event at every sampling step (MCP's progress), not at most one per interval
    events: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    cleanup: Callable[[], None] | None = None  # removes the job's uploads when it ends
    previews: int = 0  # how many previews of its first stage's estimate to publish (OpenAI's partial_images)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class JobQueue:
    """Jobs in submission order, run by one worker thread per device. `max_queue` bounds
    the jobs waiting (not those running). `session_factory(device)` makes a worker's
    Session, once, when its first job starts."""

    def __init__(self, devices: list[str], session_factory: Callable[[str], Session], out: Path, max_queue: int = 16,
                 keep_finished_jobs: int = 1000, keep_seconds: float = 3600.0) -> None:
        self.out = out
        self.max_queue = max_queue
        self.keep_finished_jobs = keep_finished_jobs
        self.keep_seconds = keep_seconds
        self._session_factory = session_factory
        self._jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []  # queued jobs, oldest first
        self._lock = threading.Condition()
        self._names = threading.Lock()
        self._next_index: int | None = None
        self.sessions: dict[str, Session] = {}  # worker -> its Session, once made
        self._stopping = False
        # A worker's name is its device, numbered when several share one (two CPU workers).
        names = [device if devices.count(device) == 1 else f"{device}#{i}" for i, device in enumerate(devices)]
        self._workers = [
            threading.Thread(target=self._work, args=(name, device), name=f"glide-serve-{name}", daemon=True) for name, device in zip(names, devices)
        ]
        for worker in self._workers:
            worker.start()

    # --- what the routes call ------------------------------------------------------------------

    def submit(self, plan: RenderPlan, pattern: str, labels: dict[str, str] | None = None,
               cleanup: Callable[[], None] | None = None, previews: int = 0, every_step: bool = False) -> Job:
        with self._lock:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the queue holds {len(self._waiting)} jobs (--max-queue {self.max_queue}); try again later")
            job = Job(secrets.token_hex(8), plan.command, plan, pattern, dict(labels or {}), cleanup=cleanup, previews=previews,
                      every_step=every_step)
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._publish(job, JobState.QUEUED)
            self._forget_old()
            self._lock.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def position(self, job: Job) -> int | None:
        """0 for the next job to start; None once it has started."""
        with self._lock:
            return self._waiting.index(job) if job in self._waiting else None

    def cancel(self, job: Job, keep_finished: bool = False) -> bool:
        """Cancel a queued job at once, a running one at its next sampling step. False when
        the job had finished already."""
        with self._lock:
            if job.finished:
                return False
            job.keep_finished = keep_finished
            job.cancel_requested.set()
            if job in self._waiting:
                self._waiting.remove(job)
                self._end(job, JobState.CANCELLED)
            return True

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        """Block until the job has finished (True) or `timeout` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not job.finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def events(self, job: Job, keepalive: float = 15.0) -> Iterator[dict[str, Any] | None]:
        """The job's events in order, from the first, until its last; None every
        `keepalive` seconds without one (the stream sends a comment, and so notices a
        client that left)."""
        sent = 0
        while True:
            with self._lock:
                if sent >= len(job.events) and not job.finished:
                    self._lock.wait(keepalive)
                fresh = job.events[sent:]
                sent += len(fresh)
                finished = job.finished and sent >= len(job.events)
            yield from fresh
            if finished:
                return
            if not fresh:
                yield None

    def running(self) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if job.state == JobState.RUNNING]

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            for job in list(self._waiting):
                self._waiting.remove(job)
                self._end(job, JobState.CANCELLED)
            for job in self._jobs.values():
                job.cancel_requested.set()
            self._lock.notify_all()
        # A running job stops at its next sampling step: wait for it, so that nothing of this
        # queue still computes (and holds the cores) once close returns.
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout=CLOSE_TIMEOUT)

    # --- the workers --------------------------------------------------------------------------------

    def _work(self, worker: str, device: str) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._waiting.pop(0)
                job.state, job.worker, job.started_at = JobState.RUNNING, worker, time.time()
                self._publish(job, JobState.RUNNING)
            self._run(job, worker, device)

    def _run(self, job: Job, worker: str, device: str) -> None:
        written: list[Path] = []
        pictures: Iterator[RenderedImage] | None = None
        try:
            session = self.sessions.get(worker)
            if session is None:
                session = self.sessions[worker] = self._session_factory(device)
            reporter = _JobReporter(self, job)
            pictures = job.plan.run(session, job.plan.jobs, reporter)
            while True:
                started = time.perf_counter()
                rendered = next(pictures, None)
                job.render_seconds += time.perf_counter() - started
                if rendered is None:
                    break
                if job.cancel_requested.is_set() and not job.keep_finished:
                    raise JobCancelled()
                started = time.perf_counter()
                written.append(self._write(job, rendered))
                job.write_seconds += time.perf_counter() - started
                with self._lock:
                    job.images_done += 1
                    self._publish(job, JobEvent.IMAGE, file=job.files[-1])
                if job.cancel_requested.is_set():
                    raise JobCancelled()
        except JobCancelled:
            if not job.keep_finished:
                for path in written:
                    path.unlink(missing_ok=True)
                job.files.clear()
            with self._lock:
                self._end(job, JobState.CANCELLED)
        except Exception as error:  # noqa: BLE001 - a failing job fails alone; the worker goes on
            message = failure_message(error)
            if message is None:
                log.exception("job %s failed", job.id)
                message = f"internal error: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
            with self._lock:
                job.error = hide_uploads(message, job.labels)
                self._end(job, JobState.FAILED)
        else:
            with self._lock:
                self._end(job, JobState.DONE)
        finally:
            close = getattr(pictures, "close", None)
            if close is not None:  # a render stopped between pictures: end its generator now
                close()

    def _write(self, job: Job, rendered: RenderedImage) -> Path:
        """The picture under a new name in --out (the command's pattern, numbered on from
        the files already there, in the request's format), whole or not at all, never over
        another file."""
        from ..files.pictures import write_picture
        from ..files.pngfile import ImageError, next_free_index, render_output_path
        from ..files.vocabulary import ImageFormat

        meta = {key: job.labels.get(value, value) if isinstance(value, str) else value for key, value in rendered.meta.items()}
        image_format = job.plan.image_format or ImageFormat.PNG
        with self._names:
            if self._next_index is None:
                self._next_index = next_free_index(self.out)
            for _ in range(1000):
                index, self._next_index = self._next_index, self._next_index + 1
                path = render_output_path(self.out, index=index, seed=rendered.job.seed, prompt=rendered.job.prompt,
                                          pattern=job.pattern, count=index + 1, image_format=image_format)
                try:
                    write_picture(rendered.image, path, meta, image_format, job.plan.quality)
                except ImageError:
                    if path.exists():  # another program's file: take the next number
                        continue
                    raise
                break
        job.files.append({"name": path.relative_to(self.out).as_posix(), "seed": rendered.job.seed, "index": rendered.job.index, "settings": meta})
        return path

    # --- bookkeeping (under the lock) ---------------------------------------------------------------

    def _publish(self, job: Job, event: JobState | JobEvent, **extra: Any) -> None:
        job.events.append({"event": event, "state": job.state, "stage": job.stage, "step": job.step, "total": job.total,
                           "images_done": job.images_done, **extra})
        self._lock.notify_all()

    def _end(self, job: Job, state: JobState) -> None:
        job.state, job.finished_at = state, time.time()
        if job.cleanup is not None:
            job.cleanup()
        self._publish(job, state, **({"error": job.error} if job.error else {}))

    def _forget_old(self) -> None:
        """Drop finished jobs (and their events) older than keep_seconds, and the oldest
        beyond keep_finished_jobs: a long-running server's memory stays flat."""
        finished = [job for job in self._jobs.values() if job.finished]
        expired = time.time() - self.keep_seconds
        for index, job in enumerate(finished):
            if index < len(finished) - self.keep_finished_jobs or (job.finished_at or 0) < expired:
                del self._jobs[job.id]


class _JobReporter(Reporter):
    """A render.Reporter that records a job's progress and stops a cancelled job at its next
    step. The job's fields follow every step; its event stream gets a stage's first and last
    steps and at most one more every STEP_EVENT_INTERVAL seconds (each event wakes the
    threads that stream it, time the sampling loop shares its cores with)."""

    STEP_EVENT_INTERVAL = 0.1

    def __init__(self, jobs: JobQueue, job: Job) -> None:
        self.jobs, self.job = jobs, job
        self._published = 0.0
        self._previews_sent = 0
        self._first_stage: str | None = None

    def warn(self, message: str) -> None:
        with self.jobs._lock:
            self.jobs._publish(self.job, JobEvent.WARNING, message=message)

    def step(self, stage: str, info: StepInfo) -> None:
        job = self.job
        if job.cancel_requested.is_set():
            raise JobCancelled()
        now = time.monotonic()
        preview = self._preview(stage, info)
        with self.jobs._lock:
            job.stage, job.step, job.total = stage, info.index, info.total
            if job.every_step or info.index in (1, info.total) or now - self._published >= self.STEP_EVENT_INTERVAL:
                self._published = now
                self.jobs._publish(job, JobEvent.STEP)
            if preview is not None:
                self.jobs._publish(job, JobEvent.PREVIEW, b64_json=base64.b64encode(preview).decode(), preview_index=self._previews_sent - 1)

    def _preview(self, stage: str, info: StepInfo) -> bytes | None:
        """A PNG of the first picture's clean-image estimate at the job's preview steps: the
        first stage's steps split evenly in previews + 1 (the last is the finished picture)."""
        job = self.job
        if self._previews_sent >= job.previews or job.images_done or (self._first_stage or stage) != stage:
            return None
        self._first_stage = stage
        due = info.total * (self._previews_sent + 1) // (job.previews + 1)
        if info.index < max(1, due):
            return None
        from ..files.images import tensor_to_pil

        buffer = io.BytesIO()
        tensor_to_pil(info.x0[:1]).save(buffer, format="PNG")
        self._previews_sent += 1
        return buffer.getvalue()


def default_devices(devices: str | None, device: str) -> list[str]:
    """--devices cuda:0,cuda:1 (one worker each), else the one --device."""
    if not devices:
        return [device]
    names = [name.strip() for name in devices.split(",") if name.strip()]
    return names or [device]

