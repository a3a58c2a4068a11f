"""The operations behind each command: one function per command, usable from Python without the CLI."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from estore_ops import ingest
from estore_ops.errors import ConfigError, CorruptStateError
from estore_ops.ingest import LoadResult, PendingFile, ScanResult
from estore_ops.runtime import Runtime
from estore_ops.state import Snapshot
from estore_ops.tracking import run_lock, tracked_job
from estore_ops.warehouses.base import FileOutcome


def scan(rt: Runtime, prefix: str = "") -> ScanResult:
    state = rt.state.read().state
    return ingest.scan(rt.landing, state, rt.settings.max_attempts, prefix)


def load(
    rt: Runtime,
    files: Sequence[str] = (),
    prefix: str = "",
    force: bool = False,
    dry_run: bool = False,
    on_start: Callable[[list[PendingFile]], None] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
) -> LoadResult:
    def go() -> LoadResult:
        warehouse = rt.warehouse()
        try:
            return ingest.load_files(
                run_id=rt.run_id, landing=rt.landing, state_store=rt.state, warehouse=warehouse,
                max_attempts=rt.settings.max_attempts, files=files, prefix=prefix, force=force,
                dry_run=dry_run, on_start=on_start, on_file=on_file,
            )
        finally:
            warehouse.close()

    if dry_run:
        return go()
    with tracked_job(rt, "load") as record:
        result = go()
        record.files_loaded, record.files_failed, record.rows_loaded = len(result.loaded), len(result.failed), result.rows
        record.failures = [{"subject": o.name, "error": o.error or ""} for o in result.failed]
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
                count: int | None = len(before.files) + before.compacted
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
