"""The job manager: results, failures, cancellation and superseded requests, all as signals."""

from __future__ import annotations

import threading

import pytest

from engine import Cancelled, UserError
from engine.core.errors import UntrustedFile
from engine.core.progress import EpochLosses
from gui.jobs import DEVICE_LANE, FILE_LANE, JobManager, error_text


@pytest.fixture
def manager(qtbot):
    jobs = JobManager()
    yield jobs
    jobs.shutdown(wait=True)


def test_a_job_reports_progress_and_its_result(manager, qtbot):
    def work(progress, cancel):
        for i in range(3):
            progress(i / 3, f"step {i}")
        progress(1.0, "done")
        return 42

    job = manager.submit(work, "answer", lane=FILE_LANE)
    reports = []
    job.signals.progress.connect(lambda f, m, data: reports.append((f, m)))
    with qtbot.waitSignal(job.signals.finished, timeout=10000) as blocker:
        pass
    assert blocker.args == [42]
    assert job.state == "finished" and not manager.active
    assert reports and reports[-1] == (1.0, "done")


def test_a_user_error_becomes_failed_with_the_exception_itself(manager, qtbot):
    def work(progress, cancel):
        raise UntrustedFile("whole.pt", "whole.pt: refused to load")

    job = manager.submit(work, "broken")
    with qtbot.waitSignal(job.signals.failed, timeout=10000) as blocker:
        pass
    (error,) = blocker.args
    assert isinstance(error, UntrustedFile) and str(error.path) == "whole.pt"  # views decide from the type
    assert error_text(error) == job.error == "whole.pt: refused to load"  # written for the user: shown as it is
    assert job.exception is error and error.__traceback__ is None  # no frames (and their tensors) kept alive


def test_any_exception_becomes_failed_and_its_text_names_the_type(manager, qtbot):
    job = manager.submit(lambda progress, cancel: 1 / 0, "bug")
    with qtbot.waitSignal(job.signals.failed, timeout=10000) as blocker:
        pass
    assert isinstance(blocker.args[0], ZeroDivisionError)
    assert job.error.startswith("ZeroDivisionError: ") and not isinstance(blocker.args[0], UserError)


def test_progress_carries_payloads_and_never_drops_them(manager, qtbot):
    def work(progress, cancel):
        for epoch in range(1, 51):  # far faster than the ten text reports a second that get through
            progress(epoch / 50, f"epoch {epoch}", EpochLosses(epoch, 50, 1.0 / epoch, 2.0 / epoch))
        for step in range(50):
            progress(step / 50, f"text only {step}")
        return "done"

    job = manager.submit(work, "payloads", lane=FILE_LANE)
    payloads, texts = [], []
    job.signals.progress.connect(lambda f, m, data: payloads.append(data) if data is not None else texts.append(m))
    with qtbot.waitSignal(job.signals.finished, timeout=10000):
        pass
    assert [p.epoch for p in payloads] == list(range(1, 51))
    assert all(isinstance(p, EpochLosses) and p.validation == 2 * p.loss for p in payloads)
    assert len(texts) < 10  # text-only reports are throttled: the latest supersedes the others


def _wait_for_cancel(progress, cancel):
    progress(0.0, "waiting")
    while True:
        cancel.check()
        threading.Event().wait(0.005)


def test_cancel_ends_a_running_job_cancelled(manager, qtbot):
    job = manager.submit(_wait_for_cancel, "long")
    qtbot.waitUntil(lambda: job.state == "running", timeout=10000)
    with qtbot.waitSignal(job.signals.cancelled, timeout=2000):
        manager.cancel(job)
    assert job.state == "cancelled"


def test_a_queued_job_cancelled_before_it_starts_never_runs(manager, qtbot):
    blocker_job = manager.submit(_wait_for_cancel, "blocks the device lane", lane=DEVICE_LANE)
    ran = []
    queued = manager.submit(lambda progress, cancel: ran.append(1), "queued", lane=DEVICE_LANE)
    with qtbot.waitSignal(queued.signals.cancelled, timeout=2000):
        manager.cancel(queued)
    manager.cancel(blocker_job)
    qtbot.waitUntil(lambda: not manager.active, timeout=5000)
    assert not ran


def test_a_newer_request_for_the_same_key_cancels_the_older(manager, qtbot):
    older = manager.submit(_wait_for_cancel, "old", key="view", lane=FILE_LANE)
    qtbot.waitUntil(lambda: older.state == "running", timeout=10000)
    results = []
    older.signals.finished.connect(results.append)
    fresh = []
    with qtbot.waitSignal(older.signals.cancelled, timeout=5000):
        newer = manager.submit(lambda progress, cancel: "new", "new", key="view", lane=FILE_LANE)
        newer.signals.finished.connect(fresh.append)
    qtbot.waitUntil(lambda: newer.ended, timeout=5000)
    assert fresh == ["new"] and not results


def test_a_stale_result_is_dropped(manager, qtbot):
    release = threading.Event()

    def slow(progress, cancel):
        release.wait(5)
        return "stale"  # ignores its token: the manager must still drop the result

    older = manager.submit(slow, "old", key="k", lane=FILE_LANE)
    qtbot.waitUntil(lambda: older.state == "running", timeout=10000)
    got = []
    older.signals.finished.connect(got.append)
    with qtbot.waitSignal(older.signals.cancelled, timeout=5000):
        newer = manager.submit(lambda progress, cancel: "fresh", "new", key="k", lane=FILE_LANE)
        release.set()
    qtbot.waitUntil(lambda: newer.state == "finished", timeout=5000)
    qtbot.waitUntil(lambda: older.ended, timeout=5000)
    assert older.state == "cancelled" and not got


def test_shutdown_cancels_and_waits(qtbot):
    manager = JobManager()
    job = manager.submit(_wait_for_cancel, "long")
    queued = manager.submit(_wait_for_cancel, "queued")
    qtbot.waitUntil(lambda: job.state == "running", timeout=10000)
    assert manager.shutdown(wait=True)
    assert job.state == "cancelled" and queued.state == "cancelled"


def test_the_engine_cancelled_exception_ends_cancelled(manager, qtbot):
    def work(progress, cancel):
        raise Cancelled("stopped inside the engine")

    job = manager.submit(work, "cancels itself")
    with qtbot.waitSignal(job.signals.cancelled, timeout=5000):
        pass


def test_the_jobs_dock_estimates_the_time_left_from_the_rate_so_far():
    from types import SimpleNamespace

    from gui.panels.jobs_panel import time_text

    def job(state, elapsed, fraction):
        return SimpleNamespace(state=state, fraction=fraction, elapsed=lambda: elapsed)

    assert time_text(job("running", 10.0, 0.25)) == "10.0 s, ~30 s left"
    assert time_text(job("running", 60.0, 0.2)) == "60.0 s, ~4 min left"
    assert time_text(job("running", 1.0, 0.5)) == "1.0 s"  # too early to say
    assert time_text(job("running", 10.0, 0.0)) == "10.0 s"  # no progress reported yet
    assert time_text(job("finished", 10.0, 1.0)) == "10.0 s"
