"""Warehouses, chosen by URL scheme: duckdb:///path (embedded default) or bigquery://project/dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from estore_ops.errors import ConfigError, MissingExtraError
from estore_ops.warehouses.base import FileOutcome, LoadItem, Warehouse

__all__ = ["FileOutcome", "LoadItem", "Warehouse", "open_warehouse", "warehouse_scheme"]


def warehouse_scheme(url: str) -> str:
    return urlparse(url).scheme


def open_warehouse(url: str, work_dir: Path | None = None, read_only: bool = False, **options: Any) -> Warehouse:
    scheme = warehouse_scheme(url)
    if scheme == "duckdb":
        from estore_ops.warehouses.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(
            url, work_dir=work_dir, read_only=read_only,
            memory_limit=options.get("memory_limit", ""), batch_mb=options.get("batch_mb", 0),
        )
    if scheme.startswith("chaos+"):
        # Fault injection for tests and drills: wraps the warehouse named after "chaos+".
        from estore_ops.warehouses.chaos import ChaosWarehouse

        return ChaosWarehouse.from_url(url, work_dir=work_dir, read_only=read_only, **options)
    if scheme == "bigquery":
        try:
            from estore_ops.warehouses.bigquery import BigQueryWarehouse
        except ImportError:
            raise MissingExtraError(
                f"warehouse = {url} needs the Google Cloud client libraries. "
                "Install them with: pip install 'estore-ops[gcp]'"
            ) from None
        return BigQueryWarehouse.from_url(url, work_dir=work_dir, **options)
    raise ConfigError(f"warehouse = {url}: unknown scheme {scheme!r}; use duckdb:///path.duckdb or bigquery://PROJECT/DATASET.")
