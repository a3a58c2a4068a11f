"""The warehouse interface: where raw events land and dbt builds the models.

An implementation must:
- `ensure_raw_table()`: create the raw schema and table from `estore_ops.schema` if missing.
- `load(files, store)`: load each file version into the raw table so that its rows *replace*
  every earlier row of the same `_source_file` (never append twice), reading the data itself
  (rows never pass through Python). It yields one `FileOutcome` per file as soon as that file is
  committed or failed, so the caller can advance the state right after each commit. A file whose
  generation changed during its load must not be committed (the outcome says so). It may batch
  several files in one job (BigQuery does, to respect table-modification quotas; DuckDB loads
  small files in one transaction), but then a failure must still be reported per file.
  `on_begin(items)` is called before the warehouse starts on each group of files: an in-process
  warehouse tells the caller which files a crash from here on would be blamed on. An item marked
  `solo` must be loaded in a transaction of its own (it failed before, or a run died on its batch).
  `job_attempt` (from the state) numbers the warehouse jobs of this version: a warehouse with
  deterministic job ids (BigQuery) derives them from the version and this number. An outcome
  with `job_failed` says a job of that attempt ran and failed (its ids are spent; the caller
  records it so the next attempt uses fresh ids); `retryable` failures are not the file's fault.
  Transient failures are retried inside the warehouse (estore_ops.backends.retry), never by the caller.
- `rows_by_file()`: row count per `_source_file` (checks, `cursor show`, drills).
- `count_by_version(since, until)`: row count per (`_source_file`, `_source_generation`) in ONE
  grouped query, limited to `since <= event_time < until` when given (BigQuery prunes partitions
  on it); `{}` when the raw table does not exist yet. This is the warehouse side of `verify`.
- `count_source_rows(infos, store)`: the data rows in each landing file now (`verify --deep`),
  counted where the data lives (DuckDB's reader; a BigQuery external table over gs://), never
  row by row in Python. Returns name -> count, or name -> error text for a file it cannot read.
- `query(sql)`: run a read-only query and return rows (demo summaries, tests); `query_records(sql)`
  the same rows as dicts keyed by column name (the HTML report reads marts by column name).
- `dbt_target(settings)`: the dbt profile target (a dict) that points dbt at this warehouse.
- `raw_schema`: the schema (BigQuery dataset) holding the raw table, passed to dbt's source.
- `close()`: release connections (DuckDB allows one writer: dbt needs the file free).
Each file's `header` (the column names in file order, already checked) lets loaders map columns
by name when a file has its columns in another order.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from estore_ops.backends.stores.base import ObjectInfo, ObjectStore


@dataclass(frozen=True)
class LoadItem:
    info: ObjectInfo
    header: tuple[str, ...]
    solo: bool = False
    job_attempt: int = 0


@dataclass
class FileOutcome:
    name: str
    generation: int
    size: int
    ok: bool
    rows: int = 0
    seconds: float = 0.0
    error: str | None = None
    retryable: bool = False  # e.g. the file changed while loading: not counted as an attempt
    batch_files: int = 1  # files committed in the same transaction (seconds is that transaction's time)
    job_attempt: int | None = None  # the warehouse job attempt used (None: no numbered job ran)
    job_failed: bool = False  # a job of that attempt ran and failed: the next attempt needs fresh ids
    deferred: bool = False  # set by the caller: a transient job failure, recorded, not yet counted

    @property
    def status(self) -> str:
        return "loaded" if self.ok else "deferred" if self.deferred else "failed"


class Warehouse(abc.ABC):
    url: str
    raw_schema: str = "raw"  # where raw.events lives (BigQuery: the dataset); dbt's source schema
    loads_in_process: bool = False  # True when a file's load runs inside this process (can crash it)

    @abc.abstractmethod
    def ensure_raw_table(self) -> None: ...

    @abc.abstractmethod
    def load(
        self, items: Iterable[LoadItem], store: ObjectStore, on_begin: Callable[[list[LoadItem]], None] | None = None
    ) -> Iterator[FileOutcome]: ...

    @abc.abstractmethod
    def rows_by_file(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def count_by_version(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> dict[tuple[str, int], int]: ...

    @abc.abstractmethod
    def count_source_rows(self, infos: Sequence[ObjectInfo], store: ObjectStore) -> dict[str, int | str]: ...

    @abc.abstractmethod
    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def query_records(self, sql: str) -> list[dict[str, Any]]:
        """Like `query`, with each row as {column name: value} (reports that read marts by name)."""
        raise NotImplementedError(f"{type(self).__name__} does not return named rows")

    @abc.abstractmethod
    def dbt_target(self, settings: Any) -> dict[str, Any]: ...

    def has_version(self, name: str, generation: int) -> bool:
        """Whether rows of this file version are committed (asked only after a crashed run)."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
