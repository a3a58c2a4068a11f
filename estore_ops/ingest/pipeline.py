"""Scan the landing area and load pending files: the cursor logic lives here.

A file version is (name, generation). Pending means: never loaded at this generation, its
content changed since it was loaded, or it failed fewer than `max_attempts` times. Files are
taken in arrival order (generation), never in name order: `2019-Nov.csv` sorts before
`2019-Oct.csv` but arrives after it.

The state is advanced per file, only after the warehouse has committed that file. A crash in
between leaves the file pending; its reload replaces its rows (the warehouse deletes the rows of
that `_source_file` in the same transaction), so nothing is duplicated.

Nothing here retries a backend call: every store and warehouse retries its own transient errors
(estore_ops.backends.retry) and reports success or one classified error. A warehouse job that failed with a
transient error (BigQuery backendError, ...) is recorded without counting (the next run uses a fresh
job id) and reported as deferred, not as a failure; every few of them count as one attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from estore_ops.backends import environment
from estore_ops.errors import (
    EnvironmentFaultError,
    EstoreError,
    ObjectNotFoundError,
    TransientBackendError,
    UnreadableEntryError,
    UnsafeNameError,
    UsageError,
)
from estore_ops.testing.faults import fault_point
from estore_ops.ingest.header import check_header, check_tail
from estore_ops.logs import get_logger
from estore_ops.ingest.state import FAILED, LOADED, QUARANTINED, IngestState, StateStore, racy_window_ns
from estore_ops.backends.stores.base import ObjectInfo, ObjectStore, is_csv_name
from estore_ops.backends.warehouses.base import FileOutcome, LoadItem, Warehouse

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
            "problem": self.info.problem,
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


def classify(
    info: ObjectInfo, state: IngestState, max_attempts: int, fingerprint: Callable[[ObjectInfo], str | None] | None = None
) -> PendingFile | str:
    """A PendingFile, or why the file needs nothing: 'loaded' or 'quarantined'.

    `fingerprint` reads a local file's content fingerprint; it is called only for a file written so
    close to its load that its timestamps cannot tell a rewrite (see FileRecord.changed).
    """
    rec = state.files.get(info.name)
    if rec is None:
        if info.name not in state.folded:
            return PendingFile(info, NEW, 1, max_attempts)
        return PendingFile(info, CHANGED, 1, max_attempts) if state.folded_changed(info) else LOADED
    if rec.changed(info, fingerprint):
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
        verdict = classify(info, state, max_attempts, landing.fingerprint)
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


def check_requested_files(landing: ObjectStore, files: Sequence[str]) -> None:
    """`load --file NAME` arguments, checked before any job starts: a typo is a usage error (exit 2),
    not a failed run, so it is neither recorded nor alerted."""
    for name in dict.fromkeys(files):
        _requested(landing, name)


def _requested(landing: ObjectStore, name: str, missing_ok: bool = False) -> ObjectInfo | None:
    """A file asked for by name; one that exists but cannot be read comes back as a problem entry
    (it fails alone, recorded like in a scan). `missing_ok`: None for a file that no longer exists."""
    if not is_csv_name(name):
        raise UsageError(f"--file {name}: only .csv and .csv.gz files are loaded.")
    try:
        return landing.stat(name)
    except ObjectNotFoundError:
        if missing_ok:
            return None
        raise UsageError(f"--file {name}: no such file in the landing area {landing.uri()}.") from None
    except (UnreadableEntryError, UnsafeNameError) as exc:
        return ObjectInfo(name, 0, datetime.now(timezone.utc), 0, problem=str(exc))


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
            info = _requested(landing, name, missing_ok=skip_missing)
            if info is None:
                skipped.append({"name": name, "why": "no longer in the landing area"})
                continue
            verdict = classify(info, state, max_attempts, landing.fingerprint)
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
    listed_ns = time.time_ns()  # before the listing: a file written after this is "racy" (see FileRecord.changed)
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
        identities: dict[str, dict[str, Any]] = {}
        for pending in planned:
            info = pending.info
            identities[info.name] = identity = file_identity(info, listed_ns)
            checked = _check_entry(landing, info)
            if isinstance(checked, FileOutcome):
                checkpoint.add(checked, identity)
                result.outcomes.append(checked)
                if on_file:
                    on_file(checked)
                continue
            columns, fingerprint = checked
            if fingerprint:
                identity["fingerprint"] = fingerprint
            # A file that failed before, or that a run died on (alone or in a batch), loads alone.
            solo = pending.reason == RETRY or info.name in suspects
            job_attempt = snapshot.state.job_attempt(info.name, info.generation)
            items.append(LoadItem(info, columns, solo=solo, job_attempt=job_attempt))

        try:
            for outcome in warehouse.load(items, landing, begin):
                checkpoint.add(outcome, identities.get(outcome.name))
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
            try:
                inflight.keep_suspects((suspects & {p.info.name for p in planned}) - started_alone)
            except Exception as exc:  # noqa: BLE001 - e.g. the state disk is full: never hide the run's own error
                log.warning("could not clear the in-flight marker: %s", exc)
    checkpoint.flush()

    if snapshot_after(state_store).compactable(KEEP_RECORDS):
        # A no-op save would evict the previous state version: only save when something folds.
        state_store.update(lambda st: st.compact(KEEP_RECORDS))
    result.seconds = time.monotonic() - started
    return result


def file_identity(info: ObjectInfo, listed_ns: int) -> dict[str, Any]:
    """What the state records of a local file version beyond its generation (nothing for GCS);
    `listed_ns` is when the listing started (time.time_ns())."""
    identity = {k: v for k, v in (("inode", info.inode), ("ctime_ns", info.ctime_ns)) if v is not None}
    if info.ctime_ns is not None and info.ctime_ns > listed_ns - racy_window_ns(info.ctime_ns):
        identity["racy"] = True
    return identity


def _check_entry(landing: ObjectStore, info: ObjectInfo) -> tuple[tuple[str, ...], str | None] | FileOutcome:
    """Before any row is loaded: the header, the tail and the content fingerprint of one entry.

    Returns (columns, fingerprint), or the failed outcome of this entry alone: whatever the reader,
    the CSV sniffing or the OS chokes on in one entry never stops the others. A fault of the
    machine (a disk error, no memory) raises EnvironmentFaultError: no file is blamed for it.
    """
    def failed(error: str, retryable: bool = False) -> FileOutcome:
        return FileOutcome(info.name, info.generation, info.size, ok=False, error=error, retryable=retryable)

    if info.problem:
        return failed(info.problem)
    try:
        header = check_header(landing, info)
        if not header.ok:
            return failed(header.error or "")
        tail = check_tail(landing, info)
        if tail:
            return failed(tail)
        return header.columns, landing.fingerprint(info)
    except EnvironmentFaultError:
        raise
    except (ObjectNotFoundError, FileNotFoundError):
        return failed(
            f"{info.name} disappeared from the landing area after the scan (renamed or deleted); nothing of it was "
            "loaded. If it was renamed, it loads under its new name on the next run.", retryable=True,
        )
    except TransientBackendError as exc:  # an outage that outlasted the retries: not counted as an attempt
        return failed(f"{info.name}: cannot be read now ({exc}); it is tried again on the next run.", retryable=True)
    except OSError as exc:
        fault = environment.from_os_error(exc, "the landing folder", landing.uri(info.name), permission_is_environment=False)
        if fault is not None:
            raise fault from None
        return failed(f"{info.name}: cannot be read ({exc.strerror or exc}). Check the file's permissions, then run again.")
    except EstoreError as exc:  # an unreadable entry, an odd name, access refused to this object
        return failed(str(exc) if str(exc).startswith(info.name) else f"{info.name}: cannot be read ({exc}).")
    except Exception as exc:  # noqa: BLE001 - never let one odd entry stop the run; say what it was
        log.warning("checking %s failed", info.name, exc_info=True)
        return failed(f"{info.name}: cannot be checked ({type(exc).__name__}: {exc}). Report this with the file; "
                      "the other files are loaded.")


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
        self.pending: list[tuple[FileOutcome, dict[str, Any] | None]] = []
        self.last = time.monotonic()
        self.known = known or IngestState()  # the state as last read or written

    def add(self, outcome: FileOutcome, identity: dict[str, Any] | None = None) -> None:
        """Queue an outcome (and the file's local identity) for the state. A transient warehouse job
        failure is marked deferred here, unless it is the one that quarantines the file (that one is
        alerted)."""
        if not outcome.ok and outcome.retryable and not outcome.job_failed:
            return  # changed while loading, or an outage: not the file's fault, nothing spent
        if not outcome.ok and outcome.retryable:
            outcome.deferred = not self._quarantines(outcome)
            if outcome.deferred:
                log.warning(
                    "%s: deferred to the next run: %s", outcome.name, outcome.error,
                    extra={"fields": {"file": outcome.name, "deferred": True}},
                )
        self.pending.append((outcome, identity))
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def _quarantines(self, outcome: FileOutcome) -> bool:
        """Whether recording this transient failure quarantines the file (decided on a copy of
        the state as last known; the write applies the same rule to the fresh document)."""
        probe = IngestState(dict(self.known.files), dict(self.known.folded))
        self._apply(probe, self.pending)
        rec, _ = probe.record_transient_failure(
            outcome.name, outcome.generation, outcome.size, outcome.error or "", self.run_id, self.max_attempts,
            outcome.job_attempt or 0,
        )
        return rec.status == QUARANTINED

    def _apply(self, state: IngestState, batch: list[tuple[FileOutcome, dict[str, Any] | None]]) -> None:
        for o, identity in batch:
            if o.ok:
                state.record_success(o.name, o.generation, o.size, o.rows, self.run_id, o.job_attempt, identity)
            elif o.retryable:
                state.record_transient_failure(
                    o.name, o.generation, o.size, o.error or "", self.run_id, self.max_attempts, o.job_attempt or 0
                )
            else:
                job_attempt = o.job_attempt if o.job_failed else None
                state.record_failure(
                    o.name, o.generation, o.size, o.error or "", self.run_id, self.max_attempts, job_attempt, identity
                )

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
