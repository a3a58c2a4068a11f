"""Table columns on DuckDB: the catalog, DESCRIBE, and ALTER TABLE in one transaction.

Every type change is done with ALTER COLUMN ... SET DATA TYPE ... USING CAST: DuckDB rewrites
that one column of the local file, inside the transaction, so there is nothing to pay for and
nothing to ask: all changes count as in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estore_ops.errors import BackendError
from estore_ops.deploy.upgrade.tables import ADD, ColumnChange, Columns, TableEditor, TableRef, squash

if TYPE_CHECKING:
    from estore_ops.backends.warehouses.duckdb import DuckDBWarehouse


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBTableEditor(TableEditor):
    dialect = "duckdb"

    def __init__(self, warehouse: DuckDBWarehouse) -> None:
        self.warehouse = warehouse
        self._canonical: dict[str, str] = {}

    def canonical(self, type_name: str) -> str:
        key = squash(type_name)
        if key not in self._canonical:
            # DuckDB's own name for the type: TIMESTAMPTZ -> TIMESTAMP WITH TIME ZONE, NUMERIC -> DECIMAL(18,3)...
            try:
                found = self.warehouse.con.execute(f"SELECT typeof(CAST(NULL AS {type_name}))").fetchone()
                self._canonical[key] = squash(found[0]) if found else key
            except Exception:  # noqa: BLE001 - an unknown spelling compares as written
                self._canonical[key] = key
        return self._canonical[key]

    def table_sql(self, table: TableRef) -> str:
        return f"{quote(table.schema)}.{quote(table.name)}"

    def columns(self, table: TableRef) -> Columns | None:
        if not self.warehouse.path.exists():
            return None  # no database file yet: opening it here would create it
        rows = self.warehouse.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [table.schema, table.name],
        ).fetchall()
        return [(name, squash(kind)) for name, kind in rows] or None

    def query_columns(self, sql: str) -> Columns:
        body = sql.strip().rstrip(";")
        rows = self.warehouse.con.execute(f"DESCRIBE SELECT * FROM (\n{body}\n) AS estore_upgrade_probe").fetchall()
        return [(row[0], squash(row[1])) for row in rows]

    def in_place(self, old: str, new: str) -> bool:
        return True

    def only_raw_tables(self, raw_schema: str) -> bool:
        if not self.warehouse.path.exists():
            return True
        found = self.warehouse.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN (?, 'information_schema', 'pg_catalog')",
            [raw_schema],
        ).fetchone()
        return not (found and found[0])

    def drop(self, table: TableRef) -> None:
        self.warehouse.con.execute(f"DROP TABLE IF EXISTS {self.table_sql(table)}")

    def apply(self, table: TableRef, changes: list[ColumnChange]) -> None:
        import duckdb

        con = self.warehouse.con
        target = self.table_sql(table)
        con.execute("BEGIN TRANSACTION")
        try:
            for change in changes:
                column = quote(change.column)
                if change.kind == ADD:
                    con.execute(f"ALTER TABLE {target} ADD COLUMN {column} {change.new_type}")
                    if change.backfill:
                        con.execute(f"UPDATE {target} SET {column} = {change.backfill}")
                else:
                    con.execute(
                        f"ALTER TABLE {target} ALTER COLUMN {column} SET DATA TYPE {change.new_type} "
                        f"USING CAST({column} AS {change.new_type})"
                    )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            first = str(exc).splitlines()[0]
            raise BackendError(
                f"Could not change {table} ({'; '.join(c.describe() for c in changes)}): {first}. Nothing was changed."
            ) from None
