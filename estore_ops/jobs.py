"""The operations behind each command: one function per command, usable from Python without the CLI.

Each returns a typed result that knows its `as_dict()` (the command's `--json`); estore_ops.cli
renders the same object as plain `key=value` lines, a Rich table, or JSON.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from estore_ops.ops import health

from estore_ops.ingest import pipeline as ingest
from estore_ops.ops.history import RunRecord
from estore_ops.errors import ConfigError, CorruptStateError, EstoreError, LockLostError, StoppedError
from estore_ops.ingest.pipeline import LoadRequest, LoadResult, PendingFile, ScanResult
from estore_ops.runtime import Runtime
from estore_ops.ingest.state import Snapshot
from estore_ops.ops.tracking import run_lock, tracked_job
from estore_ops.backends.warehouses.base import FileOutcome

if TYPE_CHECKING:
    from estore_ops.analytics.html_report import HtmlReport
    from estore_ops.backends.stores.base import ObjectInfo
    from estore_ops.deploy.systemd import InstallResult, TimerStatus
    from estore_ops.ops.doctor import Check
    from estore_ops.ops.lock import LockInfo
    from estore_ops.testing.generate import WrittenFile
    from estore_ops.analytics.transform import DbtRunResult
    from estore_ops.ops.verify import VerifyResult
    from estore_ops.deploy.upgrade.dbt_schema import DbtSetup
    from estore_ops.deploy.upgrade.framework import UpgradeResult


def open_runtime(flags: dict[str, Any], config_file: str | None = None, verbose: bool = False) -> Runtime:
    """The settings (flag > ESTORE_* > file > default), secrets registered for masking, logging set up."""
    from estore_ops.config import load_settings
    from estore_ops.logs import configure_logging, set_run_id
    from estore_ops.redact import register_secret

    settings = load_settings(flags, config_file)
    for key in ("slack_webhook_url", "slack_bot_token"):
        register_secret(settings.values[key].get())
    rt = Runtime(settings)
    configure_logging(settings.log_format, verbose)
    set_run_id(rt.run_id)
    return rt


@dataclass
class ConfigReport:
    config_file: str | None
    settings: list[dict[str, Any]]  # key, value (secrets masked), source

    def as_dict(self) -> dict[str, Any]:
        return {"config_file": self.config_file, "settings": self.settings}


def config(rt: Runtime) -> ConfigReport:
    """Every effective setting and where it came from."""
    return ConfigReport(rt.settings.config_file, rt.settings.describe())


@dataclass
class ScanReport:
    result: ScanResult
    landing: str  # the landing area's URI
    list_requests: int | None = None  # Cloud Storage: pages of up to 1,000 objects

    @property
    def pending(self) -> list[PendingFile]:
        return self.result.pending

    @property
    def quarantined(self) -> list[ObjectInfo]:
        return self.result.quarantined

    @property
    def listed(self) -> int:
        return self.result.listed

    def as_dict(self) -> dict[str, Any]:
        return self.result.as_dict() | ({"list_requests": self.list_requests} if self.list_requests is not None else {})


def scan(rt: Runtime, prefix: str = "") -> ScanReport:
    state = rt.state.read().state
    result = ingest.scan(rt.landing, state, rt.settings.max_attempts, prefix)
    return ScanReport(result, rt.landing.uri(), getattr(rt.landing, "list_requests", None))


def _load(
    rt: Runtime,
    request: LoadRequest = LoadRequest(),
    on_start: Callable[[list[PendingFile]], None] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoadResult:
    def stop() -> bool:
        return bool(rt.lock is not None and rt.lock.lost.is_set()) or bool(should_stop and should_stop())

    from estore_ops.deploy.upgrade.guard import RawTableGuard

    warehouse = RawTableGuard(rt.warehouse())  # raw events of an earlier version: upgraded before the first file
    try:
        result = ingest.load_files(
            run_id=rt.run_id, landing=rt.landing, state_store=rt.state, warehouse=warehouse,
            max_attempts=rt.settings.max_attempts, request=request, on_start=on_start, on_file=on_file,
            should_stop=stop, checkpoint_seconds=rt.settings.state_checkpoint_seconds,
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
    request: LoadRequest = LoadRequest(),
    on_start: Callable[[list[PendingFile]], None] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
) -> LoadResult:
    """`estore-ops load`: every pending file, or what `request` names (a dry run is not recorded)."""
    if request.files:
        ingest.check_requested_files(rt.landing, request.files)
    if request.dry_run:
        return _load(rt, request, on_start, on_file)
    with tracked_job(rt, "load") as record:
        result = _load(rt, request, on_start, on_file)
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
    from estore_ops.backends.registry import warehouse_backend

    if result.ok:
        return
    url = rt.settings.warehouse
    backend = warehouse_backend(url)
    messages = [n.message or "" for n in result.failed_nodes] or [result.error or ""]
    faults = [f for f in (backend.environment_fault(m, url) for m in messages) if f is not None]
    if faults and len(faults) == len(messages):
        raise faults[0]


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
        result.run_id = rt.run_id
        _record_dbt(record, result)
        _machine_fault(rt, result)
        return result


def snapshot(rt: Runtime, select: Sequence[str] = ()) -> DbtRunResult:
    """dbt snapshot: SCD2 history of the RFM segments and user statuses."""
    with tracked_job(rt, "snapshot") as record:
        from estore_ops.deploy.upgrade.guard import guarded_snapshot

        setup = dbt_setup(rt)
        result = guarded_snapshot(rt, setup, lambda: _dbt(rt, "snapshot", setup, select=list(select) or None), select)
        result.run_id = rt.run_id
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


def ingest_arrivals(rt: Runtime, request: LoadRequest, should_stop: Callable[[], bool] | None = None) -> LoadResult:
    """One batch of `watch --events`: load the files the request names (or, with none, every
    pending file that its `accept` takes: the catch-up scan), as a tracked `watch` job under the
    run lock."""
    with tracked_job(rt, "watch") as record:
        result = _load(rt, request, should_stop=should_stop)
        _record_load(record, result)
        return result


@dataclass
class CursorSummary:
    """The ingest state at a glance (estore_ops.ingest.pipeline.cursor_summary) and the document's generation."""

    location: str
    counts: dict[str, int]  # files by status
    records: int  # file records kept in full
    folded: int  # older loaded files kept in compact form (name and generation only)
    updated_at: str | None
    newest_loaded: dict[str, Any] | None  # name, loaded_at, rows, run_id
    problems: list[dict[str, Any]]  # failed and quarantined files with their errors
    generation: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.location, "counts": self.counts, "records": self.records, "folded": self.folded,
            "updated_at": self.updated_at, "newest_loaded": self.newest_loaded, "problems": self.problems,
            "generation": self.generation,
        }


def cursor_show(rt: Runtime) -> CursorSummary:
    snap = rt.state.read()
    return CursorSummary(**ingest.cursor_summary(snap.state, rt.state.location), generation=snap.generation)


@dataclass
class CursorReset:
    all_files: bool
    count: int | None = None  # --all: how many files were forgotten (None: the document was corrupt)
    forgotten: list[str] = field(default_factory=list)  # --file: the names forgotten
    not_in_state: list[str] = field(default_factory=list)  # --file: the names the state did not hold

    def as_dict(self) -> dict[str, Any]:
        if self.all_files:
            return {"reset": "all", "forgotten": self.count}
        return {"reset": "files", "forgotten": self.forgotten, "not_in_state": self.not_in_state}


def cursor_reset(rt: Runtime, all_files: bool, files: Sequence[str]) -> CursorReset:
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
            return CursorReset(True, count=count)
        forgotten = ingest.forget_files(rt.state, files)
    return CursorReset(False, forgotten=forgotten, not_in_state=[f for f in files if f not in forgotten])


@dataclass
class CursorRestore:
    counts: dict[str, int]
    generation: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"restored": True, "counts": self.counts, "generation": self.generation}


def cursor_restore(rt: Runtime) -> CursorRestore:
    with run_lock(rt, "cursor restore"):
        snap: Snapshot = rt.state.restore_previous()
    return CursorRestore(snap.state.counts(), snap.generation)


# -- run lock -----------------------------------------------------------------------------------


@dataclass
class LockStatus:
    lock: LockInfo | None  # None: no run holds it

    def as_dict(self) -> dict[str, Any]:
        return {"held": bool(self.lock), **({"lock": asdict(self.lock), "stale": self.lock.stale} if self.lock else {})}


def lock_show(rt: Runtime) -> LockStatus:
    from estore_ops.ops.lock import read_lock

    found = read_lock(rt.state_backend)
    return LockStatus(found[0] if found else None)


@dataclass
class LockBreak:
    broken: LockInfo | None  # None: no lock, or it changed hands since it was read

    def as_dict(self) -> dict[str, Any]:
        return {"broken": bool(self.broken), **({"lock": asdict(self.broken)} if self.broken else {})}


def lock_break(rt: Runtime, confirm: Callable[[LockInfo], None] | None = None) -> LockBreak:
    """Delete the run lock if the holder `confirm` was shown still holds it (`confirm` raises to refuse)."""
    from estore_ops.ops.lock import break_lock, read_lock

    found = read_lock(rt.state_backend)
    if found and confirm is not None:
        confirm(found[0])
    return LockBreak(break_lock(rt.state_backend, expected_generation=found[1]) if found else None)


# -- sample data ----------------------------------------------------------------------------------


@dataclass
class GeneratedFiles:
    folder: Path
    files: list[WrittenFile]

    def as_list(self) -> list[dict[str, Any]]:
        return [w.as_dict() for w in self.files]


def generate(
    rt: Runtime, dest: str | None = None, months: int = 2, rows: int = 50_000, users: int = 5_000, seed: int = 46,
    gzip_from: int = 2,
) -> GeneratedFiles:
    """Write deterministic REES46-style monthly event files into `dest` (default: the local landing folder)."""
    from estore_ops.testing.generate import generate_files

    folder = Path(dest) if dest else rt.landing.local_root
    if folder is None:
        raise ConfigError("generate writes to a local folder: pass --dest FOLDER (the landing area is not local).")
    return GeneratedFiles(folder, generate_files(folder, months=months, rows_per_month=rows, users=users, seed=seed,
                                                 gzip_from=gzip_from))


# -- health, runs, alerts -----------------------------------------------------------------------


@dataclass
class HealthReport:
    rows: list[health.HealthRow]
    alerted: bool  # a stale alert went out on this check

    @property
    def stale(self) -> list[str]:
        """Checks whose heartbeat is too old for no fault of the machine."""
        return [r.check for r in self.rows if r.stale and not r.failing]

    @property
    def failing(self) -> list[str]:
        """Checks whose job keeps stopping on a fault of the machine (disk, memory, permissions)."""
        return [r.check for r in self.rows if r.failing]

    @property
    def healthy(self) -> bool:
        return not any(r.stale for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "alerted": self.alerted, "checks": [r.as_dict() for r in self.rows]}


def health_check(rt: Runtime) -> HealthReport:
    """Heartbeat ages against thresholds; alerts once per stale episode."""
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
    return HealthReport(rows, alerted)


@dataclass
class RunList:
    records: list[RunRecord]  # newest first

    def as_list(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.records]


def runs(rt: Runtime, job: str | None, status: str | None, limit: int) -> RunList:
    from estore_ops.ops.history import RunHistory

    return RunList(RunHistory(rt.state_backend, rt.settings.runs_keep).list(job, status, limit))


def run_detail(rt: Runtime, run_id: str) -> RunRecord:
    from estore_ops.ops.history import RunHistory

    return RunHistory(rt.state_backend, rt.settings.runs_keep).get(run_id)


@dataclass
class Headline:
    """The three headline tables, one dict per row: RFM segments, the session funnel, churn by cohort."""

    rfm_segments: list[dict[str, Any]]
    funnel: list[dict[str, Any]]
    churn: list[dict[str, Any]]

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        """JSON-ready: exact amounts (Decimal) as numbers whose digits are the cents."""
        return {name: [{k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()} for row in rows]
                for name, rows in (("rfm_segments", self.rfm_segments), ("funnel", self.funnel), ("churn", self.churn))}


def report(rt: Runtime) -> Headline:
    """The headline results from the built marts (RFM segments, funnel, churn)."""
    from estore_ops.analytics.reports import headline

    warehouse = rt.warehouse(read_only=True)
    try:
        return Headline(**headline(warehouse))
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
    """Compare the warehouse, the state and the landing files (see estore_ops.ops.verify); `since` and
    `until` without a time zone are UTC.

    Runs under the lock (a load in progress would make the counts disagree for a moment), is
    recorded in the run history, and a mismatch alerts once per problem (deduplicated).
    """
    from estore_ops.ops import verify as audit

    since, until = _utc(since), _utc(until)
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


def raw_events_by_file(rt: Runtime) -> list[tuple[Any, ...]]:
    """Per source file of the raw events table: file, rows, first and last event day, distinct users."""
    warehouse = rt.warehouse(read_only=True)
    try:
        return warehouse.query(
            "SELECT _source_file, count(*), min(event_time)::DATE, max(event_time)::DATE, count(DISTINCT user_id) "
            "FROM raw.events GROUP BY 1 ORDER BY min(event_time)"
        )
    finally:
        warehouse.close()


def _utc(moment: datetime | None) -> datetime | None:
    """A date/time without a time zone is UTC (the warehouse's event_time is)."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


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


@dataclass
class AlertSent:
    notifier: str  # the notifier's name (slack, log)

    def as_dict(self) -> dict[str, Any]:
        return {"sent": True, "notifier": self.notifier}


def alert_test(rt: Runtime) -> AlertSent:
    """Send a test message through the configured notifier; raises NotifyError if it fails."""
    import socket

    from estore_ops.ops.notify import Alert, open_notifier

    notifier = open_notifier(rt.settings)
    notifier.send(Alert("test", ":wave: estore-ops test alert", [f"Sent from `{socket.gethostname()}`, run `{rt.run_id}`."]))
    return AlertSent(notifier.name)


@dataclass
class UnitFailureAlert:
    unit: str
    sent: bool  # False: deduplicated, or no notifier configured

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "sent": self.sent}


def alert_unit_failure(rt: Runtime, unit: str) -> UnitFailureAlert:
    """systemd OnFailure=: the unit failed, was killed or timed out (the job could not alert itself)."""
    import socket

    from estore_ops.ops.alerts import Failure
    from estore_ops.ops.tracking import alert_manager

    alerts = alert_manager(rt)
    if alerts is None:
        return UnitFailureAlert(unit, False)
    detail = f"systemd unit {unit} failed on {socket.gethostname()}. See `journalctl -u {unit} -n 50` and `estore-ops runs`."
    return UnitFailureAlert(unit, alerts.failure(f"unit {unit}", rt.run_id, [Failure(unit, detail)]))


# -- doctor, watch, deployment --------------------------------------------------------------------


@dataclass
class DoctorReport:
    checks: list[Check]

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def as_list(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.checks]


def doctor(rt: Runtime) -> DoctorReport:
    """Check each configured backend (landing, state, warehouse, dbt profile)."""
    from estore_ops.ops.doctor import run_doctor

    return DoctorReport(run_doctor(rt.settings))


def watch(
    make_runtime: Callable[[], Runtime],
    interval: float,
    once: bool = False,
    events: bool = False,
    on_tick: Callable[[str, TickResult | None], None] | None = None,
    on_line: Callable[[str, dict[str, Any]], None] | None = None,
) -> int:
    """The unattended loop (estore_ops.ingest.watch): ticks every `interval`, or with `events` loads
    files as they land. `make_runtime` gives each tick fresh settings. Returns the exit code."""
    from estore_ops.ingest import watch as loop

    rt = make_runtime()  # validate the configuration before the first tick
    if events:
        if once:
            raise ConfigError("--events runs until stopped; --once is the timer's single tick. Use one of them.")
        return loop.watch_events(rt, interval, on_line)
    return loop.watch(make_runtime, interval, once=once, on_tick=on_tick)


def systemd_install(
    *, user: str, env_file: Path, state_dir: Path, work_dir: Path, credential_file: Path, unit_dir: Path,
    verify_calendar: str, dry_run: bool = False, ingest: str = "timer",
) -> InstallResult:
    """Write the units (with this installation's real paths), reload systemd and enable the timers."""
    from estore_ops.deploy import install, render_units

    if ingest not in ("timer", "events"):
        raise ConfigError(f"--ingest must be timer (the 5-minute ingest timer) or events (the watch --events service), got {ingest!r}.")
    units = render_units(user=user, env_file=env_file, state_dir=state_dir, work_dir=work_dir, credential_file=credential_file,
                         verify_calendar=verify_calendar)
    return install(units, unit_dir=unit_dir, dry_run=dry_run, ingest=ingest)


@dataclass
class TimerReport:
    timers: list[TimerStatus]

    def as_list(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in self.timers]


def systemd_status() -> TimerReport:
    """The estore-ops timers' last and next runs and the last result of each service."""
    from estore_ops.deploy import status

    return TimerReport(status())
