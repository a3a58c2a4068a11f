"""Object stores, chosen by URL scheme: a plain path or file:// (local folder), gs:// (Cloud Storage)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from estore_ops.errors import ConfigError, MissingExtraError
from estore_ops.backends.stores.base import CSV_SUFFIXES, ObjectInfo, ObjectStore, is_csv_name

__all__ = ["CSV_SUFFIXES", "ObjectInfo", "ObjectStore", "folder_path", "is_csv_name", "open_store", "store_scheme"]


def store_scheme(url: str) -> str:
    scheme = urlparse(url).scheme
    return scheme if len(scheme) > 1 else "file"  # "C:" style drive letters are not schemes


def folder_path(url: str) -> str:
    """The folder a plain path or a file:// URL names; ConfigError (without the setting's name) when
    the URL could be read two ways.

    file:///abs/path and file://localhost/abs/path are accepted. Refused, with the right form:
    file://relative/x (the "relative" would be a host name, and the path /x at the root), file:x
    and file:/x (not the file:/// form), and a file URL with '?', '#' or '%' (a query, a fragment and
    percent escapes that estore-ops would otherwise have to guess about: write the plain path).
    """
    if not url.lower().startswith("file:"):
        return url
    if not url.startswith("file://"):
        raise ConfigError(f"is not a file:/// URL: write file:///absolute/path (three slashes) or the plain path {url[5:].lstrip('/') or '.'}.")
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        plain = f"{parsed.netloc}{parsed.path}"
        raise ConfigError(
            f"names the host {parsed.netloc!r}, which a folder cannot have: for the folder {plain!r} relative to the "
            f"current folder write the plain path {plain}, and for an absolute one write file:///{plain}."
        )
    if any(ch in url for ch in "?#%"):
        raise ConfigError(
            f"contains '?', '#' or '%', which in a URL start a query, a fragment or a percent escape: write the "
            f"plain path {url[len('file://'):].removeprefix('localhost')} instead."
        )
    return parsed.path


def open_store(url: str, setting: str = "location", **options: Any) -> ObjectStore:
    """Open the store a URL names; `setting` names the configuration key for error messages.

    `options`: `keyfile` (Google credentials for gs://; other stores ignore it)."""
    scheme = store_scheme(url)
    if scheme == "file":
        from estore_ops.backends.stores.local import LocalFolderStore

        try:
            path = folder_path(url)
        except ConfigError as exc:
            raise ConfigError(f"{setting} = {url!r} {exc}") from None
        return LocalFolderStore(path, role=f"the {setting} folder")
    if scheme.startswith("chaos+"):
        # Fault injection for tests and drills: wraps the store named after "chaos+".
        from estore_ops.testing.chaos_store import ChaosStore

        return ChaosStore.from_url(url, setting, **options)
    if scheme == "gs":
        try:
            from estore_ops.backends.stores.gcs import GCSStore
        except ImportError:
            raise MissingExtraError(
                f"{setting} = {url} needs the Google Cloud client libraries. "
                "Install them with: pip install 'estore-ops[gcp]'"
            ) from None
        return GCSStore.from_url(url, keyfile=options.get("keyfile") or None)
    raise ConfigError(
        f"{setting} = {url}: unknown scheme {scheme!r}. Use a folder path, file:///path or gs://bucket/prefix."
    )
