"""The ingest state (the cursor): one JSON document in the state location, written by compare-and-swap.

Layout (format_version 1):
  {"format_version": 1, "updated_at": ISO, "folded": {NAME: G, ...}, "folded_ctime": {NAME: C, ...},
   "files": {NAME: {"generation": G, "size": S, "status": "loaded|failed|quarantined",
                    "attempts": A, "rows": R, "loaded_at": ISO, "last_error": str|null, "run_id": str,
                    "job_attempt": J, "transient_failures": T, "inode": I, "ctime_ns": C, "fingerprint": F}}}

`job_attempt` and `transient_failures` are optional (documents written before they existed read
as 0): `job_attempt` is the attempt number the next warehouse job of this version uses (BigQuery
job ids are derived from the file version and this number, so a lost answer re-attaches to the same
job while a job that really failed leads to a fresh id); `transient_failures` counts the transient
job failures (backendError, quotaExceeded, ...) since the last counted attempt: every
TRANSIENT_FAILURES_PER_ATTEMPT of them count as one attempt, so a file BigQuery keeps failing is
quarantined in the end, without an alert for each passing fault.

`inode`, `ctime_ns`, `fingerprint` and `folded_ctime` are optional (local folders only; documents
written before they existed read as before): a local file's generation is max(mtime, ctime), and an
mtime set in the future (`cp -p`, `rsync -t`, `touch -d` from a skewed clock) outweighs every later
ctime, so the generation alone can miss a rewrite. Size, inode and ctime change on every write; the
fingerprint (size and a hash of the first and last blocks) is compared when a file was written so
close to its load that one timestamp tick could hide a rewrite.

A file version is identified by (name, generation). To keep the document small as files
accumulate, the oldest loaded records beyond the newest few thousand are folded into `folded`, a
bare name -> generation map (tens of bytes a file instead of a full record). Folding keeps the
exact identity of every loaded version, so it never depends on arrival order: a file that was
moved in with an old timestamp is still new, and a rewritten one is still seen as changed.

Every save first copies the version it replaces to `cursor.prev.json`, then writes `cursor.json`
with `if_generation_match`: a concurrent writer gets StateConflictError, never a lost update.

A document of an earlier format is migrated when read and saved in this format by the next write,
which first keeps the earlier document as `cursor.v<N>.json` (estore_ops.ingest.state_formats). A document
of a newer format is refused (CorruptStateError, exit 3): this estore-ops would lose its fields.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from estore_ops.errors import (
    CorruptStateError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StateConflictError,
)
from estore_ops.ingest.state_formats import is_earlier_format, keep_backup, migrate
from estore_ops.backends.stores.base import ObjectInfo, ObjectStore

FORMAT_VERSION = 1
STATE_NAME = "cursor.json"
PREVIOUS_NAME = "cursor.prev.json"
RECOVERY_HINT = (
    "Run `estore-ops cursor restore --yes` to go back to the previous version, or "
    "`estore-ops cursor reset --all --yes` to start over (files are reloaded and their rows replaced, not duplicated)."
)

LOADED, FAILED, QUARANTINED = "loaded", "failed", "quarantined"
STATUSES = (LOADED, FAILED, QUARANTINED)
# Transient job failures of one file version that count as one attempt.
TRANSIENT_FAILURES_PER_ATTEMPT = 3
OPTIONAL_IDENTITY = ("inode", "ctime_ns", "fingerprint", "racy")
# A file written within one timestamp tick of its listing could be rewritten with the same ctime, so
# its fingerprint is checked by later scans. Ticks are a few ms on ext4, XFS or tmpfs; file systems
# with coarse times (1-2 s: FAT, some network mounts) show it as ctimes in whole seconds.
RACY_FINE_NS = 20_000_000
RACY_COARSE_NS = 2_000_000_000


def racy_window_ns(ctime_ns: int) -> int:
    """How close to a listing a write with this ctime must be to share its timestamp tick."""
    return RACY_COARSE_NS if ctime_ns % 1_000_000_000 == 0 else RACY_FINE_NS


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None


@dataclass
class FileRecord:
    generation: int
    size: int
    status: str
    attempts: int = 0
    rows: int | None = None
    loaded_at: str | None = None
    last_error: str | None = None
    run_id: str | None = None
    updated_at: str | None = None
    job_attempt: int = 0
    transient_failures: int = 0
    # Identity of a local file version beyond its generation (None: not recorded, or not a local file).
    inode: int | None = None
    ctime_ns: int | None = None
    fingerprint: str | None = None
    racy: bool | None = None  # written within a timestamp tick of its listing: the fingerprint decides

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        rec = cls(**known)
        if (
            rec.status not in STATUSES
            or not isinstance(rec.generation, int)
            or not isinstance(rec.job_attempt, int)
            or not isinstance(rec.transient_failures, int)
        ):
            raise ValueError(f"bad record {data!r}")
        return rec

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in OPTIONAL_IDENTITY:
            if data[key] is None or data[key] is False:
                del data[key]  # GCS records (and settled ones: no `racy`) stay as small as before
        return data

    def changed(self, info: ObjectInfo, fingerprint: Callable[[ObjectInfo], str | None] | None = None) -> bool:
        """Whether `info` is another version than the one recorded.

        The generation and size, then (when both sides have them) inode and ctime: a rewrite changes
        ctime whatever the mtime says. A file listed within one timestamp tick of its last write
        (racy_window_ns) could be rewritten in that tick without its ctime moving: for such a
        record the content fingerprint decides too. Only those files are
        read; an idle tick over thousands of settled files reads none.
        """
        if self.generation != info.generation or self.size != info.size:
            return True
        for mine, now in ((self.inode, info.inode), (self.ctime_ns, info.ctime_ns)):
            if mine is not None and now is not None and mine != now:
                return True
        if self.racy and self.fingerprint and fingerprint is not None:
            try:
                return fingerprint(info) != self.fingerprint
            except Exception:  # noqa: BLE001 - cannot read it now: the load will say why
                return True
        return False


@dataclass
class IngestState:
    files: dict[str, FileRecord] = field(default_factory=dict)
    folded: dict[str, int] = field(default_factory=dict)  # old loaded versions: name -> generation
    updated_at: str | None = None
    folded_ctime: dict[str, int] = field(default_factory=dict)  # and their ctime, for local files
    read_format: int | None = field(default=None, compare=False)  # format of the document it was read from

    # -- queries ----------------------------------------------------------------------------
    def is_settled(self, name: str, generation: int) -> bool:
        """True when this file version needs no load: loaded (in full or folded)."""
        rec = self.files.get(name)
        if rec is not None:
            return rec.generation == generation and rec.status == LOADED
        return self.folded.get(name) == generation

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for rec in self.files.values():
            out[rec.status] += 1
        out[LOADED] += len(self.folded)
        return out

    # -- changes ----------------------------------------------------------------------------
    def job_attempt(self, name: str, generation: int) -> int:
        """The attempt number the next warehouse job of this file version uses."""
        rec = self.files.get(name)
        return rec.job_attempt if rec is not None and rec.generation == generation else 0

    def folded_changed(self, info: ObjectInfo) -> bool:
        """Whether a folded (loaded long ago) name is now another version."""
        ctime = self.folded_ctime.get(info.name)
        return self.folded.get(info.name) != info.generation or (
            ctime is not None and info.ctime_ns is not None and ctime != info.ctime_ns
        )

    def record_success(self, name: str, generation: int, size: int, rows: int, run_id: str,
                       job_attempt: int | None = None, identity: dict[str, Any] | None = None) -> None:
        prev = self.files.get(name)
        same_version = prev is not None and prev.generation == generation
        attempts = prev.attempts + 1 if same_version else 1
        # A forced reload of this version starts past the jobs that loaded it.
        next_job = job_attempt + 1 if job_attempt is not None else (prev.job_attempt if same_version else 0)
        now = iso(utcnow())
        self._unfold(name)
        self.files[name] = FileRecord(generation, size, LOADED, attempts, rows, now, None, run_id, now, next_job, **(identity or {}))

    def record_failure(
        self, name: str, generation: int, size: int, error: str, run_id: str, max_attempts: int,
        job_attempt: int | None = None, identity: dict[str, Any] | None = None,
    ) -> FileRecord:
        """A counted failure. `job_attempt`: the warehouse job attempt that failed (its ids are spent)."""
        prev = self.files.get(name)
        same_version = prev is not None and prev.generation == generation and prev.status != LOADED
        if same_version and identity and any(
            getattr(prev, k) is not None and identity.get(k) is not None and getattr(prev, k) != identity[k]
            for k in ("inode", "ctime_ns")
        ):
            same_version = False  # rewritten under the same generation: a new version starts over
        if same_version and prev.run_id == run_id:
            attempts = prev.attempts  # this run's failure is already counted (a retried state write)
        else:
            attempts = prev.attempts + 1 if same_version else 1
        return self._set_failed(name, generation, size, error, run_id, max_attempts, attempts, 0, job_attempt, prev, identity)

    def record_transient_failure(
        self, name: str, generation: int, size: int, error: str, run_id: str, max_attempts: int, job_attempt: int,
    ) -> tuple[FileRecord, bool]:
        """A warehouse job of this version failed with a transient error (backendError, ...).

        Not counted as an attempt on its own: every TRANSIENT_FAILURES_PER_ATTEMPT of them are.
        Returns the record and whether this failure was counted.
        """
        prev = self.files.get(name)
        same_version = prev is not None and prev.generation == generation and prev.status != LOADED
        if same_version and prev.run_id == run_id and prev.job_attempt > job_attempt:
            return prev, False  # already recorded by this run (a retried state write)
        attempts = prev.attempts if same_version else 0
        transient = (prev.transient_failures if same_version else 0) + 1
        counted = transient >= TRANSIENT_FAILURES_PER_ATTEMPT
        if counted:
            attempts, transient = attempts + 1, 0
            error = f"{error} (transient failures of BigQuery jobs for this file count as one attempt every {TRANSIENT_FAILURES_PER_ATTEMPT})"
        rec = self._set_failed(name, generation, size, error, run_id, max_attempts, attempts, transient, job_attempt, prev)
        return rec, counted

    def _set_failed(
        self, name: str, generation: int, size: int, error: str, run_id: str, max_attempts: int,
        attempts: int, transient: int, job_attempt: int | None, prev: FileRecord | None,
        identity: dict[str, Any] | None = None,
    ) -> FileRecord:
        status = QUARANTINED if attempts >= max_attempts else FAILED
        if job_attempt is not None:
            next_job = job_attempt + 1
        else:
            next_job = prev.job_attempt if prev is not None and prev.generation == generation else 0
        now = iso(utcnow())
        rec = FileRecord(generation, size, status, attempts, None, None, error[:2000], run_id, now, next_job, transient,
                         **(identity or {}))
        self._unfold(name)
        self.files[name] = rec
        return rec

    def _unfold(self, name: str) -> None:
        self.folded.pop(name, None)
        self.folded_ctime.pop(name, None)

    def forget(self, name: str) -> bool:
        """Make a file load again on the next run (e.g. after it was quarantined)."""
        self.folded_ctime.pop(name, None)
        return self.files.pop(name, None) is not None or self.folded.pop(name, None) is not None

    def _foldable(self, keep: int) -> list[str]:
        loaded = sorted(
            ((rec.generation, name) for name, rec in self.files.items() if rec.status == LOADED),
            reverse=True,
        )
        return [name for _, name in loaded[keep:]]

    def compactable(self, keep: int) -> int:
        """How many records `compact` would fold now."""
        return len(self._foldable(keep))

    def compact(self, keep: int) -> int:
        """Fold loaded records beyond the newest `keep` into the name -> generation map."""
        names = self._foldable(keep)
        for name in names:
            rec = self.files.pop(name)
            self.folded[name] = rec.generation
            if rec.ctime_ns is not None:
                self.folded_ctime[name] = rec.ctime_ns
        return len(names)

    # -- (de)serialisation ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        doc = {
            "format_version": FORMAT_VERSION,
            "updated_at": iso(utcnow()),
            "folded": dict(sorted(self.folded.items())),
            "files": {name: rec.to_json() for name, rec in sorted(self.files.items())},
        }
        if self.folded_ctime:
            doc["folded_ctime"] = dict(sorted(self.folded_ctime.items()))
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> IngestState:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptStateError(f"The state document {where} is not valid JSON ({exc}). {RECOVERY_HINT}") from None
        if not isinstance(doc, dict) or "format_version" not in doc:
            raise CorruptStateError(f"The state document {where} is not an estore-ops state document. {RECOVERY_HINT}")
        version = doc["format_version"]
        if is_earlier_format(version, FORMAT_VERSION):
            doc, _ = migrate(doc, FORMAT_VERSION, where, RECOVERY_HINT)  # written in the current format by the next save
        elif version != FORMAT_VERSION:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            why = (
                f"was written by a newer estore-ops (format {version}, this one reads {FORMAT_VERSION}): upgrade estore-ops"
                if newer
                else f"has unknown format {version!r}"
            )
            raise CorruptStateError(f"The state document {where} {why}. {RECOVERY_HINT}")
        try:
            files = {str(n): FileRecord.from_json(r) for n, r in doc["files"].items()}
            folded = {str(n): int(g) for n, g in doc.get("folded", {}).items()}
            folded_ctime = {str(n): int(c) for n, c in doc.get("folded_ctime", {}).items()}
            return cls(files, folded, doc.get("updated_at"), folded_ctime, read_format=version)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptStateError(f"The state document {where} has a malformed entry ({exc}). {RECOVERY_HINT}") from None


@dataclass
class Snapshot:
    """A state as read, with the generation a save must match (0: there was none)."""

    state: IngestState
    generation: int
    raw: bytes = b""


class StateStore:
    """Reads and writes the ingest state document in an object store."""

    def __init__(self, store: ObjectStore, name: str = STATE_NAME) -> None:
        self.store = store
        self.name = name
        self.previous_name = name.replace(".json", ".prev.json")

    @property
    def location(self) -> str:
        return self.store.uri(self.name)

    def read(self) -> Snapshot:
        try:
            raw, generation = self.store.read(self.name)
        except ObjectNotFoundError:
            return Snapshot(IngestState(), 0)
        return Snapshot(IngestState.from_bytes(raw, self.location), generation, raw)

    def save(self, base: Snapshot, state: IngestState) -> Snapshot:
        """Compare-and-swap: write `state` if the document is still at `base.generation`."""
        from estore_ops.testing.faults import fault_point

        if base.raw:
            if base.state.read_format is not None and base.state.read_format < FORMAT_VERSION:
                # The first save after an upgrade: the earlier format is kept as it was (once).
                keep_backup(self.store, self.name, base.state.read_format, base.raw)
            self.store.write(self.previous_name, base.raw)
        fault_point("state_write")
        data = state.to_bytes()
        try:
            generation = self.store.write(self.name, data, if_generation_match=base.generation)
        except PreconditionFailedError:
            raise StateConflictError(
                f"The state document {self.location} was changed by another writer since it was read "
                f"(expected generation {base.generation}). Nothing was overwritten; run the command again."
            ) from None
        return Snapshot(state, generation, data)

    def update(self, change: Callable[[IngestState], Any], attempts: int = 20) -> tuple[Snapshot, Any]:
        """Read-modify-write with retries on conflict: `change` is re-applied to the fresh state."""
        for attempt in range(attempts):
            snap = self.read()
            result = change(snap.state)
            try:
                return self.save(snap, snap.state), result
            except StateConflictError:
                backoff(attempt)
        raise StateConflictError(
            f"The state document {self.location} kept changing under {attempts} attempts to update it; "
            "is another estore-ops writing without the run lock? Check `estore-ops lock show`."
        )

    def restore_previous(self) -> Snapshot:
        try:
            raw, _ = self.store.read(self.previous_name)
        except ObjectNotFoundError:
            raise CorruptStateError(
                f"No previous version at {self.store.uri(self.previous_name)}. "
                "Run `estore-ops cursor reset --all --yes` to start over (rows are replaced on reload, not duplicated)."
            ) from None
        try:
            state = IngestState.from_bytes(raw, self.store.uri(self.previous_name))
        except CorruptStateError as exc:
            # Restoring is what brought us here: the way out is a reset (never "restore" again).
            reason = str(exc).replace(RECOVERY_HINT, "").strip()
            raise CorruptStateError(
                f"{reason} The previous version cannot be restored either: run `estore-ops cursor reset --all --yes` "
                "to start over (files are reloaded and their rows replaced, not duplicated)."
            ) from None
        try:
            current = self.store.stat(self.name).generation
        except ObjectNotFoundError:
            current = 0
        generation = self.store.write(self.name, state.to_bytes(), if_generation_match=current)
        return Snapshot(state, generation, raw)

    def reset(self) -> Snapshot:
        """Forget everything (keeping the replaced version as the previous one)."""
        try:
            raw, current = self.store.read(self.name)
        except ObjectNotFoundError:
            raw, current = b"", 0
        if raw and _parses(raw):
            # A corrupt document is not kept as "previous": that would overwrite the good one.
            self.store.write(self.previous_name, raw)
        state = IngestState()
        generation = self.store.write(self.name, state.to_bytes(), if_generation_match=current)
        return Snapshot(state, generation)


def backoff(attempt: int) -> None:
    """Random, growing pause after a lost compare-and-swap, so one writer cannot starve another."""
    time.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.25)))


def _parses(raw: bytes) -> bool:
    try:
        IngestState.from_bytes(raw, "")
    except CorruptStateError:
        return False
    return True
