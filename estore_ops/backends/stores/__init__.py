"""Object stores, chosen by URL scheme (estore_ops.backends.registry): a plain path or file:// (local
folder), gs:// (Cloud Storage)."""

from __future__ import annotations

from typing import Any

from estore_ops.backends.registry import store_backend
from estore_ops.backends.stores.base import CSV_SUFFIXES, ObjectInfo, ObjectStore, is_csv_name

__all__ = ["CSV_SUFFIXES", "ObjectInfo", "ObjectStore", "is_csv_name", "open_store"]


def open_store(url: str, setting: str = "location", **options: Any) -> ObjectStore:
    """Open the store a URL names; `setting` names the configuration key for error messages.

    `options`: `keyfile` (Google credentials for gs://; other stores ignore it)."""
    return store_backend(url, f"{setting} = {url}").open(url, setting, **options)
