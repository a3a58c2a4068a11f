"""Scan the landing area and load pending files: the cursor logic lives here.

A file version is (name, generation). Pending means: never loaded at this generation, its
content changed since it was loaded, or it failed fewer than `max_attempts` times. Files are
taken in arrival order (generation), never in name order: `2019-Nov.csv` sorts before
`2019-Oct.csv` but arrives after it.

The state is advanced per file, only after the warehouse has committed that file. A crash in
between leaves the file pending; its reload replaces its rows (the warehouse deletes the rows of
that `_source_file` in the same transaction), so nothing is duplicated.

Nothing here retries a backend call: every store and warehouse retries its own transient errors
(estore_ops.retry) and reports success or one classified error. A warehouse job that failed with a
transient error (BigQuery backendError, ...) is recorded without counting (the next run uses a fresh
job id) and reported as deferred, not as a failure; every few of them count as one attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from estore_ops.errors import ConfigError, EstoreError, ObjectNotFoundError, TransientBackendError
from estore_ops.faults import fault_point
from estore_ops.logs import get_logger
from estore_ops.header import check_header
from estore_ops.state import FAILED, LOADED, QUARANTINED, IngestState, StateStore
from estore_ops.stores.base import ObjectInfo, ObjectStore, is_csv_name
from estore_ops.warehouses.base import FileOutcome, LoadItem, Warehouse

# Loaded records kept in full in the state document; older ones fold into a name -> generation map.
KEEP_RECORDS = 2000

log = get_logger("ingest")

NEW, CHANGED, RETRY, FORCED = "new", "changed", "retry", "forced"


@dataclass(frozen=True)
class PendingFile:
    info: ObjectInfo
    reason: str  # new | changed | retry | forced
    attempt: int  # the attempt number a load now would be
    max_attempts: int

    @property
    def why(self) -> str:
        if self.reason == RETRY:
            return f"retry {self.attempt} of {self.max_attempts}"
        return self.reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.info.name,
            "size": self.info.size,
            "updated": self.info.updated.isoformat(timespec="seconds"),
            "generation": self.info.generation,
            "reason": self.reason,
            "why": self.why,
            "attempt": self.attempt,
        }


@dataclass
class ScanResult:
    pending: list[PendingFile]
    quarantined: list[ObjectInfo]
    listed: int
    settled: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "pending": [p.as_dict() for p in self.pending],
            "quarantined": [q.name for q in self.quarantined],
            "listed": self.listed,
            "settled": self.settled,
        }


def classify(info: ObjectInfo, state: IngestState, max_attempts: int) -> PendingFile | str:
    """A PendingFile, or why the file needs nothing: 'loaded' or 'quarantined'."""
    rec = state.files.get(info.name)
    if rec is None:
        folded = state.folded.get(info.name)
        if folded is None:
            return PendingFile(info, NEW, 1, max_attempts)
        return LOADED if folded == info.generation else PendingFile(info, CHANGED, 1, max_attempts)
    if rec.generation != info.generation:
        return PendingFile(info, CHANGED, 1, max_attempts)
    if rec.status == LOADED:
        return LOADED
    if rec.status == QUARANTINED or rec.attempts >= max_attempts:
        return QUARANTINED
    return PendingFile(info, RETRY, rec.attempts + 1, max_attempts)


def _list_csv(landing: ObjectStore, prefix: str) -> list[ObjectInfo]:
    """The landing listing (the store retries each page itself)."""
    return list(landing.list_csv(prefix))


def scan(landing: ObjectStore, state: IngestState, max_attempts: int, prefix: str = "") -> ScanResult:
    pending: list[PendingFile] = []
    quarantined: list[ObjectInfo] = []
    listed = settled = 0
    for info in _list_csv(landing, prefix):
        listed += 1
        verdict = classify(info, state, max_attempts)
        if isinstance(verdict, PendingFile):
            pending.append(verdict)
        elif verdict == QUARANTINED:
            quarantined.append(info)
        else:
            settled += 1
    pending.sort(key=lambda p: (p.info.generation, p.info.name))
    return ScanResult(pending, quarantined, listed, settled)


# -- loading ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    run_id: str
    outcomes: list[FileOutcome] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    planned: list[PendingFile] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def loaded(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if not o.ok and not o.deferred]

    @property
    def deferred(self) -> list[FileOutcome]:
        """Transient warehouse job failures: recorded, retried by the next run, not alerted."""
        return [o for o in self.outcomes if o.deferred]

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.loaded)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "dry_run": self.dry_run,
            "files_loaded": len(self.loaded),
            "files_failed": len(self.failed),
            "files_deferred": len(self.deferred),
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "files": [
                {
                    "name": o.name,
                    "generation": o.generation,
                    "status": o.status,
                    "rows": o.rows,
                    "seconds": round(o.seconds, 3),
                    "batch_files": o.batch_files,
                    "error": o.error,
                }
                for o in self.outcomes
            ],
            "planned": [p.as_dict() for p in self.planned],
            "skipped": self.skipped,
        }


def plan_load(
    landing: ObjectStore,
    state: IngestState,
    max_attempts: int,
    files: Sequence[str] = (),
    prefix: str = "",
    force: bool = False,
    skip_missing: bool = False,
    accept: Callable[[ObjectInfo], bool] | None = None,
) -> tuple[list[PendingFile], list[dict[str, str]]]:
    """Which file versions to load now, and which asked-for files are skipped (with why).

    `skip_missing`: an asked-for file that no longer exists is skipped instead of refused (the
    event loop names files that may be deleted before it gets to them). `accept`: only pending
    files it accepts are loaded now (the event loop leaves files still being written for later).
    """
    skipped: list[dict[str, str]] = []
    if files:
        chosen: list[PendingFile] = []
        for name in dict.fromkeys(files):
            if not is_csv_name(name):
                raise ConfigError(f"--file {name}: only .csv and .csv.gz files are loaded.")
            try:
                info = landing.stat(name)
            except ObjectNotFoundError:
                if skip_missing:
                    skipped.append({"name": name, "why": "no longer in the landing area"})
                    continue
                raise ConfigError(f"--file {name}: no such file in the landing area {landing.uri()}.") from None
            verdict = classify(info, state, max_attempts)
            if isinstance(verdict, PendingFile):
                chosen.append(verdict)
            elif force:
                chosen.append(PendingFile(info, FORCED, 1, max_attempts))
            else:
                hint = "cursor reset --file" if verdict == QUARANTINED else "--force"
                skipped.append({"name": name, "why": f"already {verdict} (use {hint} to load it again)"})
        chosen.sort(key=lambda p: (p.info.generation, p.info.name))
        return _accepted(chosen, skipped, accept), skipped
    result = scan(landing, state, max_attempts, prefix)
    chosen = _accepted(list(result.pending), skipped, accept)
    if force:
        seen = {p.info.name for p in chosen}
        forced = [
            PendingFile(info, FORCED, 1, max_attempts)
            for info in _list_csv(landing, prefix)
            if info.name not in seen
        ]
        chosen = sorted(chosen + forced, key=lambda p: (p.info.generation, p.info.name))
    for info in result.quarantined:
        if not force:
            skipped.append({"name": info.name, "why": "quarantined (use cursor reset --file to retry)"})
    return chosen, skipped


def _accepted(
    chosen: list[PendingFile], skipped: list[dict[str, str]], accept: Callable[[ObjectInfo], bool] | None
) -> list[PendingFile]:
    if accept is None:
        return chosen
    kept = []
    for pending in chosen:
        if accept(pending.info):
            kept.append(pending)
        else:
            skipped.append({"name": pending.info.name, "why": "not complete yet (still being written)"})
    return kept


def load_files(
    *,
    run_id: str,
    landing: ObjectStore,
    state_store: StateStore,
    warehouse: Warehouse,
    max_attempts: int,
    files: Sequence[str] = (),
    prefix: str = "",
    force: bool = False,
    dry_run: bool = False,
    on_start: Callable[[list[PendingFile]], None] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_seconds: float = 1.0,
    skip_missing: bool = False,
    accept: Callable[[ObjectInfo], bool] | None = None,
) -> LoadResult:
    """Load pending files into the warehouse and advance the state after their commits.

    `should_stop` is asked before the warehouse starts a file or a batch of files: on a shutdown
    the files not started stay pending.
    """
    started = time.monotonic()
    snapshot = state_store.read()
    planned, skipped = plan_load(landing, snapshot.state, max_attempts, files, prefix, force, skip_missing, accept)
    result = LoadResult(run_id, planned=planned, skipped=skipped, dry_run=dry_run)
    if on_start:
        on_start(planned)
    if dry_run or not planned:
        result.seconds = time.monotonic() - started
        return result

    checkpoint = StateCheckpoint(state_store, run_id, max_attempts, checkpoint_seconds, snapshot.state)
    inflight = InFlight(state_store.store, run_id) if warehouse.loads_in_process else None
    suspects: set[str] = set()
    if inflight is not None:
        died_on, suspects = inflight.take_dead()
        if died_on and not warehouse.has_version(died_on.name, died_on.generation):
            # Counted against the file (the dead run's own unit already alerted); this run goes on.
            log.warning(died_on.error or "")
            checkpoint.add(died_on)
            checkpoint.flush()  # persisted before that file is tried again: it may kill us again
            planned = [p for p in planned if not (p.info.name == died_on.name and p.attempt >= max_attempts)]
            suspects = {died_on.name}  # its retry loads alone, so the next death is its own again
        elif suspects:
            log.warning(
                "run %s died while loading a batch of %d files; they load one at a time now, so a file that "
                "kills the process again is counted and quarantined", inflight.dead_run_id, len(suspects),
            )

    started_alone: set[str] = set()

    def begin(group: list[LoadItem]) -> None:
        # Called by the warehouse before each file or batch: a stop request takes effect here,
        # between commits, and the in-flight marker names what a crash from now on is blamed on.
        if should_stop and should_stop():
            raise _StopRequested
        if inflight is not None:
            inflight.announce(group)
        if len(group) == 1:
            started_alone.add(group[0].info.name)

    try:
        items: list[LoadItem] = []
        for pending in planned:
            try:
                header = check_header(landing, pending.info)
            except (EstoreError, OSError) as exc:
                # One unreadable file (permissions, an odd name, an outage that outlasted the
                # retries) fails alone; a transient failure is not counted as an attempt.
                outcome = FileOutcome(
                    pending.info.name, pending.info.generation, pending.info.size, ok=False,
                    error=f"{pending.info.name}: cannot be read ({exc}). Check the file's permissions and name, then run again.",
                    retryable=isinstance(exc, TransientBackendError),
                )
                checkpoint.add(outcome)
                result.outcomes.append(outcome)
                continue
            if header.ok:
                # A file that failed before, or that a run died on (alone or in a batch), loads alone.
                solo = pending.reason == RETRY or pending.info.name in suspects
                job_attempt = snapshot.state.job_attempt(pending.info.name, pending.info.generation)
                items.append(LoadItem(pending.info, header.columns, solo=solo, job_attempt=job_attempt))
            else:
                outcome = FileOutcome(pending.info.name, pending.info.generation, pending.info.size, ok=False, error=header.error)
                checkpoint.add(outcome)
                result.outcomes.append(outcome)
                if on_file:
                    on_file(outcome)

        try:
            for outcome in warehouse.load(items, landing, begin):
                checkpoint.add(outcome)
                result.outcomes.append(outcome)
                if on_file:
                    on_file(outcome)
        except _StopRequested:
            pass  # raised from `begin`: every committed file was reported first
    except BaseException:
        try:
            checkpoint.flush()  # record what did commit, then let the original error through
        except Exception as exc:
            log.warning("could not record the files loaded before the error: %s", exc)
        raise
    finally:
        if inflight is not None:
            # This run did not die: nothing is in flight. Suspects of a batch that this run
            # planned but did not get to try alone (a stop, an outage) stay suspects.
            inflight.keep_suspects((suspects & {p.info.name for p in planned}) - started_alone)
    checkpoint.flush()

    if snapshot_after(state_store).compactable(KEEP_RECORDS):
        # A no-op save would evict the previous state version: only save when something folds.
        state_store.update(lambda st: st.compact(KEEP_RECORDS))
    result.seconds = time.monotonic() - started
    return result


class _StopRequested(Exception):
    """Raised through the warehouse's load when a stop was asked for before the next file."""


def snapshot_after(state_store: StateStore) -> IngestState:
    return state_store.read().state


class InFlight:
    """Which files an in-process load is working on, kept in the state location.

    A file that kills the process (out of memory, a timeout, a crash in the engine) records no
    outcome, and arrival order puts it first again next time: without this marker it would be
    retried forever and block every file behind it. The next run turns a dead run's marker into a
    counted failure, so max_attempts and quarantine apply. When the run died on a batch, the
    culprit is unknown: those files are not counted but load one at a time, so a second death
    names the file.
    """

    NAME = "inflight.json"

    def __init__(self, store: ObjectStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.dead_run_id = ""

    def announce(self, items: Sequence[LoadItem]) -> None:
        files = [{"name": i.info.name, "generation": i.info.generation, "size": i.info.size} for i in items]
        self._write({"run_id": self.run_id, "files": files, "batch": len(files) > 1})

    def keep_suspects(self, names: set[str]) -> None:
        """End of a run that did not die: clear the marker, or keep the batch suspects not yet
        tried alone (so a later run still loads them one at a time)."""
        if not names:
            self.clear()
            return
        files = [{"name": n, "generation": 0, "size": 0} for n in sorted(names)]
        self._write({"run_id": self.dead_run_id, "files": files, "batch": True})

    def _write(self, doc: dict[str, Any]) -> None:
        self.store.write(self.NAME, json.dumps(doc).encode())

    def take_dead(self) -> tuple[FileOutcome | None, set[str]]:
        """What a previous run died on: one file as a failed outcome, or the names of a batch
        (the marker is removed either way)."""
        try:
            raw, _ = self.store.read(self.NAME)
            doc = json.loads(raw)
        except ObjectNotFoundError:
            return None, set()
        except (ValueError, EstoreError):
            doc = None
        self.clear()
        if not isinstance(doc, dict) or doc.get("run_id") == self.run_id:
            return None, set()
        self.dead_run_id = str(doc.get("run_id", ""))
        files = doc.get("files") or ([doc] if "name" in doc else [])
        if len(files) != 1 or doc.get("batch"):
            return None, {str(f["name"]) for f in files}
        file = files[0]
        return FileOutcome(
            file["name"], int(file["generation"]), int(file.get("size", 0)), ok=False,
            error=(f"{file['name']}: run {self.dead_run_id} died while loading this file (killed, out of memory or timed out). "
                   "It is retried; if it keeps killing the process it is quarantined after max_attempts. "
                   "Check its size and the machine's memory, or raise the service's TimeoutStartSec."),
        ), set()

    def clear(self) -> None:
        try:
            self.store.delete(self.NAME)
        except (ObjectNotFoundError, EstoreError, OSError):
            pass


class StateCheckpoint:
    """Records file outcomes in the state document, at most once per `interval` seconds.

    Each file is committed in the warehouse first and only then handed here, so the cursor never
    runs ahead of the data. Batching the writes keeps a first backfill of thousands of files
    linear: otherwise every file would rewrite a document that grows with every file. A crash
    loses at most one interval of records, and those files are reloaded with their rows replaced.
    """

    def __init__(
        self, state_store: StateStore, run_id: str, max_attempts: int, interval: float, known: IngestState | None = None
    ) -> None:
        self.state_store, self.run_id, self.max_attempts, self.interval = state_store, run_id, max_attempts, interval
        self.pending: list[FileOutcome] = []
        self.last = time.monotonic()
        self.known = known or IngestState()  # the state as last read or written

    def add(self, outcome: FileOutcome) -> None:
        """Queue an outcome for the state. A transient warehouse job failure is marked deferred
        here, unless it is the one that quarantines the file (that one is alerted)."""
        if not outcome.ok and outcome.retryable and not outcome.job_failed:
            return  # changed while loading, or an outage: not the file's fault, nothing spent
        if not outcome.ok and outcome.retryable:
            outcome.deferred = not self._quarantines(outcome)
            if outcome.deferred:
                log.warning(
                    "%s: deferred to the next run: %s", outcome.name, outcome.error,
                    extra={"fields": {"file": outcome.name, "deferred": True}},
                )
        self.pending.append(outcome)
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def _quarantines(self, outcome: FileOutcome) -> bool:
        """Whether recording this transient failure quarantines the file (decided on a copy of
        the state as last known; the write applies the same rule to the fresh document)."""
        probe = IngestState(dict(self.known.files), dict(self.known.folded))
        for o in self.pending:
            self._apply(probe, [o])
        rec, _ = probe.record_transient_failure(
            outcome.name, outcome.generation, outcome.size, outcome.error or "", self.run_id, self.max_attempts,
            outcome.job_attempt or 0,
        )
        return rec.status == QUARANTINED

    def _apply(self, state: IngestState, batch: list[FileOutcome]) -> None:
        for o in batch:
            if o.ok:
                state.record_success(o.name, o.generation, o.size, o.rows, self.run_id, o.job_attempt)
            elif o.retryable:
                state.record_transient_failure(
                    o.name, o.generation, o.size, o.error or "", self.run_id, self.max_attempts, o.job_attempt or 0
                )
            else:
                job_attempt = o.job_attempt if o.job_failed else None
                state.record_failure(o.name, o.generation, o.size, o.error or "", self.run_id, self.max_attempts, job_attempt)

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            snap, _ = self.state_store.update(lambda st: self._apply(st, batch))
        except BaseException:
            self.pending = batch + self.pending  # not written: keep them for a later flush
            raise
        self.known = snap.state
        self.last = time.monotonic()
        fault_point("after_state_write")


# -- cursor commands ----------------------------------------------------------------------------


def cursor_summary(state: IngestState, location: str) -> dict[str, Any]:
    loaded = [(n, r) for n, r in state.files.items() if r.status == LOADED]
    newest = max(loaded, key=lambda nr: (nr[1].loaded_at or "", nr[1].generation), default=None)
    problems = [
        {"name": n, "status": r.status, "attempts": r.attempts, "error": r.last_error, "run_id": r.run_id, "generation": r.generation,
         "transient_failures": r.transient_failures}
        for n, r in sorted(state.files.items())
        if r.status in (FAILED, QUARANTINED)
    ]
    return {
        "location": location,
        "counts": state.counts(),
        "records": len(state.files),
        "folded": len(state.folded),
        "updated_at": state.updated_at,
        "newest_loaded": (
            {"name": newest[0], "loaded_at": newest[1].loaded_at, "rows": newest[1].rows, "run_id": newest[1].run_id}
            if newest
            else None
        ),
        "problems": problems,
    }


def forget_files(state_store: StateStore, names: Iterable[str]) -> list[str]:
    names = list(names)

    def change(state: IngestState) -> list[str]:
        return [n for n in names if state.forget(n)]

    _, forgotten = state_store.update(change)
    return forgotten
