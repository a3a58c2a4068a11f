"""Object stores, chosen by URL scheme: a plain path or file:// (local folder), gs:// (Cloud Storage)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from estore_ops.errors import ConfigError, MissingExtraError
from estore_ops.stores.base import CSV_SUFFIXES, ObjectInfo, ObjectStore, is_csv_name

__all__ = ["CSV_SUFFIXES", "ObjectInfo", "ObjectStore", "is_csv_name", "open_store", "store_scheme"]


def store_scheme(url: str) -> str:
    scheme = urlparse(url).scheme
    return scheme if len(scheme) > 1 else "file"  # "C:" style drive letters are not schemes


def open_store(url: str, setting: str = "location", **options: Any) -> ObjectStore:
    """Open the store a URL names; `setting` names the configuration key for error messages.

    `options`: `keyfile` (Google credentials for gs://; other stores ignore it)."""
    scheme = store_scheme(url)
    if scheme == "file":
        from estore_ops.stores.local import LocalFolderStore

        path = urlparse(url).path if url.startswith("file://") else url
        return LocalFolderStore(path)
    if scheme.startswith("chaos+"):
        # Fault injection for tests and drills: wraps the store named after "chaos+".
        from estore_ops.stores.chaos import ChaosStore

        return ChaosStore.from_url(url, setting, **options)
    if scheme == "gs":
        try:
            from estore_ops.stores.gcs import GCSStore
        except ImportError:
            raise MissingExtraError(
                f"{setting} = {url} needs the Google Cloud client libraries. "
                "Install them with: pip install 'estore-ops[gcp]'"
            ) from None
        return GCSStore.from_url(url, keyfile=options.get("keyfile") or None)
    raise ConfigError(
        f"{setting} = {url}: unknown scheme {scheme!r}. Use a folder path, file:///path or gs://bucket/prefix."
    )
