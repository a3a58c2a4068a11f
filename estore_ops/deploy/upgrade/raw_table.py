"""The raw events table of an earlier version, brought to the columns of `estore_ops.schema`.

Files are never reloaded for it: a new column is added (NULL, or the value of `RAW_BACKFILL` for
the rows already there), a changed type is changed in place. On BigQuery a type change that is not
a coercion (see tables_bigquery) and a backfill (an UPDATE) read the whole table, so they run only
with `estore-ops upgrade --allow-rewrite`, after the dry run said how much they read.
Columns the table has and this version does not define are kept (the loader names its columns).
"""

from __future__ import annotations

from estore_ops import schema
from estore_ops.output import human_size
from estore_ops.deploy.upgrade.framework import Action, Plan
from estore_ops.deploy.upgrade.tables import TableEditor, TableRef

# A column added to raw events that rows loaded by an earlier version can be given a value, by
# dialect: {"column": {"duckdb": "SQL expression", "bigquery": "SQL expression"}}. Without an entry
# the rows loaded before get NULL.
RAW_BACKFILL: dict[str, dict[str, str]] = {}


def wanted_columns(dialect: str) -> list[tuple[str, str]]:
    return [(c.name, c.duckdb_type if dialect == "duckdb" else c.bigquery_type) for c in schema.ALL_COLUMNS]


def raw_table_ref(editor: TableEditor) -> TableRef:
    return TableRef(editor.warehouse.raw_schema, schema.RAW_TABLE)  # BigQuery: the warehouse's dataset


def plan_raw_table(editor: TableEditor, allow_rewrite: bool) -> Plan:
    table = raw_table_ref(editor)
    plan = Plan()
    existing = editor.columns(table)
    if existing is None:
        plan.found.append(f"{table} does not exist yet: the first load creates it")
        return plan
    backfill = {name: exprs[editor.dialect] for name, exprs in RAW_BACKFILL.items() if editor.dialect in exprs}
    diff = editor.diff(existing, wanted_columns(editor.dialect), backfill)
    if not diff.changes:
        plan.found.append(f"{table} has the columns of this version")
    for change in diff.changes:
        plan.found.append(f"{table}: {change.describe()}")
    for name in diff.extra:
        plan.found.append(f"{table}: column {name} is no longer written by this version (kept, NULL in new rows)")
    # On BigQuery a backfill is an UPDATE of every row: a rewrite in cost.
    costly = [c for c in diff.changes if not c.in_place or (c.backfill and editor.dialect == "bigquery")]
    cheap = [c for c in diff.changes if c not in costly]
    if cheap:
        plan.actions.append(Action(
            f"{table}: " + "; ".join(c.describe() for c in cheap) + " (in place, no file reloaded)",
            lambda: editor.apply(table, cheap),
        ))
    if costly:
        size = editor.rewrite_bytes(table)
        reads = f"reads {human_size(size)} once" if size is not None else "reads the whole table once"
        what = "; ".join(c.describe() for c in costly)
        if allow_rewrite:
            in_place_adds = [c for c in costly if c.in_place]
            rewrites = [c for c in costly if not c.in_place]

            def run() -> None:
                if in_place_adds:
                    editor.apply(table, in_place_adds)
                if rewrites:
                    editor.rewrite(table, rewrites)

            plan.actions.append(Action(f"{table}: {what} ({reads}; no file reloaded)", run))
        else:
            plan.left.append(
                f"{table}: {what} cannot be done in place ({reads}). Run `estore-ops upgrade --dry-run` to review it, "
                "then `estore-ops upgrade --allow-rewrite`."
            )
    return plan
