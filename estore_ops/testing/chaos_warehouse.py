"""A fault-injecting warehouse for tests and drills: `chaos+<inner URL>?fail=0.3&permanent=0.0&seed=1`.

It wraps a warehouse URL (`chaos+duckdb:////abs/path.duckdb`, `chaos+bigquery://project/dataset`)
and makes a share of the calls fail the way a cloud warehouse fails:

- `fail`      share of calls that fail *retryably* (HTTP 429/503, connection reset). Like a real
              warehouse, the chaos warehouse runs each call (its injected fault and the inner
              call) under the one retry policy (estore_ops.backends.retry); when the policy gives up,
              `ensure_raw_table`, `rows_by_file`, `count_by_version`, `query`, `query_records`
              and `count_source_rows` raise `TransientBackendError` and a
              file's load ends as a retryable `FileOutcome` (nothing of it committed, unless
              `lost`), exactly what the BigQuery warehouse reports after its own retries.
- `permanent` share of calls that fail *permanently*: a `BackendError` (HTTP 403) is raised, for
              a file's load too (access denied is not the file's fault: the run stops).
- `lost`      share of the transient load failures that happen *after* the inner warehouse
              committed the file (the answer was lost): the file is reported retryable although
              its rows are in, so its next load must replace them, never duplicate them.
- `ops`       which operations may fail: ensure,rows,query,load (default: all).
- `seed`      seed of the fault sequence; default random.

The parameters above are removed from the URL; anything else is passed to the inner warehouse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from estore_ops.backends import retry
from estore_ops.errors import TransientBackendError
from estore_ops.backends.stores.base import ObjectInfo, ObjectStore
from estore_ops.testing.chaos_store import FaultPlan, split_chaos_url
from estore_ops.backends.warehouses.base import FileOutcome, LoadItem, Warehouse

OPS = ("ensure", "rows", "query", "load")
T = TypeVar("T")


class ChaosWarehouse(Warehouse):
    def __init__(self, inner: Warehouse, plan: FaultPlan, url: str) -> None:
        self.inner = inner
        self.plan = plan
        self.url = url
        self.raw_schema = inner.raw_schema

    @classmethod
    def from_url(cls, url: str, work_dir: Path | None = None, read_only: bool = False, **options: Any) -> ChaosWarehouse:
        from estore_ops.backends.warehouses import open_warehouse

        inner_url, params = split_chaos_url(url, "warehouse")
        inner = open_warehouse(inner_url, work_dir=work_dir, read_only=read_only, **options)
        return cls(inner, FaultPlan(url, params, OPS, "warehouse"), url)

    def _maybe_fail(self, op: str, what: str) -> None:
        fault = self.plan.draw(op)
        if fault == "permanent":
            raise self.plan.permanent_error(f"{what} in {self.inner.url}")
        if fault == "transient":
            raise self.plan.transient_error(f"{what} in {self.inner.url}")

    def _call(self, op: str, what: str, fn: Callable[[], T]) -> T:
        def once() -> T:
            self._maybe_fail(op, what)
            return fn()

        return retry.POLICY.call(once, what=f"{what} in {self.inner.url}")

    def ensure_raw_table(self) -> None:
        self._call("ensure", "create the raw table", self.inner.ensure_raw_table)

    def rows_by_file(self) -> dict[str, int]:
        return self._call("rows", "count rows by file", self.inner.rows_by_file)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._call("query", "run a query", lambda: self.inner.query(sql))

    def query_records(self, sql: str) -> list[dict[str, Any]]:
        return self._call("query", "run a query", lambda: self.inner.query_records(sql))

    def count_by_version(self, since: datetime | None = None, until: datetime | None = None) -> dict[tuple[str, int], int]:
        return self._call("rows", "count rows by file version", lambda: self.inner.count_by_version(since, until))

    def count_source_rows(self, infos: Sequence[ObjectInfo], store: ObjectStore) -> dict[str, int | str]:
        infos = list(infos)
        return self._call("query", "count the rows of the landing files", lambda: self.inner.count_source_rows(infos, store))

    def load(
        self, items: Iterable[LoadItem], store: ObjectStore, on_begin: Callable[[list[LoadItem]], None] | None = None
    ) -> Iterator[FileOutcome]:
        self.ensure_raw_table()  # what the inner load does first
        for item in items:
            info = item.info

            def once(item: LoadItem = item) -> list[FileOutcome]:
                fault = self.plan.draw("load")
                what = f"load {item.info.name} into {self.inner.url}"
                if fault == "permanent":
                    raise self.plan.permanent_error(what)
                if fault == "transient":
                    if self.plan.lost_answer():
                        list(self.inner.load([item], store, on_begin))  # the load happened; only its answer is lost
                    raise self.plan.transient_error(what)
                return list(self.inner.load([item], store, on_begin))

            try:
                yield from retry.POLICY.call(once, what=f"load {info.name} into {self.inner.url}")
            except TransientBackendError as exc:
                yield FileOutcome(
                    info.name, info.generation, info.size, ok=False, retryable=True,
                    error=f"{exc} Nothing was recorded for this file; it loads again (rows replaced, not duplicated).",
                )

    def dbt_target(self, settings: Any) -> dict[str, Any]:
        return self.inner.dbt_target(settings)

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"ChaosWarehouse({self.inner!r}, fail={self.plan.fail}, permanent={self.plan.permanent})"
