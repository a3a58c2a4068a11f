"""Every job run the same way: lock, run history, heartbeat, alerts.

Side effects after the job (history, heartbeat, alerts) are best-effort: each is logged if it
fails and none of them can replace the job's own error or exit code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from estore_ops.ops import health
from estore_ops.ops.alerts import AlertManager, Failure
from estore_ops.errors import EnvironmentFaultError, LockHeldError, UsageError
from estore_ops.testing.faults import pause_point
from estore_ops.ops.history import FAILED, SUCCESS, RunHistory, RunRecord, now_iso
from estore_ops.ops.lock import RunLock
from estore_ops.logs import get_logger
from estore_ops.redact import redact
from estore_ops.runtime import Runtime

log = get_logger("jobs")


def _best_effort(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        log.warning("%s failed: %s", what, redact(str(exc)))
        return None


def alert_manager(rt: Runtime) -> AlertManager | None:
    from estore_ops.ops.notify import open_notifier

    try:
        notifier = open_notifier(rt.settings)
    except Exception as exc:
        log.warning("alerts disabled: %s", redact(str(exc)))
        return None
    return AlertManager(notifier, rt.state_backend, rt.settings.alert_dedup_minutes)


@contextmanager
def run_lock(rt: Runtime, command: str) -> Iterator[RunLock]:
    """Hold the one run lock for the duration of a job (DuckDB allows one writer, too)."""
    lock = RunLock(rt.state_backend, rt.run_id, command, rt.settings.lock_lease_seconds)
    with lock:
        rt.lock = lock
        try:
            pause_point("lock_held")
            yield lock
        finally:
            rt.lock = None


@contextmanager
def tracked_job(rt: Runtime, job: str, lock: bool = True, heartbeat: bool = True) -> Iterator[RunRecord]:
    """Run a job under the lock and record it. The body fills `record` (files, rows, failures)."""
    history = RunHistory(rt.state_backend, rt.settings.runs_keep)
    record = RunRecord(rt.run_id, job)
    log.info("%s started", job, extra={"fields": {"job": job}})
    try:
        with run_lock(rt, job) if lock else nullcontext():
            _best_effort("recording the run start", history.save, record)
            yield record
    except LockHeldError:
        raise  # nothing ran: not a failure, not recorded (a busy lock every tick would flood the history)
    except UsageError as exc:
        # The command's own arguments are wrong (commands check them before the job starts; this
        # is a file that vanished in between): recorded, never alerted.
        record.status, record.error = FAILED, redact(str(exc))
        _finish(rt, history, record, alert=False)
        raise
    except EnvironmentFaultError as exc:
        # The machine, not a file: the run stopped before blaming anything. One alert per episode.
        record.status = FAILED
        record.error = redact(str(exc))
        record.failures = [{"subject": f"environment ({exc.kind or 'machine'}) {exc.path}".strip(), "error": record.error}]
        _finish(rt, history, record, environment=exc)
        raise
    except BaseException as exc:
        record.status = FAILED
        record.error = redact(str(exc)) or type(exc).__name__
        if not record.failures:
            record.failures = [{"subject": job, "error": record.error}]
        _finish(rt, history, record)
        raise
    else:
        record.status = FAILED if record.failures else SUCCESS
        _finish(rt, history, record, heartbeat)


def _finish(rt: Runtime, history: RunHistory, record: RunRecord, heartbeat: bool = True,
            environment: EnvironmentFaultError | None = None, alert: bool = True) -> None:
    record.ended_at = now_iso()
    _best_effort("recording the run", history.save, record)
    log.info(
        "%s %s", record.job, record.status,
        extra={"fields": {"job": record.job, "status": record.status, "rows": record.rows_loaded, "seconds": record.seconds}},
    )
    if not alert:
        return
    alerts = alert_manager(rt)
    if record.status == SUCCESS:
        if heartbeat:
            _best_effort("recording the heartbeat", health.beat, rt.state_backend, record.job, record.run_id)
        if alerts:
            _best_effort("sending the recovery alert", alerts.success, record.job, record.run_id)
        return
    if environment is not None:
        episode = _best_effort("recording the environment fault", health.environment_failed, rt.state_backend,
                               record.job, record.run_id, record.error or "", environment.path, environment.kind)
        if episode is not None and episode.get("alerted"):
            log.info("alert suppressed: %s has been failing because of the machine since %s (already alerted)",
                     record.job, episode["since"])
            return
        if alerts:
            failures = [Failure(f["subject"], f["error"]) for f in record.failures]
            if _best_effort("sending the failure alert", alerts.failure, record.job, record.run_id, failures):
                _best_effort("recording the alert", health.environment_alerted, rt.state_backend, record.job)
        return
    if alerts:
        failures = [Failure(f["subject"], f["error"]) for f in record.failures]
        _best_effort("sending the failure alert", alerts.failure, record.job, record.run_id, failures)
