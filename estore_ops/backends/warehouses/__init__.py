"""Warehouses, chosen by URL scheme: duckdb:///path (embedded default) or bigquery://project/dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from estore_ops.errors import ConfigError, MissingExtraError
from estore_ops.backends.warehouses.base import FileOutcome, LoadItem, Warehouse

__all__ = ["FileOutcome", "LoadItem", "Warehouse", "duckdb_path", "open_warehouse", "warehouse_scheme"]


def warehouse_scheme(url: str) -> str:
    return urlparse(url).scheme


def duckdb_path(url: str) -> Path:
    """The database file of duckdb:///relative/path or duckdb:////absolute/path (the SQLAlchemy convention).

    Nothing may follow the path: estore-ops reads no query string (it used to ignore one silently),
    and a '?' inside the path would start one, cutting the path short. Both are refused."""
    if not url.startswith("duckdb:///") or len(url) <= len("duckdb:///"):
        raise ConfigError("is malformed: write duckdb:///relative/path.duckdb or duckdb:////absolute/path.duckdb.")
    rest = url[len("duckdb:///"):]
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


def open_warehouse(url: str, work_dir: Path | None = None, read_only: bool = False, **options: Any) -> Warehouse:
    scheme = warehouse_scheme(url)
    if scheme == "duckdb":
        from estore_ops.backends.warehouses.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(
            url, work_dir=work_dir, read_only=read_only,
            memory_limit=options.get("memory_limit", ""), batch_mb=options.get("batch_mb", 0),
        )
    if scheme.startswith("chaos+"):
        # Fault injection for tests and drills: wraps the warehouse named after "chaos+".
        from estore_ops.testing.chaos_warehouse import ChaosWarehouse

        return ChaosWarehouse.from_url(url, work_dir=work_dir, read_only=read_only, **options)
    if scheme == "bigquery":
        try:
            from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse
        except ImportError:
            raise MissingExtraError(
                f"warehouse = {url} needs the Google Cloud client libraries. "
                "Install them with: pip install 'estore-ops[gcp]'"
            ) from None
        return BigQueryWarehouse.from_url(url, work_dir=work_dir, **options)
    raise ConfigError(f"warehouse = {url}: unknown scheme {scheme!r}; use duckdb:///path.duckdb or bigquery://PROJECT/DATASET.")
