"""DuckDB as the warehouse: the embedded default.

Each file loads in one transaction: delete the rows of that file name, insert from DuckDB's own
CSV reader (typed, strict), check the object's generation did not move, commit.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb

from estore_ops import schema
from estore_ops.errors import BackendError
from estore_ops.faults import fault_point
from estore_ops.stores.base import ObjectStore
from estore_ops.warehouses.base import FileOutcome, LoadItem, Warehouse

_TYPES = {c.name: c.duckdb_type for c in schema.SOURCE_COLUMNS}


def duckdb_path_from_url(url: str) -> Path:
    # duckdb:///relative/path or duckdb:////absolute/path (the SQLAlchemy convention).
    rest = url[len("duckdb:///"):].partition("?")[0]
    return Path(rest)


class DuckDBWarehouse(Warehouse):
    def __init__(self, url: str, work_dir: Path | None = None, read_only: bool = False) -> None:
        self.url = url
        self.path = duckdb_path_from_url(url)
        self.work_dir = work_dir
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            if self.read_only and not self.path.exists():
                raise BackendError(f"The warehouse {self.path} does not exist yet: run `estore-ops load` first.")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._con = duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                raise BackendError(
                    f"Cannot open the DuckDB warehouse {self.path}: {str(exc).splitlines()[0]}. "
                    "DuckDB allows one writer: is another estore-ops or a DuckDB shell using it?"
                ) from None
            # Parse and display times in UTC whatever the machine's zone is.
            self._con.execute("SET TimeZone = 'UTC'")
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def ensure_raw_table(self) -> None:
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema.RAW_SCHEMA}")
        self.con.execute(schema.duckdb_create_table_sql())

    def rows_by_file(self) -> dict[str, int]:
        if not self._table_exists():
            return {}
        rows = self.con.execute(
            f"SELECT _source_file, count(*) FROM {schema.RAW_SCHEMA}.{schema.RAW_TABLE} GROUP BY 1"
        ).fetchall()
        return {name: count for name, count in rows}

    def _table_exists(self) -> bool:
        found = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema.RAW_SCHEMA, schema.RAW_TABLE],
        ).fetchone()
        return bool(found and found[0])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def dbt_target(self, settings: Any) -> dict[str, Any]:
        return {"type": "duckdb", "path": str(self.path), "threads": 2, "schema": "main"}

    # -- loading -----------------------------------------------------------------------------
    def load(self, items: Iterable[LoadItem], store: ObjectStore) -> Iterator[FileOutcome]:
        self.ensure_raw_table()
        for item in items:
            yield self._load_one(item, store)

    def _load_one(self, item: LoadItem, store: ObjectStore) -> FileOutcome:
        info = item.info
        started = time.monotonic()
        outcome = FileOutcome(info.name, info.generation, info.size, ok=False)
        with _readable_path(store, info.name, self.work_dir) as path:
            columns = "{" + ", ".join(f"'{c}': '{_TYPES[c]}'" for c in item.header) + "}"
            con = self.con
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    f"DELETE FROM {schema.RAW_SCHEMA}.{schema.RAW_TABLE} WHERE _source_file = ?", [info.name]
                )
                # BY NAME maps columns by header name, so a file with reordered columns loads right.
                inserted = con.execute(
                    f"""
                    INSERT INTO {schema.RAW_SCHEMA}.{schema.RAW_TABLE} BY NAME
                    SELECT *, ?::VARCHAR AS _source_file, ?::BIGINT AS _source_generation,
                           now() AS _loaded_at
                    FROM read_csv(?, header = true, auto_detect = false, columns = {columns},
                                  delim = ',', quote = '"', escape = '"', strict_mode = true,
                                  null_padding = false, compression = ?)
                    """,
                    [info.name, info.generation, str(path), "gzip" if info.is_gzip else "none"],
                ).fetchone()
                fault_point("inside_transaction")
                now_generation = store.stat(info.name).generation
                if now_generation != info.generation:
                    con.execute("ROLLBACK")
                    outcome.error = (
                        f"{info.name} changed while it was loading (generation {info.generation} -> "
                        f"{now_generation}); nothing was kept, the new version loads on the next run."
                    )
                    outcome.retryable = True
                    return outcome
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                outcome.error = describe_csv_error(info.name, exc)
                return outcome
            except BaseException:
                _rollback(con)
                raise
        fault_point("after_commit")
        outcome.ok = True
        outcome.rows = int(inserted[0]) if inserted else 0
        outcome.seconds = time.monotonic() - started
        return outcome


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


class _readable_path:
    """A local path for the object: the file itself when the store is local, else a temp copy."""

    def __init__(self, store: ObjectStore, name: str, work_dir: Path | None) -> None:
        self.store, self.name, self.work_dir = store, name, work_dir
        self._tmp: Path | None = None

    def __enter__(self) -> Path:
        local = self.store.local_path(self.name)
        if local is not None:
            return local
        if self.work_dir:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        suffix = ".csv.gz" if self.name.lower().endswith(".gz") else ".csv"
        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=self.work_dir)
        self._tmp = Path(tmp)
        with open(fd, "wb") as out, self.store.open(self.name) as src:
            shutil.copyfileobj(src, out, 8 << 20)  # streamed in 8 MiB blocks, never parsed here
        return self._tmp

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


_LINE = re.compile(r"CSV Error on Line: (\d+)")
_COLUMN = re.compile(r'Error when converting column "([^"]+)"\. (.*)')


def describe_csv_error(name: str, exc: BaseException) -> str:
    """Turn a DuckDB reader error into: file, line, column, what is wrong, what to do."""
    text = str(exc)
    line = _LINE.search(text)
    column = _COLUMN.search(text)
    where = f"{name}"
    if line:
        where += f", line {line.group(1)}"
    if column:
        value_problem = column.group(2).split("\n")[0]
        return (
            f"{where}, column {column.group(1)}: {value_problem[:300]} "
            "Fix the value (or remove the line) and upload the file again; the new version loads on the next run."
        )
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("Original Line")), text)
    detail = ""
    for ln in text.splitlines():
        if ln.startswith(("Expected Number of Columns", "Found", "Value with unterminated quote", "Invalid unicode")):
            detail += " " + ln.strip()
    return (
        f"{where}: {first.strip()[:300]}{detail[:300]} "
        "Fix the file and upload it again; the new version loads on the next run."
    )
