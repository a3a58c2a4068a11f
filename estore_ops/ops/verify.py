"""`estore-ops verify`: does the warehouse hold exactly what landed?

For every file version the state says is loaded, three counts are compared:
- rows in the raw table for that (file, generation): ONE grouped query (`Warehouse.count_by_version`);
- rows the state recorded when the file was loaded;
- data rows in the file now, if it still exists. Without `--deep` this is the state's count
  checked against the listing (same generation and size = same content), so nothing is read or
  downloaded; `--deep` recounts the files where they live (DuckDB's reader, or a BigQuery external
  table over gs://).

Each file gets one verdict; rows of versions the state does not know get their own "orphan" line.
A problem comes with the command that fixes it, using the existing `load --file NAME --force` and
`cursor reset --file NAME`; nothing is ever changed by `verify` itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from estore_ops import schema
from estore_ops.ingest.pipeline import _list_csv
from estore_ops.ingest.state import LOADED, QUARANTINED, IngestState
from estore_ops.backends.stores.base import ObjectInfo

OK = "ok"
MISSING = "missing_rows"
EXTRA = "extra_rows"
ORPHAN = "orphan_rows"
GONE = "file_gone"
PENDING = "pending"
UNCHECKED = "unchecked"
VERDICTS = (OK, MISSING, EXTRA, ORPHAN, GONE, PENDING, UNCHECKED)

PRESENT, FILE_GONE, CHANGED = "present", "gone", "changed"


@dataclass
class FileCheck:
    """The verdict on one file version (or on rows of a version the state does not know)."""

    name: str
    generation: int | None  # the version the state says is loaded (for an orphan line: the rows' version)
    verdict: str
    problem: bool
    state_rows: int | None = None  # recorded at load time (None: not recorded, e.g. an old folded record)
    warehouse_rows: int = 0
    file_rows: int | None = None  # the file now: recounted with --deep, else the state's count when unchanged
    file: str = PRESENT  # present | gone | changed
    current_generation: int | None = None  # the landing file's generation now
    detail: str = ""
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "generation": self.generation, "verdict": self.verdict, "problem": self.problem,
            "state_rows": self.state_rows, "warehouse_rows": self.warehouse_rows, "file_rows": self.file_rows,
            "file": self.file, "current_generation": self.current_generation, "detail": self.detail, "fix": self.fix,
        }


@dataclass
class VerifyResult:
    checks: list[FileCheck] = field(default_factory=list)
    deep: bool = False
    since: datetime | None = None
    until: datetime | None = None
    fail_on_gone: bool = False
    listed: int = 0
    seconds: float = 0.0
    run_id: str = ""

    @property
    def problems(self) -> list[FileCheck]:
        return [c for c in self.checks if c.problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICTS}
        for c in self.checks:
            out[c.verdict] += 1
        return out

    def render(self, out: Any, show_all: bool = False) -> None:
        """A table of the files that need a look (every file with show_all), then a summary line."""
        if out.json_mode:
            out.json(self.as_dict())
            return
        shown = [c for c in self.checks if show_all or c.verdict != OK]
        if shown:
            out.table(
                "Verify: warehouse vs state vs landing files",
                ["File", "Generation", "Verdict", "Warehouse", "State", "File rows", "Detail", "Fix"],
                [[c.name, c.generation, c.verdict.upper() if c.problem else c.verdict, out.num(c.warehouse_rows),
                  out.num(c.state_rows), out.num(c.file_rows), c.detail, c.fix] for c in shown],
                keys=["file", "generation", "verdict", "warehouse_rows", "state_rows", "file_rows", "detail", "fix"],
            )
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items() if n)
        scope = []
        if self.since or self.until:
            scope.append(f"events {self.since.isoformat() if self.since else '...'} to {self.until.isoformat() if self.until else '...'}")
        scope.append("files recounted (--deep)" if self.deep else "file rows from the state and the listing")
        verdict = "everything agrees" if self.ok else f"{len(self.problems)} problem(s)"
        out.line(f"verify: {verdict}; {len(self.checks)} file version(s) checked ({counts or 'nothing loaded'}); "
                 f"{'; '.join(scope)}; {self.seconds:.2f}s.", style=None if self.ok else "red")

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "ok": self.ok, "deep": self.deep,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "fail_on_gone": self.fail_on_gone, "listed": self.listed, "seconds": round(self.seconds, 3),
            "counts": self.counts(), "problems": len(self.problems),
            "files": [c.as_dict() for c in self.checks],
        }


def verify(
    state: IngestState,
    listing: Iterable[ObjectInfo],
    warehouse: Any,
    landing: Any,
    *,
    deep: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    fail_on_gone: bool = False,
    prefix: str = "",
) -> VerifyResult:
    """Compare the state, the warehouse and the landing area; `landing` is read only with `deep`."""
    started = time.monotonic()
    files = {i.name: i for i in listing if i.name.startswith(prefix)}
    result = VerifyResult(deep=deep, since=since, until=until, fail_on_gone=fail_on_gone, listed=len(files))
    ranged = since is not None or until is not None
    table = _Table.of(warehouse)

    loaded: dict[str, tuple[int, int | None, int | None]] = {
        name: (gen, None, None) for name, gen in state.folded.items() if name.startswith(prefix)
    }
    loaded |= {
        name: (rec.generation, rec.rows, rec.size) for name, rec in state.files.items()
        if rec.status == LOADED and name.startswith(prefix)
    }
    in_warehouse: dict[str, dict[int, int]] = {}
    for (name, generation), n in warehouse.count_by_version(since, until).items():
        if name.startswith(prefix):
            in_warehouse.setdefault(name, {})[generation] = n

    recounted: dict[str, int | str] = {}
    if deep:
        same = [files[n] for n, (gen, _, _) in loaded.items() if n in files and files[n].generation == gen]
        recounted = warehouse.count_source_rows(same, landing) if same else {}

    for name in sorted(loaded):
        generation, state_rows, size = loaded[name]
        result.checks.append(_check_loaded(
            name, generation, state_rows, size, in_warehouse.get(name, {}).get(generation, 0), files.get(name),
            recounted.get(name), ranged, fail_on_gone, table,
        ))
    for name in sorted(in_warehouse):
        loaded_generation = loaded.get(name, (None,))[0]
        for generation, n in sorted(in_warehouse[name].items()):
            if generation != loaded_generation:
                result.checks.append(_orphan(name, generation, n, loaded_generation, state, files.get(name), table))
    result.seconds = time.monotonic() - started
    return result


def _check_loaded(
    name: str, generation: int, state_rows: int | None, size: int | None, warehouse_rows: int,
    info: ObjectInfo | None, recount: int | str | None, ranged: bool, fail_on_gone: bool, table: _Table,
) -> FileCheck:
    check = FileCheck(name, generation, OK, False, state_rows=state_rows, warehouse_rows=warehouse_rows)
    if info is None:
        check.file = FILE_GONE
    else:
        check.current_generation = info.generation
        same_content = info.generation == generation and (size is None or info.size == size)
        check.file = PRESENT if same_content else CHANGED
    if check.file == PRESENT:
        check.file_rows = recount if isinstance(recount, int) else state_rows
    expected = check.file_rows if check.file == PRESENT and isinstance(recount, int) else state_rows
    notes = []
    if isinstance(recount, str):
        notes.append(f"could not recount the file: {recount}")
    elif isinstance(recount, int) and state_rows is not None and recount != state_rows:
        notes.append(f"the state recorded {state_rows} rows at load time, the file holds {recount}")
    reload = _reload_fix(name, check.file, table)

    if expected is None:
        if warehouse_rows == 0 and not ranged:
            _set(check, MISSING, True, f"no row of generation {generation} in the warehouse", reload)
        elif warehouse_rows == 0:
            _set(check, UNCHECKED, False, "no row in the date range (the state kept no row count for this old "
                 "file: run without --since/--until, or with --deep)")
        else:
            notes.append("row count not recorded in the state (an old, compacted record): only presence is "
                         "checked; --deep recounts the file")
    elif warehouse_rows > expected:
        _set(check, EXTRA, True, f"{warehouse_rows - expected} extra row(s): the warehouse holds {warehouse_rows}, "
             f"the {'file' if isinstance(recount, int) else 'load'} had {expected} (duplicates)", reload)
    elif warehouse_rows < expected and ranged:
        _set(check, UNCHECKED, False, f"{warehouse_rows} of {expected} rows are in the date range: the file has events "
             "outside --since/--until, or rows are missing; run without the range to tell")
    elif warehouse_rows < expected:
        _set(check, MISSING, True, f"{expected - warehouse_rows} row(s) missing: the warehouse holds {warehouse_rows}, "
             f"the {'file' if isinstance(recount, int) else 'load'} had {expected}", reload)

    if check.verdict == OK:
        if check.file == FILE_GONE:
            _set(check, GONE, fail_on_gone,
                 "the landing file is gone (its rows are still in the warehouse)",
                 "Nothing to do if a lifecycle rule removes loaded files; restore the file if it was deleted by mistake."
                 + ("" if fail_on_gone else " (Not a failure: pass --fail-on-gone to make it one.)"))
        elif check.file == CHANGED:
            _set(check, PENDING, False,
                 f"the landing file changed since it was loaded (generation {generation} -> {check.current_generation}): "
                 "the new version is pending; the warehouse holds the loaded version",
                 "`estore-ops load` loads the new version (its rows replace these).")
    check.detail = "; ".join([d for d in [check.detail, *notes] if d])
    return check


def _set(check: FileCheck, verdict: str, problem: bool, detail: str, fix: str = "") -> None:
    check.verdict, check.problem, check.detail, check.fix = verdict, problem, detail, fix


def _reload_fix(name: str, file: str, table: _Table) -> str:
    if file == PRESENT:
        return f"estore-ops load --file {name} --force"
    if file == CHANGED:
        return f"estore-ops load --file {name}  (loads the new version; its rows replace these)"
    return (f"the file is gone: restore it and run `estore-ops load --file {name} --force`, or remove its rows with "
            f"{table.delete(name)} (and `estore-ops cursor reset --file {name}`)")


def _orphan(
    name: str, generation: int, rows: int, loaded_generation: int | None, state: IngestState,
    info: ObjectInfo | None, table: _Table,
) -> FileCheck:
    check = FileCheck(name, generation, ORPHAN, True, warehouse_rows=rows, file=PRESENT if info else FILE_GONE,
                      current_generation=info.generation if info else None)
    record = state.files.get(name)
    if loaded_generation is not None:
        age = "older than" if generation < loaded_generation else "not"
        why = f"{rows} row(s) of generation {generation}, {age} the loaded generation {loaded_generation}"
    elif record is not None:
        why = (f"{rows} row(s) of generation {generation}; the state's record of this file is generation "
               f"{record.generation}, {record.status} ({(record.last_error or '').splitlines()[0][:200] if record.last_error else 'no error'})")
    else:
        why = f"{rows} row(s) of generation {generation}, a file version the state does not know"
    delete = table.delete(name, generation)
    if info is None:
        fix = f"the file is not in the landing area: remove these rows with {delete}"
    elif record is not None and record.status == QUARANTINED and loaded_generation is None:
        fix = f"estore-ops cursor reset --file {name}, then estore-ops load --file {name}  (after fixing the file)"
    else:
        fix = f"estore-ops load --file {name} --force  (its rows are replaced by the current version)"
    check.detail, check.fix = why, fix
    return check


@dataclass(frozen=True)
class _Table:
    """How a fix suggestion names the raw table and quotes a file name, in the warehouse's SQL."""

    name: str
    bigquery: bool

    @classmethod
    def of(cls, warehouse: Any) -> _Table:
        inner = getattr(warehouse, "inner", warehouse)  # through a chaos+ wrapper
        table_id = getattr(inner, "table_id", None)
        return cls(f"`{table_id}`", True) if table_id else cls(f"{schema.RAW_SCHEMA}.{schema.RAW_TABLE}", False)

    def literal(self, value: str) -> str:
        if self.bigquery:
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return "'" + value.replace("'", "''") + "'"

    def delete(self, name: str, generation: int | None = None) -> str:
        where = f"_source_file = {self.literal(name)}"
        if generation is not None:
            where += f" AND _source_generation = {generation}"
        return f"DELETE FROM {self.name} WHERE {where}"


def list_landing(landing: Any, prefix: str = "") -> list[ObjectInfo]:
    return _list_csv(landing, prefix)
