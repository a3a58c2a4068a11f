"""A local folder as a store: a plain path, file:///abs/path or file://localhost/abs/path.

The declaration of the local folder backend (see estore_ops.backends.registry); the store itself
is estore_ops.backends.stores.local.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from estore_ops.backends.registry import StoreBackend
from estore_ops.backends.stores.base import ObjectStore
from estore_ops.errors import ConfigError


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


class LocalFolderBackend(StoreBackend):
    schemes = ("", "file")
    examples = ("a folder path", "file:///path")
    implementation = "estore_ops.backends.stores.local:LocalFolderStore"

    def check(self, url: str) -> None:
        folder_path(url)

    def open(self, url: str, setting: str, **options: Any) -> ObjectStore:
        store_class = self.load_implementation(setting, url)
        try:
            path = folder_path(url)
        except ConfigError as exc:
            raise ConfigError(f"{setting} = {url!r} {exc}") from None
        return store_class(path, role=f"the {setting} folder")
