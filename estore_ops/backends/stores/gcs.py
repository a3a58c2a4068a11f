"""Cloud Storage as an object store: `gs://BUCKET[/PREFIX]`, names relative to the prefix.

- Auth: the `keyfile` setting (a service-account key) or Application Default Credentials (the VM's
  service account, `gcloud auth application-default login`, GOOGLE_APPLICATION_CREDENTIALS): the
  same credentials as the BigQuery warehouse and dbt (estore_ops.backends.google_auth). When
  STORAGE_EMULATOR_HOST is set (tests, fake-gcs-server) the client uses anonymous credentials.
- Generations are the object generations GCS keeps (microseconds, growing with each write).
- Conditional writes are one request (`upload_from_string` with `ifGenerationMatch`, multipart
  upload for small bodies): a 412 becomes PreconditionFailedError. This is the compare-and-swap
  the state document relies on.
- Every request goes through the one retry policy (estore_ops.backends.retry: 408, 429, 5xx and dropped
  connections, as Google's retry strategy page lists them), with the client library's own retries
  switched off so the bounds hold, and a timeout per request. What is still failing after that is a
  TransientBackendError; everything else is translated at this edge into a BackendError that says
  what to fix (missing bucket, missing role, missing credentials).
- Reads stream in ranged requests pinned to the generation stat'ed first; a reset in the middle
  resumes at the last byte received (stores.base.ResumingReader).
- A retried write or delete whose first answer was lost finds its own effect (the same bytes; the
  object gone) and succeeds.
- Names whose segments start with "." are not listed (like the local folder store, which hides
  its lock file): probes and temporary objects never look like landing files.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import BinaryIO, TypeVar
from urllib.parse import urlparse

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import storage

from estore_ops.backends import retry
from estore_ops.errors import (
    BackendError,
    ConfigError,
    ObjectNotFoundError,
    PreconditionFailedError,
    TransientBackendError,
    UnsafeNameError,
)
from estore_ops.backends.google_auth import ADC_HINT, credentials
from estore_ops.backends.stores.base import ObjectInfo, ObjectStore, ResumingReader

T = TypeVar("T")

READ_ROLE = "roles/storage.objectViewer"
# Terraform grants it with an IAM condition on the state/ prefix: the landing files stay read-only.
WRITE_ROLE = "roles/storage.objectUser (on the state prefix)"


def _md5_hex(b64: str | None) -> str | None:
    return base64.b64decode(b64).hex() if b64 else None


def _checksum(blob: storage.Blob) -> str | None:
    if blob.md5_hash:  # composite objects have none
        return f"md5:{_md5_hex(blob.md5_hash)}"
    if blob.crc32c:
        return f"crc32c:{base64.b64decode(blob.crc32c).hex()}"
    return None


class GCSStore(ObjectStore):
    """Objects under gs://bucket/prefix; `name` is always relative to the prefix."""

    request_timeout: tuple[float, float] = (10.0, 120.0)  # connect, read: per request
    download_chunk_size = 8 << 20

    def __init__(
        self, bucket: str, prefix: str = "", client: storage.Client | None = None, project: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError("A gs:// location needs a bucket: gs://BUCKET or gs://BUCKET/prefix.")
        self.bucket_name = bucket
        prefix = prefix.strip("/")
        if prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
            raise ConfigError(f"gs://{bucket}/{prefix}: the prefix must not contain empty, '.' or '..' segments.")
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
        self._client = client
        self._project = project
        self.keyfile = keyfile or None
        self._bucket_known = False

    @classmethod
    def from_url(cls, url: str, client: storage.Client | None = None, keyfile: str | None = None) -> GCSStore:
        parsed = urlparse(url)
        if parsed.scheme != "gs" or not parsed.netloc:
            raise ConfigError(f"{url} is not a Cloud Storage location: write gs://BUCKET or gs://BUCKET/prefix.")
        return cls(parsed.netloc, parsed.path, client=client, keyfile=keyfile)

    # -- client ------------------------------------------------------------------------------
    @property
    def client(self) -> storage.Client:
        if self._client is None:
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                project = self._project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "test-project"
                self._client = storage.Client(project=project, credentials=AnonymousCredentials())
            else:
                creds, project = credentials(self.keyfile, self.url)
                self._client = storage.Client(project=self._project or project, credentials=creds)
        return self._client

    @property
    def bucket(self) -> storage.Bucket:
        return self.client.bucket(self.bucket_name)

    # -- names -------------------------------------------------------------------------------
    def _check_name(self, name: str) -> str:
        if not name or name.startswith("/") or any(ch in name for ch in "\\\x00\r\n"):
            raise UnsafeNameError(f"Object name {name!r} is not a relative name inside {self.url}.")
        if any(p in ("", ".", "..") for p in name.split("/")):
            raise UnsafeNameError(f"Object name {name!r} escapes or is not normal inside {self.url}.")
        full = self.prefix + name
        if len(full.encode("utf-8")) > 1024:
            raise UnsafeNameError(f"Object name {name!r} is longer than Cloud Storage allows (1024 bytes).")
        return full

    def _relative(self, full: str) -> str:
        return full[len(self.prefix):]

    def uri(self, name: str = "") -> str:
        if not name:
            return self.url
        return f"gs://{self.bucket_name}/{self.prefix}{name}"

    def _info(self, blob: storage.Blob, name: str | None = None) -> ObjectInfo:
        updated = blob.updated or blob.time_created or datetime.now(timezone.utc)
        return ObjectInfo(
            name=name if name is not None else self._relative(blob.name),
            size=int(blob.size or 0),
            updated=updated,
            generation=int(blob.generation or 0),
            checksum=_checksum(blob),
        )

    # -- the one retry/translate path ----------------------------------------------------------
    def _call(self, op: str, name: str | None, fn: Callable[[], T], writes: bool = False) -> T:
        where = self.uri(name) if name else self.url
        try:
            return retry.POLICY.call(fn, what=f"Cloud Storage {op} {where}")
        except TransientBackendError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated below, or re-raised untouched
            raise self._translate(exc, op, name, writes) from None

    def _translate(self, exc: Exception, op: str, name: str | None, writes: bool) -> Exception:
        where = self.uri(name) if name else self.url
        if isinstance(exc, (BackendError, ConfigError)):
            return exc
        if isinstance(exc, gexc.PreconditionFailed):
            return PreconditionFailedError(f"{where}: the object changed (precondition failed on {op}); another writer changed it.")
        if isinstance(exc, gexc.NotFound):
            if name is not None and self._bucket_exists_or_unknown():
                return ObjectNotFoundError(f"{where} does not exist.")
            return BackendError(
                f"The bucket gs://{self.bucket_name} does not exist (or this project cannot see it). "
                f"Create it (`terraform apply` in terraform/, or `gcloud storage buckets create gs://{self.bucket_name}`) "
                "or fix the location setting."
            )
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
            role = WRITE_ROLE if writes else READ_ROLE
            who = self._principal()
            condition = ""
            if writes and self.prefix:
                # Writes are granted on this store's prefix only, never on the landing files.
                condition = (f" --condition='title=estore-ops {self.prefix.rstrip('/')},expression=resource.name.startsWith("
                             f"\"projects/_/buckets/{self.bucket_name}/objects/{self.prefix}\")'")
            return BackendError(
                f"Access denied to gs://{self.bucket_name} while trying to {op} {where}: "
                f"{who} lacks {role} on the bucket. Grant it, e.g. "
                f"`gcloud storage buckets add-iam-policy-binding gs://{self.bucket_name} "
                f"--member=serviceAccount:SA_EMAIL --role={role.split()[0]}{condition}` (or via terraform)."
            )
        if isinstance(exc, (auth_exc.DefaultCredentialsError, auth_exc.RefreshError)):
            return BackendError(f"Google credentials for {where} are missing or invalid: {retry.first_line(exc, 300)}. {ADC_HINT}")
        if isinstance(exc, gexc.GoogleAPICallError):
            return BackendError(f"Cloud Storage refused {op} {where}: {retry.first_line(exc, 300)}")
        return exc

    def _principal(self) -> str:
        creds = getattr(self._client, "_credentials", None)
        email = getattr(creds, "service_account_email", None)
        return f"The account {email}" if email and email != "default" else "The account estore-ops runs as"

    def _bucket_exists_or_unknown(self) -> bool:
        """After a 404 on an object: is it the object or the whole bucket that is missing?

        Listing needs only objectViewer (bucket metadata would need more), so list one name.
        """
        if self._bucket_known:
            return True
        try:
            it = self.client.list_blobs(self.bucket_name, max_results=1, retry=None, timeout=self.request_timeout)
            next(iter(it.pages), None)
        except gexc.NotFound:
            return False
        except Exception:  # noqa: BLE001 - cannot tell: report the object as missing
            return True
        self._bucket_known = True
        return True

    # -- reads -------------------------------------------------------------------------------
    # A listing asks only for what ObjectInfo holds (a partial response: about a third of the
    # bytes of full object resources), in pages of `page_size` (1,000, the API's maximum).
    LIST_FIELDS = "items(name,size,updated,timeCreated,generation,md5Hash,crc32c),nextPageToken"
    list_requests = 0  # pages requested by this store (the catch-up scan reports it)

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        full_prefix = self.prefix + prefix
        token: str | None = None
        while True:

            def fetch(token: str | None = token) -> tuple[list[storage.Blob], str | None]:
                self.list_requests += 1
                it = self.client.list_blobs(
                    self.bucket_name,
                    prefix=full_prefix or None,
                    page_size=page_size,
                    page_token=token,
                    fields=self.LIST_FIELDS,
                    retry=None,
                    timeout=self.request_timeout,
                )
                page = next(iter(it.pages), None)
                return (list(page) if page is not None else []), it.next_page_token

            blobs, token = self._call("list", None, fetch)  # one page per call: a failed page is fetched again
            self._bucket_known = True
            for blob in blobs:
                rel = self._relative(blob.name)
                if not rel or rel.endswith("/") or any(p.startswith(".") for p in rel.split("/")):
                    continue  # folder placeholders and hidden objects
                yield self._info(blob, rel)
            if not token:
                return

    def stat(self, name: str) -> ObjectInfo:
        full = self._check_name(name)

        def get() -> storage.Blob:
            blob = self.bucket.blob(full)
            blob.reload(retry=None, timeout=self.request_timeout)
            return blob

        return self._info(self._call("stat", name, get), name)

    def open(self, name: str) -> BinaryIO:
        """The stored bytes (gzip stays gzip), read in ranged requests pinned to the generation
        stat'ed first: a rewrite while we stream fails with 412 (PreconditionFailedError) instead
        of silently mixing two versions, and a reset resumes where it stopped."""
        full = self._check_name(name)
        info = self.stat(name)
        blob = self.bucket.blob(full)

        def open_at(offset: int) -> _RangeReader:
            return _RangeReader(self, blob, info.size, info.generation, offset)

        return ResumingReader(open_at, lambda fn: self._call("read", name, fn))  # type: ignore[return-value]

    def read(self, name: str) -> tuple[bytes, int]:
        full = self._check_name(name)

        def download() -> tuple[bytes, int]:
            blob = self.bucket.blob(full)
            data = blob.download_as_bytes(raw_download=True, retry=None, timeout=self.request_timeout)
            # The response's x-goog-generation header sets blob.generation: the generation of
            # exactly these bytes, from the same request.
            if blob.generation is None:
                raise BackendError(f"{self.uri(name)}: the server did not say which generation it returned.")
            return data, int(blob.generation)

        return self._call("read", name, download)

    # -- conditional writes -------------------------------------------------------------------
    def write(self, name: str, data: bytes, if_generation_match: int | None = None) -> int:
        full = self._check_name(name)
        attempts = 0

        def upload() -> int:
            nonlocal attempts
            attempts += 1
            blob = self.bucket.blob(full)
            try:
                blob.upload_from_string(
                    data,
                    content_type="application/octet-stream",
                    if_generation_match=if_generation_match,
                    retry=None,
                    timeout=self.request_timeout,
                )
            except gexc.PreconditionFailed:
                if attempts > 1:
                    # An earlier attempt may have succeeded with its answer lost: then the
                    # object now holds exactly our bytes.
                    current = self.bucket.blob(full)
                    current.reload(retry=None, timeout=self.request_timeout)
                    if current.md5_hash and _md5_hex(current.md5_hash) == hashlib.md5(data).hexdigest():
                        return int(current.generation)
                raise
            return int(blob.generation)

        return self._call("write", name, upload, writes=True)

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        full = self._check_name(name)
        if if_generation_match == 0:
            # "Must not exist": nothing to delete when it does not, a conflict when it does.
            if self.exists(name):
                raise PreconditionFailedError(f"{self.uri(name)} exists, expected none: another writer created it.")
            return
        attempts = 0

        def remove() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self.bucket.blob(full).delete(
                    if_generation_match=if_generation_match, retry=None, timeout=self.request_timeout
                )
            except gexc.NotFound:
                if attempts > 1:
                    return  # an earlier attempt removed it and its answer was lost
                raise

        try:
            self._call("delete", name, remove, writes=True)
        except ObjectNotFoundError:
            if if_generation_match is not None:
                raise PreconditionFailedError(
                    f"{self.uri(name)} does not exist, expected generation {if_generation_match}: another writer removed it."
                ) from None
            raise


class _RangeReader:
    """Reads one object generation from an offset, one ranged request per read."""

    def __init__(self, store: GCSStore, blob: storage.Blob, size: int, generation: int, offset: int) -> None:
        self.store, self.blob, self.size, self.generation, self.pos = store, blob, size, generation, offset

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.size:
            return b""
        end = self.size if n is None or n < 0 else min(self.size, self.pos + max(n, 1))
        data = self.blob.download_as_bytes(
            start=self.pos, end=end - 1, raw_download=True, if_generation_match=self.generation,
            checksum=None, retry=None, timeout=self.store.request_timeout,
        )
        self.pos += len(data)
        return data

    def close(self) -> None:
        pass
