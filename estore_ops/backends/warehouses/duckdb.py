"""DuckDB as the warehouse: the embedded default.

A file loads in one transaction: delete the rows of that file name, insert from DuckDB's own
CSV reader (typed, strict), check the object's generation did not move, commit.

Small files that arrive together (same header and compression, up to `batch_mb`) load in one
transaction through one multi-file read: DuckDB's reader then runs in parallel across files
instead of paying a statement and a commit per file. If anything in a batch fails, the batch is
rolled back and its files load one by one, so each failure is still reported for its own file.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from estore_ops.backends import environment

from estore_ops import schema
from estore_ops.errors import (
    BackendError,
    ConfigError,
    EnvironmentFaultError,
    EstoreError,
    MissingTableError,
    ObjectNotFoundError,
    TransientBackendError,
    UnreadableEntryError,
    UnsafeNameError,
)
from estore_ops.testing.faults import fault_point
from estore_ops.logs import get_logger
from estore_ops.backends.stores.base import ObjectInfo, ObjectStore, has_pattern_characters
from estore_ops.backends.warehouses import domain
from estore_ops.backends.warehouses.base import FileOutcome, LoadItem, Warehouse

if TYPE_CHECKING:
    import duckdb

# `duckdb` itself is imported where a connection is made or used: importing it takes about 75 ms,
# and a timer tick with nothing new to load never needs the engine.


log = get_logger("warehouse.duckdb")

# Files per batch: keeps the statement's file list and the name map small.
MAX_BATCH_FILES = 500


def auto_memory_limit(threads: int, memory_bytes: int | None = None) -> str:
    """The load connection's memory limit for this many DuckDB threads.

    Each reader thread holds its own buffers: a 10M-row insert needed about 32MB per thread
    (256MB failed with 16 threads, a fixed 512MB failed with 32), so the limit grows with the
    threads, with twice that headroom, and is at least 512MB; but never above 80% of the memory
    the process may use (a many-core host with a small container), where the kernel would kill it.
    """
    mb = max(512, 64 * max(1, threads))
    if memory_bytes:
        mb = min(mb, int(memory_bytes * 0.8 / 1_000_000))
    return f"{mb}MB"


def usable_memory_bytes() -> int | None:
    """Physical memory, or the cgroup's limit when lower (containers, systemd MemoryMax=)."""
    found = []
    try:
        found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            found.append(int(text))
    return min(found) if found else None


def duckdb_path_from_url(url: str) -> Path:
    """duckdb:///relative/path or duckdb:////absolute/path (see estore_ops.backends.warehouses.duckdb_path)."""
    from estore_ops.backends.warehouses import duckdb_path

    try:
        return duckdb_path(url)
    except ConfigError as exc:
        raise ConfigError(f"warehouse = {url!r} {exc}") from None


class DuckDBWarehouse(Warehouse):
    loads_in_process = True  # a file that kills this process must be caught by the next run (ingest.InFlight)
    def __init__(
        self, url: str, work_dir: Path | None = None, read_only: bool = False, memory_limit: str = "", batch_mb: int = 0
    ) -> None:
        self.url = url
        self.memory_limit = memory_limit
        self.batch_bytes = batch_mb * 1_000_000
        self.path = duckdb_path_from_url(url)
        self.work_dir = work_dir
        self.read_only = read_only
        self._limit = ""  # the memory limit in force, for messages
        self._con: duckdb.DuckDBPyConnection | None = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        if self._con is None:
            if self.read_only and not self.path.exists():
                raise BackendError(f"The warehouse {self.path} does not exist yet: run `estore-ops load` first.")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._con = duckdb.connect(str(self.path), read_only=self.read_only)
            except OSError as exc:
                raise environment.from_os_error(exc, "the warehouse folder", self.path.parent) or exc from None
            except duckdb.Error as exc:
                fault = environment.from_duckdb_error(exc, self.path, memory_limit=self._limit)
                if fault is not None:
                    raise fault from None
                first = str(exc).splitlines()[0]
                raise BackendError(
                    f"Cannot open the DuckDB warehouse {self.path}: {first}. Check that the path is a DuckDB database file."
                ) from None
            # Parse and display times in UTC whatever the machine's zone is.
            self._con.execute("SET TimeZone = 'UTC'")
            # Raw rows carry their file and generation and every model orders explicitly, so the
            # table's physical row order means nothing; keeping it would serialize the CSV reader's
            # parallel insert (about 25% of a load's time) and buffer more rows in memory.
            self._con.execute("SET preserve_insertion_order = false")
            if self.memory_limit:
                # DuckDB otherwise keeps written blocks cached up to 80% of RAM, so the peak would grow
                # with the file; with a limit it stops at the limit, at the same speed.
                limit = self.memory_limit
                if limit == "auto":
                    threads = int(self._con.execute("SELECT current_setting('threads')").fetchone()[0])  # type: ignore[index]
                    limit = auto_memory_limit(threads, usable_memory_bytes())
                self._con.execute(f"SET memory_limit = '{limit}'")
                self._limit = limit
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @contextmanager
    def _machine_faults(self) -> Iterator[None]:
        """Turn a DuckDB error caused by the machine (disk full, out of memory, a lock) into an
        EnvironmentFaultError; anything else passes through unchanged."""
        import duckdb

        try:
            yield
        except duckdb.Error as exc:
            fault = environment.from_duckdb_error(exc, self.path, memory_limit=self._limit)
            if fault is not None:
                raise fault from None
            raise

    def ensure_raw_table(self) -> None:
        with self._machine_faults():
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema.RAW_SCHEMA}")
            self.con.execute(schema.duckdb_create_table_sql())

    def rows_by_file(self) -> dict[str, int]:
        with self._machine_faults():
            if not self._table_exists():
                return {}
            rows = self.con.execute(
                f"SELECT _source_file, count(*) FROM {schema.RAW_SCHEMA}.{schema.RAW_TABLE} GROUP BY 1"
            ).fetchall()
        return {name: count for name, count in rows}

    def has_version(self, name: str, generation: int) -> bool:
        with self._machine_faults():
            if not self._table_exists():
                return False
            found = self.con.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {schema.RAW_SCHEMA}.{schema.RAW_TABLE} "
                "WHERE _source_file = ? AND _source_generation = ? LIMIT 1)", [name, generation],
            ).fetchone()
        return bool(found and found[0])

    def _table_exists(self) -> bool:
        found = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema.RAW_SCHEMA, schema.RAW_TABLE],
        ).fetchone()
        return bool(found and found[0])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import duckdb

        with self._machine_faults():
            try:
                return self.con.execute(sql).fetchall()
            except duckdb.CatalogException as exc:
                first = str(exc).splitlines()[0]
                raise MissingTableError(f"{first} (warehouse {self.path}).") from None

    def query_records(self, sql: str) -> list[dict[str, Any]]:
        cursor = self.con.execute(sql)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- verify ------------------------------------------------------------------------------
    def count_by_version(self, since: datetime | None = None, until: datetime | None = None) -> dict[tuple[str, int], int]:
        if not self._table_exists():
            return {}
        where, params = _time_range(since, until)
        rows = self.con.execute(
            f"SELECT _source_file, _source_generation, count(*) FROM {schema.RAW_SCHEMA}.{schema.RAW_TABLE}"
            f"{where} GROUP BY 1, 2", params,
        ).fetchall()
        return {(name, int(generation)): int(count) for name, generation, count in rows}

    def count_source_rows(self, infos: Sequence[ObjectInfo], store: ObjectStore) -> dict[str, int | str]:
        return count_csv_rows(self.con, infos, store, self.work_dir)

    def dbt_target(self, settings: Any) -> dict[str, Any]:
        return {"type": "duckdb", "path": str(self.path), "threads": 2, "schema": "main"}

    # -- loading -----------------------------------------------------------------------------
    def load(
        self, items: Iterable[LoadItem], store: ObjectStore, on_begin: Callable[[list[LoadItem]], None] | None = None
    ) -> Iterator[FileOutcome]:
        self.ensure_raw_table()
        for group in self._groups(items):
            if on_begin:
                on_begin(group)
            if len(group) == 1:
                yield self._load_one(group[0], store)
                continue
            outcomes = self._load_batch(group, store)
            if outcomes is not None:
                for outcome in outcomes:
                    fault_point("after_commit")
                    yield outcome
                continue
            log.info("a file in a batch of %d failed: loading them one by one to report it", len(group))
            for item in group:
                if on_begin:
                    on_begin([item])
                yield self._load_one(item, store)

    def _groups(self, items: Iterable[LoadItem]) -> Iterator[list[LoadItem]]:
        """Consecutive files (arrival order) that can share one read: same header, same compression."""
        group: list[LoadItem] = []
        size = 0
        for item in items:
            if group and not self._fits(group, size, item):
                yield group
                group, size = [], 0
            group.append(item)
            size += item.info.size
        if group:
            yield group

    def _fits(self, group: list[LoadItem], size: int, item: LoadItem) -> bool:
        first = group[0]
        return (
            self.batch_bytes > 0 and not first.solo and not item.solo
            and item.header == first.header and item.info.is_gzip == first.info.is_gzip
            and size + item.info.size <= self.batch_bytes and len(group) < MAX_BATCH_FILES
        )

    def _replace_rows(self, con: duckdb.DuckDBPyConnection, group: list[LoadItem], paths: list[str]) -> int:
        """Right after the caller's BEGIN: delete the rows of these files, insert them from
        `paths`, and return the number of rows inserted. Raises duckdb.Error on bad data. When
        the times need the general parser it restarts that transaction, so nothing may precede
        this call in it."""
        import duckdb

        names = [item.info.name for item in group]
        delete = f"DELETE FROM {schema.RAW_SCHEMA}.{schema.RAW_TABLE} WHERE _source_file IN (SELECT unnest(?::VARCHAR[]))"
        con.execute(delete, [names])
        params = [paths, "gzip" if group[0].info.is_gzip else "none", paths, names, [i.info.generation for i in group]]
        try:
            inserted = con.execute(_insert_sql(group[0].header, exact_utc_times=True), params).fetchone()
        except duckdb.Error as exc:
            if 'converting column "event_time"' not in str(exc):
                raise
            # Times not all written as 'YYYY-MM-DD HH:MM:SS UTC' (offsets, fractions, or bad values):
            # start over with the general parser; its error, if any, is the one reported.
            con.execute("ROLLBACK")
            con.execute("BEGIN TRANSACTION")
            con.execute(delete, [names])
            inserted = con.execute(_insert_sql(group[0].header, exact_utc_times=False), params).fetchone()
        return int(inserted[0]) if inserted else 0

    def _load_batch(self, group: list[LoadItem], store: ObjectStore) -> list[FileOutcome] | None:
        """Load the files in one transaction; None when a file failed (nothing was kept).

        A fault of the machine (disk full, out of memory) raises EnvironmentFaultError instead:
        loading the files one by one would only hit it again.
        """
        import duckdb

        started = time.monotonic()
        names = [item.info.name for item in group]
        with ExitStack() as stack, self._machine_faults():
            try:
                readable = [stack.enter_context(_readable_path(store, name, self.work_dir)) for name in names]
            except EnvironmentFaultError:
                raise
            except (EstoreError, OSError, RuntimeError):
                return None  # each file alone says which one cannot be read
            paths = [str(r.path) for r in readable]
            con = self.con
            con.execute("BEGIN TRANSACTION")
            try:
                self._replace_rows(con, group, paths)
                for name in names:
                    fault_point("inside_transaction", name)
                # Rows of these names were deleted above, so every row left is from this insert;
                # the generation range lets DuckDB skip older row groups.
                generations = [item.info.generation for item in group]
                counts = dict(con.execute(
                    f"SELECT _source_file, count(*) FROM {schema.RAW_SCHEMA}.{schema.RAW_TABLE} "
                    "WHERE _source_generation BETWEEN ? AND ? AND _source_file IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1",
                    [min(generations), max(generations), names],
                ).fetchall())
                if any(not _unchanged(store, item.info) for item in group):
                    con.execute("ROLLBACK")
                    return None  # the file alone gets the changed/disappeared outcome
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                sources = [p for r in readable for p in r.sources]
                fault = environment.from_duckdb_error(exc, self.path, sources, self._limit)
                if fault is not None:
                    raise fault from None
                return None
            except BaseException:
                _rollback(con)
                raise
        seconds = time.monotonic() - started
        return [
            FileOutcome(item.info.name, item.info.generation, item.info.size, ok=True,
                        rows=int(counts.get(item.info.name, 0)), seconds=seconds, batch_files=len(group))
            for item in group
        ]

    def _load_one(self, item: LoadItem, store: ObjectStore) -> FileOutcome:
        import duckdb

        info = item.info
        started = time.monotonic()
        outcome = FileOutcome(info.name, info.generation, info.size, ok=False)
        with ExitStack() as stack, self._machine_faults():
            try:
                readable = stack.enter_context(_readable_path(store, info.name, self.work_dir))
            except ObjectNotFoundError:
                outcome.error, outcome.retryable = _disappeared(info.name), True
                return outcome
            except TransientBackendError as exc:
                outcome.error, outcome.retryable = f"{info.name}: could not be downloaded ({exc}); it is tried again.", True
                return outcome
            except (UnreadableEntryError, UnsafeNameError) as exc:
                outcome.error = str(exc)
                return outcome
            path = readable.path
            con = self.con
            con.execute("BEGIN TRANSACTION")
            try:
                inserted = self._replace_rows(con, [item], [str(path)])
                fault_point("inside_transaction", info.name)
                now = _current_version(store, info.name)
                if now is None or not now.same_version(info):
                    con.execute("ROLLBACK")
                    outcome.error = (
                        f"{info.name} changed while it was loading ({info.describe_version()} -> "
                        f"{now.describe_version()}); nothing was kept, the new version loads on the next run."
                        if now is not None else _disappeared(info.name)
                    )
                    outcome.retryable = True
                    return outcome
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                fault = environment.from_duckdb_error(exc, self.path, readable.sources, self._limit)
                if fault is not None:
                    raise fault from None
                outcome.error = describe_load_error(info.name, path, info.is_gzip, exc)
                return outcome
            except BaseException:
                _rollback(con)
                raise
        fault_point("after_commit")
        outcome.ok = True
        outcome.rows = inserted
        outcome.seconds = time.monotonic() - started
        return outcome


def _disappeared(name: str) -> str:
    return (
        f"{name} disappeared from the landing area while it was loading (renamed or deleted); nothing of it "
        "was kept. If it was renamed, it loads under its new name on the next run."
    )


def _current_version(store: ObjectStore, name: str) -> ObjectInfo | None:
    """The object as it is now; None when it was renamed or deleted while loading."""
    try:
        return store.stat(name)
    except ObjectNotFoundError:
        return None


def _unchanged(store: ObjectStore, info: ObjectInfo) -> bool:
    now = _current_version(store, info.name)
    return now is not None and now.same_version(info)


def _time_range(since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    """A WHERE clause (and its parameters) for since <= event_time < until."""
    clauses, params = [], []
    if since is not None:
        clauses.append("event_time >= ?")
        params.append(since)
    if until is not None:
        clauses.append("event_time < ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def count_csv_rows(
    con: duckdb.DuckDBPyConnection, infos: Sequence[ObjectInfo], store: ObjectStore, work_dir: Path | None
) -> dict[str, int | str]:
    """The data rows of each file, counted by DuckDB's CSV reader with the loader's dialect.

    Every column is read as text: this counts records, it does not judge values (the load did).
    Files of one compression are read in one parallel multi-file scan; if that scan fails, the
    files are counted one by one so the error names its file. A file that is not local is copied
    to `work_dir` first (a GCS landing area with a DuckDB warehouse).
    """
    import duckdb

    columns = "{" + ", ".join(f"'{name}': 'VARCHAR'" for name in schema.SOURCE_COLUMN_NAMES) + "}"
    sql = (
        "SELECT filename, count(*) FROM read_csv(?, header = true, auto_detect = false, columns = " + columns + ", "
        "delim = ',', quote = '\"', escape = '\"', strict_mode = true, null_padding = false, "
        "compression = ?, filename = true, hive_partitioning = false) GROUP BY filename"
    )
    out: dict[str, int | str] = {}

    def count(group: Sequence[ObjectInfo]) -> None:
        with ExitStack() as stack:
            paths = {str(stack.enter_context(_readable_path(store, i.name, work_dir)).path): i.name for i in group}
            rows = con.execute(sql, [list(paths), "gzip" if group[0].is_gzip else "none"]).fetchall()
        found = {paths[path]: int(n) for path, n in rows}
        for info in group:
            out[info.name] = found.get(info.name, 0)  # a header-only file has no data row

    for gz in (False, True):
        group = [i for i in infos if i.is_gzip == gz]
        for start in range(0, len(group), MAX_BATCH_FILES):
            chunk = group[start:start + MAX_BATCH_FILES]
            try:
                count(chunk)
                continue
            except (duckdb.Error, EstoreError, OSError):
                pass
            for info in chunk:
                try:
                    count([info])
                except (duckdb.Error, EstoreError, OSError) as exc:
                    out[info.name] = describe_csv_error(info.name, exc) if isinstance(exc, duckdb.Error) else f"{info.name}: {exc}"
    return out


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    import duckdb

    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


class _readable_path:
    """A local path for the object: the file itself when the store is local, else a temp copy.

    Errors are sorted on the way: an entry that cannot be opened (a dangling or looping link)
    raises UnreadableEntryError (that file fails alone); a work folder the machine refuses (full,
    read-only, not ours) raises EnvironmentFaultError (the run stops, no file is blamed).
    """

    def __init__(self, store: ObjectStore, name: str, work_dir: Path | None) -> None:
        self.store, self.name, self.work_dir = store, name, work_dir
        self._tmp: Path | None = None
        self.path = Path()
        self.sources: list[str] = []  # paths DuckDB may name in an error about this file

    def __enter__(self) -> _readable_path:
        local = self.store.local_path(self.name)
        if local is not None and not has_pattern_characters(str(local)):
            self.path = local
            self.sources = [str(local)]
            return self
        folder = self.work_dir or Path(tempfile.gettempdir())
        suffix = ".csv.gz" if self.name.lower().endswith(".gz") else ".csv"
        if local is not None:
            # DuckDB's reader expands * ? [ ] { } in a path: `data[1].csv` would read `data1.csv`.
            # A link with a plain name reads the file itself.
            try:
                target = local.resolve(strict=True)
            except (OSError, RuntimeError) as exc:  # a dangling link, a loop of links
                raise UnreadableEntryError(
                    f"{self.name}: cannot be opened ({getattr(exc, 'strerror', None) or exc}). If it is a link, "
                    "point it to an existing file in the landing area, or remove it."
                ) from None
            try:
                folder.mkdir(parents=True, exist_ok=True)
                link = Path(tempfile.mktemp(suffix=suffix, dir=folder))
                link.symlink_to(target)
            except OSError as exc:
                raise environment.from_os_error(exc, "the work folder", folder) or exc from None
            self._tmp = link
            self.path, self.sources = link, [str(link), str(target)]
            return self
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=suffix, dir=folder)
            os.close(fd)
        except OSError as exc:
            raise environment.from_os_error(exc, "the work folder", folder) or exc from None
        self._tmp = Path(tmp)
        self.path, self.sources = self._tmp, [tmp]

        try:
            # The store's stream resumes after a reset (stores.base.ResumingReader): no retry here.
            with open(tmp, "wb") as out, self.store.open(self.name) as src:
                while block := src.read(8 << 20):  # streamed in 8 MiB blocks, never parsed here
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise environment.from_os_error(exc, "the work folder", folder) or exc from None
        except BaseException:
            self._tmp.unlink(missing_ok=True)  # __exit__ does not run when __enter__ raises
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


# REES46 writes every time as '2019-10-01 00:00:00 UTC'. Read with exactly that format, the reader
# makes a plain TIMESTAMP and make_timestamptz(epoch_us(...)) turns it into the same instant with no
# time-zone lookup per row; the general TIMESTAMPTZ parser spends about 7% of a load on those.
_UTC_TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def _insert_sql(header: tuple[str, ...], exact_utc_times: bool) -> str:
    """INSERT of the files in the `?` path list into the raw table, typed by DuckDB's reader.

    Parameters: paths, compression, paths, names, generations. BY NAME maps columns by header
    name, so a file with reordered columns loads right. The reader names each row's file by the
    path it was given; the map turns that into the object's name and generation (a path it does
    not know aborts the load). The domain checks (estore_ops.backends.warehouses.domain: finite, non-negative
    prices, whole-number ids, a finite event_time) ride on the same scan: a value out of its domain
    aborts the statement, and only then is the file read again to find the line (rare path).
    """
    read_as = {c: "VARCHAR" for c in domain.ID_COLUMNS}  # DuckDB's integer parser rounds 1.5 to 2
    if exact_utc_times:
        read_as["event_time"] = "TIMESTAMP"
    columns = schema.duckdb_csv_columns(header, read_as=read_as)
    time_options = ""
    event_time = domain.event_time_sql("r.event_time", "r.event_time")
    if exact_utc_times:
        time_options = f", timestampformat = '{_UTC_TIME_FORMAT}'"
        event_time = domain.event_time_sql("r.event_time", "make_timestamptz(epoch_us(r.event_time))")
    checked = [f"{domain.price_sql('r.price')} AS price", f"{event_time} AS event_time"]
    checked += [f"{domain.id_sql(c, f'r.{c}')} AS {c}" for c in domain.ID_COLUMNS]
    return f"""
        INSERT INTO {schema.RAW_SCHEMA}.{schema.RAW_TABLE} BY NAME
        SELECT r.* EXCLUDE (filename) REPLACE ({", ".join(checked)}),
               coalesce(f.name, error('estore: unmapped file ' || r.filename)) AS _source_file,
               f.generation AS _source_generation, now() AS _loaded_at
        FROM read_csv(?, header = true, auto_detect = false, columns = {columns},
                      delim = ',', quote = '"', escape = '"', strict_mode = true,
                      null_padding = false, compression = ?, filename = true,
                      hive_partitioning = false{time_options}) AS r
        LEFT JOIN (SELECT unnest(?::VARCHAR[]) AS path, unnest(?::VARCHAR[]) AS name,
                          unnest(?::BIGINT[]) AS generation) AS f
               ON r.filename = f.path
    """


def describe_load_error(name: str, path: Path, is_gzip: bool, exc: BaseException) -> str:
    """The verdict for a file whose statement failed: file, line, column, what is wrong, what to do."""
    text = str(exc)
    if domain.CHECK in text or (not _LINE.search(text) and "Could not convert string" in text):
        # A domain check (or the id cast after it) fired: read the file again for the line.
        found = domain.violation(name, path, is_gzip)
        if found:
            return found
        column = text.split(domain.CHECK, 1)[1].split()[0].strip("'\"") if domain.CHECK in text else ""
        if column:
            return (f"{name}, column {column}: a value is out of its domain (the line could not be found again). "
                    f"{_AGAIN}")
    if "state machine reached an invalid state" in text:
        endings = domain.mixed_line_endings(path, is_gzip)
        if endings:
            return domain.describe_line_endings(name, endings)
    return describe_csv_error(name, exc)


_LINE = re.compile(r"CSV Error on Line: (\d+)")
_COLUMN = re.compile(r'Error when converting column "([^"]+)"\. (.*)')
_FIELDS = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")
_AGAIN = "Fix the file and upload it again; the new version loads on the next run."


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
    if "No files found that match the pattern" in text:
        return (
            f"{name} disappeared from the landing area while it was loading (renamed or deleted); nothing of it "
            "was kept. If it was renamed, it loads under its new name on the next run."
        )
    fields = _FIELDS.search(text)
    if fields:
        expected, found = fields.groups()
        if "Original Line: \\0\\0" in text or "\x00\x00" in text:  # DuckDB shows NUL bytes as \0
            return (
                f"{where}: the line is made of NUL (zero) bytes: the file was cut off while it was being written. "
                "Upload the complete file again; the new version loads on the next run."
            )
        return (
            f"{where}: the line has {found} fields, {expected} expected (a missing or extra comma, "
            f"or a comma inside a value that is not quoted). {_AGAIN}"
        )
    if "unterminated quote" in text:
        return (
            f"{where}: a quoted value is never closed (unterminated quote), so the rest of the file "
            f"cannot be read. Close the quote (write \"\" for a quote inside a value). {_AGAIN}"
        )
    if "Invalid unicode" in text:
        return f"{where}: the line is not valid UTF-8 text. Export the file as UTF-8 (not Latin-1 or UTF-16). {_AGAIN}"
    if "GZIP" in text or "gzip" in text:
        first = (text.splitlines()[0] if text else "").split(": /")[0]  # not the temp path
        return (
            f"{name}: the gzip data is damaged or cut short ({first.strip()[:200]}). "
            "Upload the complete file again; the new version loads on the next run."
        )
    if "Maximum line size" in text:
        return f"{where}: the line is longer than the reader accepts (a value of megabytes, or a file without line breaks). {_AGAIN}"
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("Original Line")), text)
    detail = ""
    for ln in text.splitlines():
        if ln.startswith(("Expected Number of Columns", "Found", "Value with unterminated quote", "Invalid unicode")):
            detail += " " + ln.strip()
    return f"{where}: {first.strip()[:300]}{detail[:300]} {_AGAIN}"
