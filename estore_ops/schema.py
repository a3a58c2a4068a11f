"""The one definition of the raw events table, used by every warehouse and the header check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    duckdb_type: str
    bigquery_type: str
    description: str


# Columns of the landing CSV files, in file order (REES46 layout).
SOURCE_COLUMNS: tuple[Column, ...] = (
    Column("event_time", "TIMESTAMPTZ", "TIMESTAMP", "When the event happened (source text like '2019-10-01 00:00:00 UTC')."),
    Column("event_type", "VARCHAR", "STRING", "view, cart, remove_from_cart or purchase."),
    Column("product_id", "BIGINT", "INT64", "Product id."),
    Column("category_id", "BIGINT", "INT64", "Category id (about 2.05e18)."),
    Column("category_code", "VARCHAR", "STRING", "Dotted category path, often empty."),
    Column("brand", "VARCHAR", "STRING", "Brand, often empty."),
    Column("price", "DOUBLE", "FLOAT64", "Unit price."),
    Column("user_id", "BIGINT", "INT64", "User id."),
    Column("user_session", "VARCHAR", "STRING", "Session id (UUID)."),
)

# Lineage columns added by the loader: they make a reload replace the rows of a file.
LINEAGE_COLUMNS: tuple[Column, ...] = (
    Column("_source_file", "VARCHAR", "STRING", "Object name the row was loaded from."),
    Column("_source_generation", "BIGINT", "INT64", "Generation of that object when it was loaded."),
    Column("_loaded_at", "TIMESTAMPTZ", "TIMESTAMP", "When the load committed."),
)

ALL_COLUMNS: tuple[Column, ...] = SOURCE_COLUMNS + LINEAGE_COLUMNS
SOURCE_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in SOURCE_COLUMNS)

RAW_SCHEMA = "raw"
RAW_TABLE = "events"


def duckdb_create_table_sql(schema: str = RAW_SCHEMA, table: str = RAW_TABLE) -> str:
    cols = ",\n  ".join(f"{c.name} {c.duckdb_type}" for c in ALL_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS {schema}.{table} (\n  {cols}\n)"


def duckdb_csv_columns(names: tuple[str, ...] = SOURCE_COLUMN_NAMES, read_as: dict[str, str] | None = None) -> str:
    """The `columns=` struct for DuckDB's read_csv: the named source columns, in file order, typed
    (`read_as` overrides the type a column is read as)."""
    types = {c.name: c.duckdb_type for c in SOURCE_COLUMNS} | (read_as or {})
    return "{" + ", ".join(f"'{name}': '{types[name]}'" for name in names) + "}"
