"""DuckDB as the warehouse: `duckdb:///relative/path.duckdb` or `duckdb:////absolute/path.duckdb`.

The declaration of the embedded warehouse (see estore_ops.backends.registry); the warehouse itself
is estore_ops.backends.warehouses.duckdb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from estore_ops.backends.registry import WarehouseBackend
from estore_ops.backends.warehouses.base import Warehouse
from estore_ops.errors import ConfigError, EnvironmentFaultError

PREFIX = "duckdb:///"


def duckdb_path(url: str) -> Path:
    """The database file of duckdb:///relative/path or duckdb:////absolute/path (the SQLAlchemy convention).

    Nothing may follow the path: estore-ops reads no query string (it used to ignore one silently),
    and a '?' inside the path would start one, cutting the path short. Both are refused."""
    if not url.startswith(PREFIX) or len(url) <= len(PREFIX):
        raise ConfigError("is malformed: write duckdb:///relative/path.duckdb or duckdb:////absolute/path.duckdb.")
    rest = url[len(PREFIX):]
    if "?" in rest:
        path, _, query = rest.partition("?")
        raise ConfigError(
            f"has a '?', where a URL's query string starts ({query!r}): estore-ops reads no parameters from a "
            f"duckdb:// URL, and a '?' that belongs to the path would cut it at {path!r}. Remove the query "
            "(memory and batch sizes are the load_memory_limit and load_batch_mb settings), or keep the "
            "warehouse at a path without '?' (a relative path is resolved from the current folder or the "
            "config file's folder)."
        )
    return Path(rest)


def duckdb_path_from_url(url: str) -> Path:
    """duckdb_path, with the setting named in the error."""
    try:
        return duckdb_path(url)
    except ConfigError as exc:
        raise ConfigError(f"warehouse = {url!r} {exc}") from None


class DuckDBBackend(WarehouseBackend):
    schemes = ("duckdb",)
    examples = ("duckdb:///path.duckdb",)
    implementation = "estore_ops.backends.warehouses.duckdb:DuckDBWarehouse"
    dbt_type = "duckdb"
    table_editor_class = "estore_ops.deploy.upgrade.tables_duckdb:DuckDBTableEditor"

    def check(self, url: str) -> None:
        duckdb_path(url)

    def anchor(self, url: str, base: Path) -> str:
        if url.startswith(PREFIX) and not url.startswith(PREFIX + "/"):
            rel_path, _, query = url[len(PREFIX):].partition("?")
            if rel_path and not Path(rel_path).is_absolute():
                return PREFIX + str((base / rel_path).resolve()) + (f"?{query}" if query else "")
            return url
        return super().anchor(url, base)

    def open(self, url: str, work_dir: Path | None = None, read_only: bool = False, **options: Any) -> Warehouse:
        warehouse_class = self.load_implementation("warehouse", url)
        return warehouse_class(
            url, work_dir=work_dir, read_only=read_only,
            memory_limit=options.get("memory_limit", ""), batch_mb=options.get("batch_mb", 0),
        )

    def local_file(self, url: str) -> Path | None:
        return duckdb_path_from_url(url)

    def environment_fault(self, message: str, url: str) -> EnvironmentFaultError | None:
        from estore_ops.backends import environment

        return environment.from_warehouse_message(message, duckdb_path(url))
