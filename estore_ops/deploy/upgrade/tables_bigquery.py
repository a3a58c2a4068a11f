"""Table columns on BigQuery: table metadata, dry-run schemas, ALTER TABLE DDL, and rewrites.

What BigQuery changes in place (DDL statements are free and read no data;
https://cloud.google.com/bigquery/docs/managing-table-schemas):
- adding a NULLABLE column: `ALTER TABLE ... ADD COLUMN`;
- changing a column's type to one it is *coercible* to: `ALTER TABLE ... ALTER COLUMN ... SET DATA
  TYPE`. The coercions are listed in the conversion rules
  (https://cloud.google.com/bigquery/docs/reference/standard-sql/conversion_rules, "Coerce to"):
  INT64 -> NUMERIC, BIGNUMERIC, FLOAT64; NUMERIC -> BIGNUMERIC, FLOAT64; BIGNUMERIC -> FLOAT64;
  DATE -> DATETIME; and a parameterized type may be widened (NUMERIC(10,2) -> NUMERIC(12,2),
  STRING(10) -> STRING), never narrowed.
Everything else (FLOAT64 -> NUMERIC, BOOL -> INT64, STRING -> anything, TIMESTAMP -> DATE, ...)
needs the data rewritten: a query job that reads every row once and overwrites the table, keeping
its partitioning, clustering and column descriptions. That scans the table, so the upgrade asks for
it explicitly and says how many bytes it reads (a dry run).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from estore_ops.errors import BackendError
from estore_ops.deploy.upgrade.tables import ADD, ColumnChange, Columns, TableEditor, TableRef, squash

if TYPE_CHECKING:
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

# Legacy (API) names -> GoogleSQL names.
_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT", "DECIMAL": "NUMERIC",
            "BIGDECIMAL": "BIGNUMERIC"}
COERCIBLE: dict[str, frozenset[str]] = {
    "INT64": frozenset({"NUMERIC", "BIGNUMERIC", "FLOAT64"}),
    "NUMERIC": frozenset({"BIGNUMERIC", "FLOAT64"}),
    "BIGNUMERIC": frozenset({"FLOAT64"}),
    "DATE": frozenset({"DATETIME"}),
}
_PARAMS = re.compile(r"^([A-Z0-9_]+)(?:\((\d+)(?:,(\d+))?\))?$")


def canonical_type(type_name: str) -> str:
    text = squash(type_name)
    match = _PARAMS.match(text)
    if not match:
        return text
    base = _ALIASES.get(match.group(1), match.group(1))
    params = ",".join(p for p in match.groups()[1:] if p is not None)
    return f"{base}({params})" if params else base


def _split(type_name: str) -> tuple[str, tuple[int, ...]]:
    match = _PARAMS.match(type_name)
    if not match:
        return type_name, ()
    return match.group(1), tuple(int(p) for p in match.groups()[1:] if p is not None)


def coercible_in_place(old: str, new: str) -> bool:
    """Whether ALTER COLUMN SET DATA TYPE takes `old` to `new` without rewriting data (see module doc)."""
    old, new = canonical_type(old), canonical_type(new)
    old_base, old_params = _split(old)
    new_base, new_params = _split(new)
    if old_base == new_base:
        if not new_params:
            return True  # parameterized -> unparameterized (STRING(10) -> STRING, NUMERIC(10,2) -> NUMERIC)
        if not old_params:
            return False  # a limit added: could refuse stored values
        if old_base in ("STRING", "BYTES"):
            return new_params[0] >= old_params[0]
        if old_base in ("NUMERIC", "BIGNUMERIC"):
            old_scale = old_params[1] if len(old_params) > 1 else 0
            new_scale = new_params[1] if len(new_params) > 1 else 0
            return new_scale >= old_scale and new_params[0] - new_scale >= old_params[0] - old_scale
        return False
    return not new_params and new_base in COERCIBLE.get(old_base, frozenset())


def _quote(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


class BigQueryTableEditor(TableEditor):
    dialect = "bigquery"

    def __init__(self, warehouse: BigQueryWarehouse) -> None:
        self.warehouse = warehouse

    @property
    def client(self) -> Any:
        return self.warehouse.client

    def canonical(self, type_name: str) -> str:
        return canonical_type(type_name)

    def table_id(self, table: TableRef) -> str:
        return f"{table.database or self.warehouse.project}.{table.schema}.{table.name}"

    def _call(self, what: str, fn: Any) -> Any:
        from google.api_core import exceptions as gexc

        try:
            return fn()
        except gexc.GoogleAPICallError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BackendError(f"BigQuery refused to {what}: {first}") from None

    @staticmethod
    def _field_type(f: Any) -> str:
        kind = canonical_type(f.field_type)
        if getattr(f, "precision", None):
            kind = f"{kind}({f.precision}" + (f",{f.scale})" if f.scale is not None else ")")
        elif getattr(f, "max_length", None):
            kind = f"{kind}({f.max_length})"
        if f.mode == "REPEATED":
            kind = f"ARRAY<{kind}>"
        return kind

    def columns(self, table: TableRef) -> Columns | None:
        from google.api_core import exceptions as gexc

        try:
            found = self.client.get_table(self.table_id(table))
        except gexc.NotFound:
            return None
        except gexc.GoogleAPICallError as exc:
            raise BackendError(f"BigQuery refused to read {self.table_id(table)}: {str(exc).splitlines()[0]}") from None
        return [(f.name, self._field_type(f)) for f in found.schema]

    def query_columns(self, sql: str) -> Columns:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        job = self._call("dry-run a query", lambda: self.client.query(sql, job_config=config))
        return [(f.name, self._field_type(f)) for f in (job.schema or [])]

    def in_place(self, old: str, new: str) -> bool:
        return coercible_in_place(old, new)

    def apply(self, table: TableRef, changes: list[ColumnChange]) -> None:
        clauses = []
        for change in changes:
            if change.kind == ADD:
                clauses.append(f"ADD COLUMN IF NOT EXISTS {_quote(change.column)} {change.new_type}")
            else:
                clauses.append(f"ALTER COLUMN {_quote(change.column)} SET DATA TYPE {change.new_type}")
        if clauses:
            # One DDL statement: all changes or none.
            self._call(f"alter {table}", lambda: self.warehouse.query(f"ALTER TABLE {_quote(self.table_id(table))} {', '.join(clauses)}"))
        for change in changes:
            if change.kind == ADD and change.backfill:
                # DML: reads the table (a rewrite in cost terms: only with the user's consent, see the raw step).
                self._call(f"fill {change.column}", lambda c=change: self.warehouse.query(
                    f"UPDATE {_quote(self.table_id(table))} SET {_quote(c.column)} = {c.backfill} WHERE TRUE"))

    def drop(self, table: TableRef) -> None:
        self._call(f"drop {self.table_id(table)}", lambda: self.client.delete_table(self.table_id(table), not_found_ok=True))

    def rewrite_sql(self, table: TableRef, changes: list[ColumnChange]) -> str:
        casts = ", ".join(f"CAST({_quote(c.column)} AS {c.new_type}) AS {_quote(c.column)}" for c in changes)
        return f"SELECT * REPLACE ({casts}) FROM {_quote(self.table_id(table))}"

    def rewrite_bytes(self, table: TableRef) -> int | None:
        found = self._call(f"read {self.table_id(table)}", lambda: self.client.get_table(self.table_id(table)))
        return int(found.num_bytes or 0)

    def rewrite(self, table: TableRef, changes: list[ColumnChange]) -> None:
        """Overwrite the table with its rows cast to the new types, in one query job (atomic)."""
        from google.cloud import bigquery

        table_id = self.table_id(table)
        before = self._call(f"read {table_id}", lambda: self.client.get_table(table_id))
        config = bigquery.QueryJobConfig(
            destination=table_id, write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            time_partitioning=before.time_partitioning, range_partitioning=before.range_partitioning,
            clustering_fields=before.clustering_fields,
        )
        job = self._call(f"rewrite {table_id}", lambda: self.client.query(self.rewrite_sql(table, changes), job_config=config))
        self._call(f"rewrite {table_id}", lambda: job.result())
        # The query's schema has no descriptions: put the old ones back.
        after = self._call(f"read {table_id}", lambda: self.client.get_table(table_id))
        described = {f.name: f.description for f in before.schema if f.description}
        if described:
            after.schema = [_with_description(f, described.get(f.name)) for f in after.schema]
            self._call(f"update {table_id}", lambda: self.client.update_table(after, ["schema"]))


def _with_description(field: Any, description: str | None) -> Any:
    from google.cloud import bigquery

    if not description:
        return field
    data = field.to_api_repr()
    data["description"] = description
    return bigquery.SchemaField.from_api_repr(data)
