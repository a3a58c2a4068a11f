"""The operations behind each command: one function per command, usable from Python without the CLI."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from estore_ops.ops import health

from estore_ops.ingest import pipeline as ingest
from estore_ops.ops.history import RunRecord
from estore_ops.errors import ConfigError, CorruptStateError, EstoreError, LockLostError, StoppedError
from estore_ops.ingest.pipeline import LoadResult, PendingFile, ScanResult
from estore_ops.runtime import Runtime
from estore_ops.ingest.state import Snapshot
from estore_ops.backends.stores.base import ObjectInfo
from estore_ops.ops.tracking import run_lock, tracked_job
from estore_ops.backends.warehouses.base import FileOutcome

if TYPE_CHECKING:
    from estore_ops.analytics.html_report import HtmlReport
    from estore_ops.analytics.transform import DbtRunResult
    from estore_ops.ops.verify import VerifyResult
    from estore_ops.deploy.upgrade.dbt_schema import DbtSetup
    from estore_ops.deploy.upgrade.framework import UpgradeResult


def scan(rt: Runtime, prefix: str = "") -> ScanResult:
    state = rt.state.read().state
    return ingest.scan(rt.landing, state, rt.settings.max_attempts, prefix)


def _load(
    rt: Runtime,
    files: Sequence[str] = (),
    prefix: str = "",
    force: bool = False,
    dry_run: bool = False,
    on_start: Callable[[list[PendingFile]], None] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    skip_missing: bool = False,
    accept: Callable[[ObjectInfo], bool] | None = None,
) -> LoadResult:
    def stop() -> bool:
        return bool(rt.lock is not None and rt.lock.lost.is_set()) or bool(should_stop and should_stop())

    from estore_ops.deploy.upgrade.guard import RawTableGuard

    warehouse = RawTableGuard(rt.warehouse())  # raw events of an earlier version: upgraded before the first file
    try:
        result = ingest.load_files(
            run_id=rt.run_id, landing=rt.landing, state_store=rt.state, warehouse=warehouse,
            max_attempts=rt.settings.max_attempts, files=files, prefix=prefix, force=force,
            dry_run=dry_run, on_start=on_start, on_file=on_file, should_stop=stop,
            checkpoint_seconds=rt.settings.state_checkpoint_seconds, skip_missing=skip_missing, accept=accept,
        )
    finally:
        warehouse.close()
    if result.loaded:
        health.mark_data_loaded(rt.state_backend, rt.run_id)
    if rt.lock is not None and rt.lock.lost.is_set():
        raise LockLostError(
            f"This run lost the run lock to another run (its lease could not be renewed in time) and stopped after "
            f"the file (or batch of small files) in progress: {len(result.loaded)} file(s) loaded and recorded, the rest stay pending."
        )
    return result


def _record_load(record: RunRecord, result: LoadResult) -> None:
    record.files_loaded, record.files_failed, record.rows_loaded = len(result.loaded), len(result.failed), result.rows
    record.failures += [{"subject": o.name, "error": o.error or ""} for o in result.failed]


def load(
    rt: Runtime,
    files: Sequence[str] = (),
    prefix: str = "",
    force: bool = False,
    dry_run: bool = False,
    on_start: Callable[[list[PendingFile]], None] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
) -> LoadResult:
    if files:
        ingest.check_requested_files(rt.landing, files)
    if dry_run:
        return _load(rt, files, prefix, force, dry_run, on_start, on_file)
    with tracked_job(rt, "load") as record:
        result = _load(rt, files, prefix, force, dry_run, on_start, on_file)
        _record_load(record, result)
        return result


# -- dbt ----------------------------------------------------------------------------------------


def dbt_setup(rt: Runtime, ensure_raw_table: bool = True) -> DbtSetup:
    """The project, profile target and vars every dbt invocation of this deployment uses."""
    from estore_ops.analytics.transform import default_project_dir
    from estore_ops.deploy.upgrade.dbt_schema import DbtSetup

    warehouse = rt.warehouse()
    try:
        if ensure_raw_table:
            warehouse.ensure_raw_table()  # models over an empty table build empty, not fail
        target = warehouse.dbt_target(rt.settings)
        raw_schema = warehouse.raw_schema
    finally:
        warehouse.close()  # DuckDB allows one writer: dbt opens the file itself
    project = Path(rt.settings.dbt_project_dir) if rt.settings.dbt_project_dir else default_project_dir()
    return DbtSetup(project, target, rt.work_dir, {"raw_schema": raw_schema})


def _dbt(rt: Runtime, command: str, setup: DbtSetup | None = None, **options: Any) -> DbtRunResult:
    from estore_ops.analytics.transform import TransformStopped, keep_artifacts, run_dbt, stopped_by_signals

    setup = setup or dbt_setup(rt)
    canceller = _RunJobsCanceller(rt)
    try:
        with stopped_by_signals(canceller.cancel):
            result = run_dbt(
                project_dir=setup.project_dir, target=setup.target, work_dir=setup.work_dir, command=command,
                vars=setup.vars, quiet=True, run_id=rt.run_id, **options,
            )
    except TransformStopped as stop:
        raise StoppedError(f"dbt {command} was stopped by {stop.signal_name}; {canceller.finish()}") from None
    if result.artifacts:
        keep_artifacts(rt.state_backend, rt.run_id, result.artifacts, rt.settings.dbt_artifacts_keep)
    return result


class _RunJobsCanceller:
    """Cancels the warehouse jobs this run started that are still running (BigQuery: found by the
    estore_run_id label). `cancel` runs in a thread as soon as a stop signal arrives; `finish`
    waits for it, cancels what started meanwhile, and says what was done."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.since = datetime.now(timezone.utc) - timedelta(minutes=1)  # clock skew margin for the listing
        self.cancelled: list[str] = []
        self.problem = ""
        self.supported = True
        self.started = False
        self.done = threading.Event()

    def cancel(self) -> None:
        self.started = True
        try:
            warehouse = self.rt.warehouse()
            try:
                cancel = getattr(warehouse, "cancel_jobs", None)
                if cancel is None:
                    self.supported = False
                    return
                self.cancelled += [j for j in cancel(self.rt.run_id, self.since) if j not in self.cancelled]
            finally:
                warehouse.close()
        except EstoreError as exc:
            self.problem = str(exc)
        finally:
            self.done.set()

    def finish(self, timeout: float = 60.0) -> str:
        if self.started:
            self.done.wait(timeout)
        self.cancel()  # jobs dbt started while the first pass ran
        if not self.supported:
            return "nothing runs on after this process."
        if self.problem:
            return f"could not cancel its BigQuery jobs ({self.problem}); check `bq ls -j` for jobs labelled estore_run_id."
        return f"{len(self.cancelled)} BigQuery job(s) of this run cancelled" + (f": {', '.join(self.cancelled)}." if self.cancelled else ".")


def _machine_fault(rt: Runtime, result: DbtRunResult) -> None:
    """A dbt run that failed only because of the machine (the warehouse's disk full, out of memory)
    stops like a load does: exit 4, one alert per episode, no model blamed."""
    from estore_ops.backends import environment
    from estore_ops.backends.warehouses import duckdb_path

    if result.ok or not rt.settings.warehouse.startswith("duckdb:"):
        return
    messages = [n.message or "" for n in result.failed_nodes] or [result.error or ""]
    faults = [environment.from_warehouse_message(m, duckdb_path(rt.settings.warehouse)) for m in messages]
    if faults and all(faults):
        raise faults[0]  # type: ignore[misc]


def _build(
    rt: Runtime, select: Sequence[str] = (), exclude: Sequence[str] = (), full_refresh: bool = False, no_test: bool = False
) -> DbtRunResult:
    """dbt build, after the incremental models whose columns changed with this version were rebuilt."""
    from estore_ops.deploy.upgrade.guard import guarded_build

    setup = dbt_setup(rt)
    return guarded_build(
        rt, setup,
        lambda: _dbt(rt, "build", setup, select=list(select) or None, exclude=list(exclude) or None,
                     full_refresh=full_refresh, no_test=no_test),
        select, exclude, full_refresh,
    )


def _record_dbt(record: RunRecord, result: DbtRunResult) -> None:
    record.dbt_nodes = result.counts()
    if result.ok:
        return
    failed = result.failed_nodes
    if failed:
        record.failures += [{"subject": f"{n.kind} {n.name}", "error": n.message or n.status} for n in failed]
    else:
        record.failures.append({"subject": f"dbt {result.command}", "error": result.error or "dbt failed"})


def transform(
    rt: Runtime, select: Sequence[str] = (), exclude: Sequence[str] = (), full_refresh: bool = False, no_test: bool = False
) -> DbtRunResult:
    """dbt build: models and their tests."""
    # A partial build (--select/--exclude) does not make the models fresh: no heartbeat.
    with tracked_job(rt, "transform", heartbeat=not (select or exclude)) as record:
        result = _build(rt, select, exclude, full_refresh, no_test)
        _record_dbt(record, result)
        _machine_fault(rt, result)
        return result


def snapshot(rt: Runtime, select: Sequence[str] = ()) -> DbtRunResult:
    """dbt snapshot: SCD2 history of the RFM segments and user statuses."""
    with tracked_job(rt, "snapshot") as record:
        from estore_ops.deploy.upgrade.guard import guarded_snapshot

        setup = dbt_setup(rt)
        result = guarded_snapshot(rt, setup, lambda: _dbt(rt, "snapshot", setup, select=list(select) or None), select)
        _record_dbt(record, result)
        _machine_fault(rt, result)
        return result


def upgrade(rt: Runtime, dry_run: bool = False, allow_rewrite: bool = False, unit_dir: Path | None = None) -> UpgradeResult:
    """Bring a deployment made by an earlier version up to this one (see estore_ops.deploy.upgrade)."""
    from estore_ops.deploy.upgrade.framework import run_steps
    from estore_ops.deploy.upgrade.steps import STEPS, UpgradeContext

    ctx = UpgradeContext(rt, dry_run, allow_rewrite)
    if unit_dir is not None:
        ctx.unit_dir = unit_dir
    if dry_run:
        return run_steps(STEPS, ctx, dry_run=True, run_id=rt.run_id)  # no lock: nothing is written
    with tracked_job(rt, "upgrade") as record:
        result = run_steps(STEPS, ctx, dry_run=False, run_id=rt.run_id)
        record.failures += [{"subject": f"upgrade: {s.name}", "error": s.error or ""} for s in result.failed]
        return result


# -- the ingest tick (watch and the 5-minute timer) ------------------------------------------------


@dataclass
class TickResult:
    run_id: str
    load: LoadResult
    transform: DbtRunResult | None = None
    transform_reason: str = ""

    @property
    def ok(self) -> bool:
        return self.load.ok and (self.transform is None or self.transform.ok)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "ok": self.ok, "load": self.load.as_dict(),
            "transform": None if self.transform is None else {
                "ok": self.transform.ok, "reason": self.transform_reason, "nodes": self.transform.counts(),
                "error": self.transform.error, "seconds": round(self.transform.elapsed, 2),
            },
        }

    def status_line(self) -> str:
        line = (f"tick {self.run_id}: {len(self.load.loaded)} file(s) loaded, {self.load.rows} rows, "
                f"{len(self.load.failed)} failed")
        if self.transform is not None:
            line += f"; transform {'ok' if self.transform.ok else 'FAILED'} ({self.transform_reason}, {self.transform.elapsed:.1f}s)"
        return line


def ingest_tick(rt: Runtime, should_stop: Callable[[], bool] | None = None) -> TickResult:
    """Scan, load new files, and run one transform when data arrived since the last good transform."""
    with tracked_job(rt, "watch") as record:
        result = TickResult(rt.run_id, _load(rt, should_stop=should_stop))
        _record_load(record, result.load)
        reason = health.transform_due(rt.state_backend)
        if reason and not (should_stop and should_stop()):
            result.transform_reason = reason
            result.transform = _build(rt)
            _record_dbt(record, result.transform)
            _machine_fault(rt, result.transform)
            if result.transform.ok:
                health.beat(rt.state_backend, "transform", rt.run_id)
        return result


def ingest_arrivals(
    rt: Runtime,
    files: Sequence[str] = (),
    accept: Callable[[ObjectInfo], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoadResult:
    """One batch of `watch --events`: load the files named (or, with none, every pending file
    that `accept` takes: the catch-up scan), as a tracked `watch` job under the run lock."""
    with tracked_job(rt, "watch") as record:
        result = _load(rt, files=files, should_stop=should_stop, skip_missing=True, accept=accept)
        _record_load(record, result)
        return result


def cursor_show(rt: Runtime) -> dict[str, Any]:
    snap = rt.state.read()
    return ingest.cursor_summary(snap.state, rt.state.location) | {"generation": snap.generation}


def cursor_reset(rt: Runtime, all_files: bool, files: Sequence[str]) -> dict[str, Any]:
    if all_files == bool(files):
        raise ConfigError("cursor reset needs either --all or one or more --file NAME (not both).")
    with run_lock(rt, "cursor reset"):
        if all_files:
            try:
                before = rt.state.read().state
                count: int | None = len(before.files) + len(before.folded)
            except CorruptStateError:
                count = None  # resetting is the way out of a corrupt document
            rt.state.reset()
            return {"reset": "all", "forgotten": count}
        forgotten = ingest.forget_files(rt.state, files)
    unknown = [f for f in files if f not in forgotten]
    return {"reset": "files", "forgotten": forgotten, "not_in_state": unknown}


def cursor_restore(rt: Runtime) -> Snapshot:
    with run_lock(rt, "cursor restore"):
        return rt.state.restore_previous()


# -- health, runs, alerts -----------------------------------------------------------------------


def health_check(rt: Runtime) -> tuple[list[health.HealthRow], bool]:
    """Heartbeat ages against thresholds; alerts once per stale episode. Returns (rows, alerted)."""
    from estore_ops.ops.documents import JsonDocument
    from estore_ops.ops.notify import Alert
    from estore_ops.ops.tracking import alert_manager

    rows = health.check(rt.state_backend, rt.settings)
    stale = {r.check for r in rows if r.stale}
    episodes = JsonDocument(rt.state_backend, health.EPISODES_NAME)
    known, _ = episodes.read()
    new = sorted(stale - set(known))
    recovered = sorted(set(known) - stale)
    alerted = False
    alerts = alert_manager(rt) if (new or recovered) else None
    if new and alerts:
        lines = []
        for r in rows:
            if r.check in new:
                problem = r.problem().removeprefix(f"{r.check}:").removeprefix(r.check).strip()
                lines.append(f"*{r.check}*: {problem}")
        lines.append("A timer may have stopped, the VM may be down, or a job keeps stopping on a fault of the machine: "
                     "`systemctl list-timers 'estore-ops*'`, `estore-ops runs`.")
        alerted = alerts.send(Alert("stale", ":warning: estore-ops pipeline is stale", lines))
    if recovered and alerts:
        alerts.send(Alert("recovery", f":large_green_circle: estore-ops heartbeat fresh again: {', '.join(recovered)}"))
    if (new and alerted) or recovered:
        def change(doc: dict[str, Any]) -> None:
            for name in recovered:
                doc.pop(name, None)
            if alerted:  # an episode whose alert did not go out is alerted again next time
                for name in new:
                    doc[name] = rt.run_id
        episodes.update(change)
    return rows, alerted


def runs(rt: Runtime, job: str | None, status: str | None, limit: int) -> list[RunRecord]:
    from estore_ops.ops.history import RunHistory

    return RunHistory(rt.state_backend, rt.settings.runs_keep).list(job, status, limit)


def run_detail(rt: Runtime, run_id: str) -> RunRecord:
    from estore_ops.ops.history import RunHistory

    return RunHistory(rt.state_backend, rt.settings.runs_keep).get(run_id)


def report(rt: Runtime) -> dict[str, list[dict[str, Any]]]:
    """The headline results from the built marts (RFM segments, funnel, churn)."""
    from estore_ops.analytics.reports import headline

    warehouse = rt.warehouse(read_only=True)
    try:
        return headline(warehouse)
    finally:
        warehouse.close()


def verify(
    rt: Runtime,
    deep: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    fail_on_gone: bool = False,
    prefix: str = "",
) -> VerifyResult:
    """Compare the warehouse, the state and the landing files (see estore_ops.ops.verify).

    Runs under the lock (a load in progress would make the counts disagree for a moment), is
    recorded in the run history, and a mismatch alerts once per problem (deduplicated).
    """
    from estore_ops.ops import verify as audit

    with tracked_job(rt, "verify") as record:
        state = rt.state.read().state
        listing = audit.list_landing(rt.landing, prefix)
        warehouse = rt.warehouse(read_only=True)
        try:
            result = audit.verify(state, listing, warehouse, rt.landing, deep=deep, since=since, until=until,
                                  fail_on_gone=fail_on_gone, prefix=prefix)
        finally:
            warehouse.close()
        result.run_id = rt.run_id
        record.failures += [
            {"subject": c.name, "error": f"{c.verdict}: {c.detail}. Fix: {c.fix}"} for c in result.problems
        ]
        return result


def report_html(rt: Runtime, path: Path) -> HtmlReport:
    """Write the self-contained HTML report: marts for the numbers, the state for the freshness."""
    from estore_ops.ops.documents import JsonDocument
    from estore_ops.analytics.html_report import build_report
    from estore_ops.analytics.html_report.data import Freshness

    state = rt.state.read().state
    summary = ingest.cursor_summary(state, rt.state.location)
    pending = ingest.scan(rt.landing, state, rt.settings.max_attempts).pending
    beats, _ = JsonDocument(rt.state_backend, health.HEARTBEATS_NAME).read()
    newest = summary["newest_loaded"] or {}
    freshness = Freshness(
        newest_file=newest.get("name"), newest_loaded_at=newest.get("loaded_at"), loaded_files=summary["counts"]["loaded"],
        pending=[p.info.name for p in pending], failed=summary["problems"],
        last_transform=beats.get("transform", {}).get("at"), data_loaded=beats.get("data_loaded", {}).get("at"),
    )
    warehouse = rt.warehouse(read_only=True)
    try:
        return build_report(warehouse, freshness, path)
    finally:
        warehouse.close()


def alert_test(rt: Runtime) -> str:
    """Send a test message through the configured notifier; raises NotifyError if it fails."""
    import socket

    from estore_ops.ops.notify import Alert, open_notifier

    notifier = open_notifier(rt.settings)
    notifier.send(Alert("test", ":wave: estore-ops test alert", [f"Sent from `{socket.gethostname()}`, run `{rt.run_id}`."]))
    return notifier.name


def alert_unit_failure(rt: Runtime, unit: str) -> bool:
    """systemd OnFailure=: the unit failed, was killed or timed out (the job could not alert itself)."""
    import socket

    from estore_ops.ops.alerts import Failure
    from estore_ops.ops.tracking import alert_manager

    alerts = alert_manager(rt)
    if alerts is None:
        return False
    detail = f"systemd unit {unit} failed on {socket.gethostname()}. See `journalctl -u {unit} -n 50` and `estore-ops runs`."
    return alerts.failure(f"unit {unit}", rt.run_id, [Failure(unit, detail)])
