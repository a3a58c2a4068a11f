"""Cloud Storage as an object store: `gs://BUCKET[/PREFIX]`, names relative to the prefix.

- Auth: Application Default Credentials (`gcloud auth application-default login`, the VM's service
  account, or GOOGLE_APPLICATION_CREDENTIALS). When STORAGE_EMULATOR_HOST is set (tests,
  fake-gcs-server) the client talks to it with anonymous credentials.
- Generations are the object generations GCS keeps (microseconds, growing with each write).
- Conditional writes are one request (`upload_from_string` with `ifGenerationMatch`, multipart
  upload for small bodies): a 412 becomes PreconditionFailedError. This is the compare-and-swap
  the state document relies on.
- Every request goes through one retry policy (tenacity: exponential backoff with jitter, bounded
  in attempts and total time) for 429, 500, 502, 503, 504 and dropped connections; the client
  library's own retries are switched off so the bounds hold. What is still failing after that
  becomes TransientBackendError; everything else is translated at this edge into a BackendError
  that says what to fix (missing bucket, missing role, missing credentials).
- Names whose segments start with "." are not listed (like the local folder store, which hides
  its lock file): probes and temporary objects never look like landing files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlparse

import requests
import tenacity
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import storage

from estore_ops.errors import (
    BackendError,
    ConfigError,
    ObjectNotFoundError,
    PreconditionFailedError,
    TransientBackendError,
    UnsafeNameError,
)
from estore_ops.stores.base import ObjectInfo, ObjectStore

T = TypeVar("T")

READ_ROLE = "roles/storage.objectViewer"
WRITE_ROLE = "roles/storage.objectUser (or roles/storage.objectAdmin)"
ADC_HINT = (
    "Run `gcloud auth application-default login` (a workstation), attach a service account (a VM), "
    "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file."
)

_TRANSIENT_API = (
    gexc.TooManyRequests,  # 429
    gexc.InternalServerError,  # 500
    gexc.BadGateway,  # 502
    gexc.ServiceUnavailable,  # 503
    gexc.GatewayTimeout,  # 504
)
_TRANSIENT_NET = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
    ConnectionResetError,
    ConnectionAbortedError,
    auth_exc.TransportError,
)


def is_transient(exc: BaseException) -> bool:
    """429, 5xx and dropped connections: worth another try."""
    if isinstance(exc, _TRANSIENT_API + _TRANSIENT_NET):
        return True
    # Some transports wrap a reset in a generic error whose cause is the reset.
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, (ConnectionResetError, ConnectionAbortedError))


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

    # Retry bounds (class attributes so tests and drills can shorten them).
    retry_attempts = 6
    retry_max_seconds = 120.0
    retry_initial_wait = 0.5
    retry_max_wait = 20.0
    request_timeout: tuple[float, float] = (10.0, 120.0)  # connect, read
    download_chunk_size = 8 << 20

    def __init__(self, bucket: str, prefix: str = "", client: storage.Client | None = None, project: str | None = None) -> None:
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
        self._bucket_known = False

    @classmethod
    def from_url(cls, url: str, client: storage.Client | None = None) -> GCSStore:
        parsed = urlparse(url)
        if parsed.scheme != "gs" or not parsed.netloc:
            raise ConfigError(f"{url} is not a Cloud Storage location: write gs://BUCKET or gs://BUCKET/prefix.")
        return cls(parsed.netloc, parsed.path, client=client)

    # -- client ------------------------------------------------------------------------------
    @property
    def client(self) -> storage.Client:
        if self._client is None:
            try:
                if os.environ.get("STORAGE_EMULATOR_HOST"):
                    from google.auth.credentials import AnonymousCredentials

                    project = self._project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "test-project"
                    self._client = storage.Client(project=project, credentials=AnonymousCredentials())
                else:
                    self._client = storage.Client(project=self._project)
            except auth_exc.DefaultCredentialsError as exc:
                raise BackendError(f"No Google credentials to reach {self.url}: {_first_line(exc)}. {ADC_HINT}") from None
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
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            stop=tenacity.stop_after_attempt(self.retry_attempts) | tenacity.stop_after_delay(self.retry_max_seconds),
            wait=tenacity.wait_random_exponential(multiplier=self.retry_initial_wait, max=self.retry_max_wait),
            reraise=True,
        )
        try:
            return retrying(fn)
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
            return BackendError(
                f"Access denied to gs://{self.bucket_name} while trying to {op} {where}: "
                f"{who} lacks {role} on the bucket. Grant it, e.g. "
                f"`gcloud storage buckets add-iam-policy-binding gs://{self.bucket_name} "
                f"--member=serviceAccount:SA_EMAIL --role={role.split()[0]}` (or via terraform)."
            )
        if isinstance(exc, (auth_exc.DefaultCredentialsError, auth_exc.RefreshError)):
            return BackendError(f"Google credentials for {where} are missing or invalid: {_first_line(exc)}. {ADC_HINT}")
        if is_transient(exc):
            return TransientBackendError(
                f"Cloud Storage did not answer {op} {where} after {self.retry_attempts} attempts: {_first_line(exc)}. "
                "It is probably a temporary outage or throttling; the next run tries again."
            )
        if isinstance(exc, gexc.GoogleAPICallError):
            return BackendError(f"Cloud Storage refused {op} {where}: {_first_line(exc)}")
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

            blobs, token = self._call("list", None, fetch)
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
        """A stream of the stored bytes (gzip stays gzip), pinned to the generation stat'ed first."""
        full = self._check_name(name)
        info = self.stat(name)
        blob = self.bucket.blob(full)

        def open_reader() -> Any:
            return blob.open(
                "rb",
                chunk_size=self.download_chunk_size,
                raw_download=True,
                # A rewrite while we stream makes the next range request fail with 412 instead
                # of silently mixing two versions.
                if_generation_match=info.generation,
                retry=None,
            )

        reader = self._call("open", name, open_reader)
        return _TranslatingReader(reader, self, name)  # type: ignore[return-value]

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

        def remove() -> None:
            self.bucket.blob(full).delete(
                if_generation_match=if_generation_match, retry=None, timeout=self.request_timeout
            )

        try:
            self._call("delete", name, remove, writes=True)
        except ObjectNotFoundError:
            if if_generation_match is not None:
                raise PreconditionFailedError(
                    f"{self.uri(name)} does not exist, expected generation {if_generation_match}: another writer removed it."
                ) from None
            raise


class _TranslatingReader(io.RawIOBase):
    """Wraps the client's BlobReader so errors while streaming are translated like every other call."""

    def __init__(self, reader: Any, store: GCSStore, name: str) -> None:
        self._reader = reader
        self._store = store
        self._name = name

    def readable(self) -> bool:
        return True

    def _do(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            raise self._store._translate(exc, "read", self._name, False) from None

    def read(self, size: int = -1) -> bytes:
        return self._do(lambda: self._reader.read(size))

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            super().close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
