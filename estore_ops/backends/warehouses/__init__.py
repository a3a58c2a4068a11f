"""Warehouses, chosen by URL scheme (estore_ops.backends.registry): duckdb:///path (embedded default)
or bigquery://project/dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from estore_ops.backends.registry import warehouse_backend
from estore_ops.backends.warehouses.base import FileOutcome, LoadItem, Warehouse

__all__ = ["FileOutcome", "LoadItem", "Warehouse", "open_warehouse"]


def open_warehouse(url: str, work_dir: Path | None = None, read_only: bool = False, **options: Any) -> Warehouse:
    return warehouse_backend(url, f"warehouse = {url}").open(url, work_dir=work_dir, read_only=read_only, **options)
