"""Cloud Storage as a store: `gs://BUCKET` or `gs://BUCKET/prefix`.

The declaration of the Cloud Storage backend (see estore_ops.backends.registry). No Google import
here: the store itself, estore_ops.backends.stores.gcs, needs the `gcp` extra.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from estore_ops.backends.registry import StoreBackend
from estore_ops.backends.stores.base import ObjectStore
from estore_ops.errors import ConfigError


class GCSBackend(StoreBackend):
    schemes = ("gs",)
    examples = ("gs://BUCKET/prefix",)
    implementation = "estore_ops.backends.stores.gcs:GCSStore"
    extra = "gcp"
    extra_libraries = "the Google Cloud client libraries"

    def check(self, url: str) -> None:
        if not urlparse(url).netloc:
            raise ConfigError("is malformed: write gs://BUCKET or gs://BUCKET/prefix.")

    def open(self, url: str, setting: str, **options: Any) -> ObjectStore:
        store_class = self.load_implementation(setting, url)
        return store_class.from_url(url, keyfile=options.get("keyfile") or None)

    def arrivals_by_notifications(self, url: str) -> bool:
        return True  # bucket notifications through Pub/Sub (estore_ops.ingest.events.pubsub)
