"""Table columns on each warehouse: read them, compare them, change them in place.

`TableEditor` is the small interface the upgrade steps use; `editor_for(warehouse)` picks the
implementation the warehouse's declaration names (DuckDB or BigQuery; see estore_ops.backends.registry). What an implementation must do:
- `canonical(type)`: one spelling per type, so types from the catalog, from a query's schema and
  from `estore_ops.schema` compare equal when they are the same type;
- `columns(table)`: [(name, canonical type)] in table order, or None when the table is missing;
- `query_columns(sql)`: the columns a SELECT would return, WITHOUT running it (DuckDB: DESCRIBE;
  BigQuery: a dry-run query, which is free);
- `in_place(old, new)`: whether an ALTER changes the type without rewriting the table's data;
- `apply(table, changes)`: the changes that are in place, atomically where the warehouse can;
- `rewrite(table, changes)` / `rewrite_bytes(table)`: the other type changes, by rewriting the
  table (every row is read and written once), and what that reads;
- `drop(table)`: drop a table an earlier version built and this one no longer has.
A type change casts the stored values (`CAST(col AS new)`); nothing else of a row is touched.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import Any

from estore_ops.errors import BackendError

Columns = list[tuple[str, str]]

ADD, TYPE = "add", "type"


@dataclass(frozen=True)
class TableRef:
    schema: str
    name: str
    database: str | None = None  # BigQuery project; DuckDB catalog (ignored: one file)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class ColumnChange:
    kind: str  # ADD or TYPE
    column: str
    new_type: str
    old_type: str | None = None
    in_place: bool = True  # False: only a rewrite of the table does it
    backfill: str | None = None  # ADD: SQL expression for the rows already there (None: NULL)

    def describe(self) -> str:
        if self.kind == ADD:
            fill = f", filled with {self.backfill}" if self.backfill else ""
            return f"add column {self.column} {self.new_type}{fill}"
        how = "" if self.in_place else " (rewrites the table)"
        return f"column {self.column}: {self.old_type} -> {self.new_type}{how}"


@dataclass
class ColumnDiff:
    changes: list[ColumnChange] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # in the table, not wanted: kept (harmless)

    @property
    def in_place(self) -> list[ColumnChange]:
        return [c for c in self.changes if c.in_place]

    @property
    def rewrites(self) -> list[ColumnChange]:
        return [c for c in self.changes if not c.in_place]


class TableEditor(abc.ABC):
    dialect: str
    warehouse: Any  # the Warehouse it edits (its raw_schema names the raw events' schema/dataset)

    @abc.abstractmethod
    def canonical(self, type_name: str) -> str: ...

    @abc.abstractmethod
    def columns(self, table: TableRef) -> Columns | None: ...

    @abc.abstractmethod
    def query_columns(self, sql: str) -> Columns: ...

    @abc.abstractmethod
    def in_place(self, old: str, new: str) -> bool: ...

    @abc.abstractmethod
    def apply(self, table: TableRef, changes: list[ColumnChange]) -> None: ...

    def rewrite(self, table: TableRef, changes: list[ColumnChange]) -> None:
        raise BackendError(f"{type(self).__name__} cannot rewrite {table}.")

    def rewrite_bytes(self, table: TableRef) -> int | None:
        return None

    @abc.abstractmethod
    def drop(self, table: TableRef) -> None:
        """Drop the table if it exists (a relation an earlier version built and this one retired)."""

    def only_raw_tables(self, raw_schema: str) -> bool:
        """True when certainly no relation exists besides the raw schema's (dbt built nothing yet);
        False when some does or when finding out would cost more than compiling the project."""
        return False

    def diff(self, existing: Columns, wanted: Columns, backfill: dict[str, str] | None = None) -> ColumnDiff:
        """What turns `existing` into `wanted`: added columns and changed types (by name, not order)."""
        have = {name.lower(): self.canonical(t) for name, t in existing}
        out = ColumnDiff()
        wanted_names = set()
        for name, want in wanted:
            want = self.canonical(want)
            wanted_names.add(name.lower())
            old = have.get(name.lower())
            if old is None:
                out.changes.append(ColumnChange(ADD, name, want, backfill=(backfill or {}).get(name)))
            elif old != want:
                out.changes.append(ColumnChange(TYPE, name, want, old, in_place=self.in_place(old, want)))
        out.extra = [name for name, _ in existing if name.lower() not in wanted_names]
        return out


def editor_for(warehouse: Any) -> TableEditor:
    """The editor of a warehouse (a `chaos+` wrapper is seen through: schema changes are not faulted)."""
    inner = getattr(warehouse, "inner", None)
    if inner is not None:
        return editor_for(inner)
    from estore_ops.backends.registry import warehouse_backend

    return warehouse_backend(warehouse.url).table_editor(warehouse)  # its declaration names it (backends.registry)


_SPACES = re.compile(r"\s+")


def squash(type_name: str) -> str:
    """Upper case, single spaces, no spaces around commas and parentheses."""
    text = _SPACES.sub(" ", type_name.strip().upper())
    return re.sub(r"\s*([(),<>])\s*", r"\1", text)
