"""Faults of the machine, told apart from faults of a file.

A full disk, a read-only or unwritable folder, DuckDB running out of memory, a lock held by another
program or an I/O error say nothing about the file being loaded: counting them against it would
quarantine good files after `max_attempts` (and tell the user to fix a file that is fine). These
helpers turn such an error into an `EnvironmentFaultError` that names the path and what to free or
fix; the run then stops with exit 4 and records nothing against any file.

Problems of a file (it does not parse, a value is out of its domain, its header is wrong, it changed
while loading, its own permissions) stay per-file: the callers decide which paths are "the place"
(warehouse, work folder, state) and which are a landing entry.
"""

from __future__ import annotations

import errno
import getpass
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from estore_ops.errors import EnvironmentFaultError

DISK_FULL, READ_ONLY, PERMISSION, MEMORY, LOCK, IO, FILE_SIZE, OPEN_FILES, INVALIDATED = (
    "disk_full", "read_only", "permission", "memory", "lock", "io", "file_size", "open_files", "invalidated",
)

_BY_ERRNO = {
    errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EROFS: READ_ONLY,
    errno.EACCES: PERMISSION, errno.EPERM: PERMISSION, errno.EIO: IO, errno.ENOMEM: MEMORY,
    errno.EFBIG: FILE_SIZE, errno.EMFILE: OPEN_FILES, errno.ENFILE: OPEN_FILES,
}
# The same conditions as the C library words them (DuckDB's messages carry strerror's text).
_BY_TEXT = (
    ("No space left on device", DISK_FULL), ("Disk quota exceeded", DISK_FULL),
    ("Read-only file system", READ_ONLY), ("Permission denied", PERMISSION), ("Operation not permitted", PERMISSION),
    ("Input/output error", IO), ("Cannot allocate memory", MEMORY), ("File too large", FILE_SIZE),
    ("Too many open files", OPEN_FILES),
)
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')
_NOT_BLAMED = "No file was blamed: nothing was counted against any file, and every pending file loads on the next run once this is fixed."


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers): the uid is enough
        return str(os.getuid())


def _free(path: Path) -> str:
    for candidate in (path, *path.parents):
        try:
            left = shutil.disk_usage(candidate).free
        except OSError:
            continue
        return f"{left / 1_048_576:,.1f} MiB left"
    return "free space unknown"


# What happened and what to do, per kind. Fields: {what} (the role, e.g. "the warehouse"), {What}
# (capitalized), {path}, {because} (" (the error)"), {free}, {user}, {folder}.
_FIXES = {
    DISK_FULL: "The disk holding {what} {path} is full{because}, {free}. Free space on that disk (or move it to a "
               "bigger one), then run again.",
    READ_ONLY: "{What} {path} is on a read-only file system{because}. Remount it read-write, or point the setting to "
               "a writable folder.",
    PERMISSION: "The user {user} may not write {what} {path}{because}. Give that user write access (e.g. chown -R "
                "{user} {folder}), or point the setting to a folder it owns.",
    MEMORY: "DuckDB ran out of memory while loading into {what} {path}{because}. Raise load_memory_limit if the machine "
            "has the memory (or free memory on it), or lower load_batch_mb.",
    LOCK: "Another program holds {what} {path}{because}; DuckDB allows one writer. Stop it (a DuckDB shell, a BI tool, "
          "another estore-ops outside the run lock), then run again.",
    IO: "The disk reported an I/O error on {what} {path}{because}. Check the disk (dmesg, the cloud console's disk "
        "health) before running again.",
    FILE_SIZE: "{What} {path} reached the file size limit of this process{because}. Raise the limit (ulimit -f, or "
               "LimitFSIZE= of the systemd service).",
    OPEN_FILES: "The process ran out of file descriptors while using {what} {path}{because}. Raise the limit "
                "(ulimit -n, or LimitNOFILE= of the systemd service).",
    INVALIDATED: "DuckDB closed {what} {path} after an earlier write error in this process{because}. Fix that error "
                 "(see the log), then run again: a new process reopens the database.",
}


def describe(kind: str, path: str | Path, what: str, detail: str = "") -> str:
    """What happened to `path` (the role `what`: 'the warehouse', 'the state folder', ...) and how to fix it."""
    p = Path(path) if path else Path(".")
    template = _FIXES.get(kind, "{What} {path} cannot be used{because}.")
    text = template.format(
        what=what, What=what.capitalize(), path=str(path) or "(unknown path)", because=f" ({detail})" if detail else "",
        free=_free(p) if kind == DISK_FULL else "", user=_user(), folder=p.parent if p.suffix else p,
    )
    return f"{text} {_NOT_BLAMED}"


def fault(kind: str, path: str | Path, what: str, detail: str = "") -> EnvironmentFaultError:
    return EnvironmentFaultError(describe(kind, path, what, detail), str(path), kind)


def from_os_error(exc: BaseException, what: str, path: str | Path | None = None,
                  permission_is_environment: bool = True) -> EnvironmentFaultError | None:
    """An EnvironmentFaultError for an OSError of the machine, else None.

    `permission_is_environment=False` for a landing entry: a file the producer left unreadable is
    that file's problem (it fails alone), while a state or warehouse folder we may not write is not.
    """
    if isinstance(exc, EnvironmentFaultError):
        return exc
    if not isinstance(exc, OSError):
        return None
    kind = _BY_ERRNO.get(exc.errno or 0)
    if kind is None or (kind == PERMISSION and not permission_is_environment):
        return None
    where = path if path is not None else (exc.filename or "")
    return fault(kind, str(where), what, exc.strerror or str(exc))


def from_duckdb_error(exc: BaseException, database: Path, sources: Iterable[str] = (),
                      memory_limit: str = "") -> EnvironmentFaultError | None:
    """An EnvironmentFaultError for a DuckDB error caused by the machine, else None (the data's fault).

    `sources` are the paths of the files being read: an error about one of them (it cannot be
    opened, its gzip data is short) belongs to that file.
    """
    import duckdb

    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    quoted = _QUOTED_PATH.search(first)
    if quoted and quoted.group(1) in set(sources):
        return None
    memory = isinstance(exc, duckdb.OutOfMemoryException)
    fatal = isinstance(exc, duckdb.FatalException)
    # Only errors of the engine's own I/O: a CSV value that happens to read "No space left on device"
    # fails a conversion, never one of these.
    engine_io = isinstance(exc, (duckdb.IOException, duckdb.PermissionException, duckdb.InternalException,
                                 duckdb.TransactionException))
    return _from_engine_text(text, database, memory, fatal, engine_io, memory_limit)


def from_warehouse_message(text: str, database: Path) -> EnvironmentFaultError | None:
    """The same classification for a message that reached us as text (a dbt model's error)."""
    engine_io = any(word in text for word in ("IO Error", "TransactionContext Error", "Permission Error", "INTERNAL Error"))
    return _from_engine_text(text, database, False, False, engine_io)


def _from_engine_text(text: str, database: Path, memory: bool, fatal: bool, engine_io: bool,
                      memory_limit: str = "") -> EnvironmentFaultError | None:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    telling = ("Out of Memory Error", "invalidated", "Could not set lock", *(words for words, _ in _BY_TEXT))
    first = next((ln for ln in lines if any(w in ln for w in telling)), lines[0] if lines else "")
    quoted = _QUOTED_PATH.search(first)
    path = quoted.group(1) if quoted else str(database)
    if memory or "Out of Memory Error" in first:
        limit = f"; load_memory_limit is {memory_limit}" if memory_limit else ""
        return fault(MEMORY, database, "the warehouse", first + limit)
    if fatal or "database has been invalidated" in first:
        return fault(INVALIDATED, database, "the warehouse", first)
    if "Could not set lock on file" in first or "Conflicting lock is held" in text:
        return fault(LOCK, database, "the warehouse", first)
    if engine_io:
        for words, kind in _BY_TEXT:
            if words in text:
                return fault(kind, path, "the warehouse", first)
    return None
