"""Background jobs: engine calls run on a QThreadPool, results come back as Qt signals.

A job wraps a function ``fn(progress, cancel) -> result``. It runs on one of three lanes: ``device``
(one thread, so two analyses never fight over GPU memory), ``file`` (loading, thumbnails) or
``batch`` (one thread: a data-set run into a result store, which may take hours). The
worker thread talks to the main thread only through a private signal object; the manager checks
each report there and re-emits it on the job's public :class:`JobSignals`, dropping the results of
jobs that were cancelled or superseded meanwhile. Nothing here imports torch on the main thread:
the cancel token is made inside the worker, on first use of the engine, and the first job imports
torch there in a way that keeps the main thread responsive (gui/warmup.py).

A progress report carries the engine's typed payload (engine.core.progress: EpochLosses,
ObjectiveValue, PartialMap) and a failure carries the exception itself, so that views decide from
types and never parse text.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from itertools import count
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

log = logging.getLogger(__name__)

DEVICE_LANE = "device"
FILE_LANE = "file"
# A data-set run (engine.runs) takes minutes to hours: it gets a lane of its own, so the analyses of
# the device lane and the files of the file lane are not queued behind it.
BATCH_LANE = "batch"
PROGRESS_INTERVAL_S = 0.1  # at most about ten progress signals a second

ProgressFn = Callable[[float, str, Any], None]
JobFn = Callable[[ProgressFn, Any], Any]


class EngineUnavailable(RuntimeError):
    """The engine could not be imported on the worker (a broken installation)."""


def error_text(error: BaseException) -> str:
    """The one line a user reads for a failed job.

    A :class:`engine.core.errors.UserError` was written for the user and is shown as it is; any other
    exception is a bug, so its type is named too.
    """
    if isinstance(error, EngineUnavailable) or _is_user_error(error):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _detached(error: BaseException) -> BaseException:
    """The exception without its tracebacks: their frames hold the job's locals (models, tensors),
    which must not live on in the jobs list. The log has the traceback already."""
    seen = set()
    link = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return error


def _is_user_error(error: BaseException) -> bool:
    try:
        from engine.core.errors import UserError  # torch-free
    except Exception:  # a broken engine raises nothing written for the user
        return False
    return isinstance(error, UserError)


class JobSignals(QObject):
    """What a job tells the GUI; always emitted on the main thread."""

    started = Signal()
    progress = Signal(float, str, object)  # fraction, message, payload (engine.core.progress) or None
    finished = Signal(object)
    failed = Signal(object)  # the exception; error_text() makes the line to show
    cancelled = Signal()


class _WorkerSignals(QObject):
    """Raw reports from the worker thread, delivered (queued) to the manager."""

    started = Signal(object)
    progress = Signal(object, float, str, object)
    done = Signal(object, object)
    error = Signal(object, object)
    aborted = Signal(object)


class Job(QRunnable):
    """One unit of background work; create through :meth:`JobManager.submit`."""

    _ids = count(1)

    def __init__(self, fn: JobFn, title: str, lane: str, key: str | None, quiet: bool, raw: _WorkerSignals) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the manager owns the Python object until the job ends
        self.id = next(self._ids)
        self.fn = fn
        self.title = title
        self.lane = lane
        self.key = key
        self.quiet = quiet  # failures are logged in the jobs dock only, no message box
        self.signals = JobSignals()
        self._raw = raw
        self._lock = threading.Lock()
        self._cancel_requested = False
        self._token = None
        self.state = "queued"  # queued, running, finished, failed, cancelled
        self.fraction = 0.0
        self.message = ""
        self.error = ""  # error_text() of the failure, for lists and tooltips
        self.exception: BaseException | None = None
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.ended_at: float | None = None

    # ---------------------------------------------------------------- any thread
    def cancel(self) -> None:
        with self._lock:
            self._cancel_requested = True
            if self._token is not None:
                self._token.cancel()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def ended(self) -> bool:
        return self.state in ("finished", "failed", "cancelled")

    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    # ---------------------------------------------------------------- worker thread
    def run(self) -> None:
        raw = self._raw
        try:
            from engine.core.errors import Cancelled, UserError
            from engine.core.progress import CancelToken

            from .warmup import import_heavy_dependencies

            import_heavy_dependencies()  # once per process, here and not on the main thread
        except Exception as exc:  # a broken installation must still give a message, not a dead thread
            log.error("the engine cannot be imported:\n%s", traceback.format_exc())
            raw.error.emit(self, EngineUnavailable(f"the engine cannot be imported: {type(exc).__name__}: {exc}"))
            return
        with self._lock:
            self._token = CancelToken()
            if self._cancel_requested:
                self._token.cancel()
        token = self._token
        if token.cancelled:
            raw.aborted.emit(self)
            return
        raw.started.emit(self)
        last = [0.0]

        def progress(fraction: float, message: str = "", data: Any = None) -> None:
            # Text-only reports are throttled: the next one supersedes them. A payload is a datum a
            # view accumulates (one epoch's losses, one step's objective), so it is never dropped; the
            # engine sends at most one per epoch, step or batch.
            now = time.monotonic()
            if data is not None or now - last[0] >= PROGRESS_INTERVAL_S or fraction >= 1.0:
                last[0] = now
                raw.progress.emit(self, float(fraction), str(message), data)

        try:
            result = self.fn(progress, token)
        except Cancelled:
            raw.aborted.emit(self)
        except UserError as exc:
            raw.error.emit(self, _detached(exc))
        except Exception as exc:  # any bug in a job becomes a message; the app keeps running
            log.error("job %r failed:\n%s", self.title, traceback.format_exc())
            raw.error.emit(self, _detached(exc))
        else:
            raw.done.emit(self, result)


class JobManager(QObject):
    """Submits jobs to the two lanes, keeps them alive until they end and relays their signals."""

    job_added = Signal(object)
    job_changed = Signal(object)
    job_ended = Signal(object)
    active_changed = Signal(int)

    def __init__(self, parent: QObject | None = None, file_threads: int = 2) -> None:
        super().__init__(parent)
        self.pools = {DEVICE_LANE: QThreadPool(self), FILE_LANE: QThreadPool(self), BATCH_LANE: QThreadPool(self)}
        self.pools[DEVICE_LANE].setMaxThreadCount(1)
        self.pools[BATCH_LANE].setMaxThreadCount(1)
        self.pools[FILE_LANE].setMaxThreadCount(file_threads)
        self._raw = _WorkerSignals()
        self._raw.started.connect(self._on_started)
        self._raw.progress.connect(self._on_progress)
        self._raw.done.connect(self._on_done)
        self._raw.error.connect(self._on_error)
        self._raw.aborted.connect(self._on_aborted)
        self.active: dict[int, Job] = {}
        self._latest: dict[str, Job] = {}
        self._closed = False

    def submit(self, fn: JobFn, title: str, *, lane: str = DEVICE_LANE, key: str | None = None, quiet: bool = False, priority: int = 0) -> Job:
        """Queue ``fn(progress, cancel)``; a running job with the same ``key`` is cancelled first."""
        if lane not in self.pools:
            raise ValueError(f"unknown lane {lane!r}")
        job = Job(fn, title, lane, key, quiet, self._raw)
        if self._closed:
            job.state = "cancelled"
            return job
        if key is not None:
            older = self._latest.get(key)
            if older is not None and not older.ended:
                self.cancel(older)
            self._latest[key] = job
        self.active[job.id] = job
        self.job_added.emit(job)
        self.active_changed.emit(len(self.active))
        self.pools[lane].start(job, priority)
        return job

    def cancel(self, job: Job) -> None:
        """Ask a job to stop; a job still queued ends at once."""
        if job.ended:
            return
        job.cancel()
        if job.state == "queued" and self.pools[job.lane].tryTake(job):
            self._end(job, "cancelled")

    def cancel_all(self, lane: str | None = None) -> None:
        for job in list(self.active.values()):
            if lane is None or job.lane == lane:
                self.cancel(job)

    def is_current(self, job: Job) -> bool:
        return job.key is None or self._latest.get(job.key) is job

    def running(self) -> list[Job]:
        return list(self.active.values())

    def shutdown(self, wait: bool = True, timeout_ms: int = 30000) -> bool:
        """Cancel everything and (optionally) wait for the worker threads; True when all stopped."""
        self._closed = True
        self.cancel_all()
        stopped = True
        if wait:
            for pool in self.pools.values():
                pool.clear()
                stopped = pool.waitForDone(timeout_ms) and stopped
        for job in list(self.active.values()):
            self._end(job, "cancelled")
        return stopped

    # ---------------------------------------------------------------- main thread
    def _end(self, job: Job, state: str, payload: Any = None) -> None:
        if job.ended:
            return
        job.state = state
        job.ended_at = time.monotonic()
        self.active.pop(job.id, None)
        if self._latest.get(job.key) is job:
            del self._latest[job.key]
        if state == "finished":
            job.fraction = 1.0
            job.signals.finished.emit(payload)
        elif state == "failed":
            job.exception = payload
            job.error = error_text(payload)
            job.signals.failed.emit(payload)
        else:
            job.signals.cancelled.emit()
        self.job_ended.emit(job)
        self.active_changed.emit(len(self.active))

    @Slot(object)
    def _on_started(self, job: Job) -> None:
        if job.ended:
            return
        job.state = "running"
        job.started_at = time.monotonic()
        job.signals.started.emit()
        self.job_changed.emit(job)

    @Slot(object, float, str, object)
    def _on_progress(self, job: Job, fraction: float, message: str, data: Any) -> None:
        if job.ended or job.cancel_requested:
            return
        job.fraction, job.message = fraction, message
        job.signals.progress.emit(fraction, message, data)
        self.job_changed.emit(job)

    @Slot(object, object)
    def _on_done(self, job: Job, result: Any) -> None:
        # A result that arrives after its job was cancelled or superseded is stale: drop it.
        if job.cancel_requested or not self.is_current(job):
            self._end(job, "cancelled")
        else:
            self._end(job, "finished", result)

    @Slot(object, object)
    def _on_error(self, job: Job, error: BaseException) -> None:
        if job.cancel_requested:
            self._end(job, "cancelled")
        else:
            self._end(job, "failed", error)

    @Slot(object)
    def _on_aborted(self, job: Job) -> None:
        self._end(job, "cancelled")
