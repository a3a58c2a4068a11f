"""Arrivals in a Cloud Storage landing area, from the bucket's Pub/Sub notifications.

`notifications = "pubsub://PROJECT/SUBSCRIPTION"` names a subscription to the topic the bucket's
notification configuration publishes to (terraform/notifications.tf). google-cloud-pubsub's
streaming pull delivers the messages to a callback thread; the loop takes them from a queue.

- Only `OBJECT_FINALIZE` events of the landing bucket, under the landing prefix, for `.csv` /
  `.csv.gz` names without hidden segments become arrivals. Everything else (deletes, metadata
  updates, the state objects, another bucket) is acknowledged at once and ignored.
- The attributes Cloud Storage sets on every notification carry what the loop needs
  (`bucketId`, `objectId`, `objectGeneration`, `eventType`; see
  https://cloud.google.com/storage/docs/pubsub-notifications#attributes): the JSON payload is not
  parsed.
- A message is acknowledged by the loop only after its file version (or a newer one) is recorded
  in the state. Until then the client library extends its lease (at most `max_lease_seconds`,
  after which Pub/Sub delivers it again).
- The streaming pull retries UNAVAILABLE on its own, forever and silently, so a server that went
  away is noticed by asking for the subscription every `probe_seconds` (this needs
  roles/pubsub.viewer on the subscription, which Terraform grants with roles/pubsub.subscriber).
  NOT_FOUND and PERMISSION_DENIED end the stream itself.
- PUBSUB_EMULATOR_HOST (tests) makes the client talk to the emulator without credentials.
"""

from __future__ import annotations

import queue
import time
from typing import Any
from urllib.parse import urlparse

from estore_ops.errors import MissingExtraError
from estore_ops.ingest.events.base import Arrival, ArrivalSource, SourceError, drain
from estore_ops.logs import get_logger
from estore_ops.redact import redact
from estore_ops.backends.stores.base import is_csv_name

log = get_logger("events.pubsub")

SUBSCRIBER_ROLES = "roles/pubsub.subscriber and roles/pubsub.viewer"
ADC_HINT = (
    "Run `gcloud auth application-default login` (a workstation) or attach a service account (a VM)."
)


def parse_subscription(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    return parsed.netloc, parsed.path.strip("/")


def landing_bucket_and_prefix(landing_url: str) -> tuple[str, str]:
    """gs://BUCKET/PREFIX (also behind chaos+) -> (BUCKET, 'PREFIX/')."""
    parsed = urlparse(landing_url)
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


class PubSubSource(ArrivalSource):
    probe_seconds = 30.0
    probe_timeout = 10.0
    max_lease_seconds = 600
    max_messages = 1000

    def __init__(self, subscription_url: str, landing_url: str) -> None:
        self.project, self.subscription = parse_subscription(subscription_url)
        self.bucket, self.prefix = landing_bucket_and_prefix(landing_url)
        self.path = f"projects/{self.project}/subscriptions/{self.subscription}"
        self.description = f"Pub/Sub subscription {self.path}"
        self._queue: queue.SimpleQueue[Arrival] = queue.SimpleQueue()
        self._client: Any = None
        self._future: Any = None
        self._last_probe = 0.0
        self.received = 0
        self.ignored = 0
        self._warned_buckets: set[str] = set()

    # -- the client -----------------------------------------------------------------------------
    def _new_client(self) -> Any:
        try:
            from google.cloud import pubsub_v1
        except ImportError:
            raise MissingExtraError(
                f"notifications = pubsub://{self.project}/{self.subscription} needs the Google Cloud client libraries. "
                "Install them with: pip install 'estore-ops[gcp]'"
            ) from None
        from google.auth import exceptions as auth_exc

        try:
            return pubsub_v1.SubscriberClient()
        except auth_exc.DefaultCredentialsError as exc:
            raise SourceError(f"No Google credentials to read {self.path}: {_first_line(exc)}. {ADC_HINT}") from None

    def _translate(self, exc: BaseException, doing: str) -> SourceError:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        if isinstance(exc, gexc.NotFound):
            return SourceError(
                f"The subscription {self.path} does not exist (while trying to {doing}). Create it "
                "(`terraform apply` in terraform/ creates it with the bucket notification) or fix the notifications setting."
            )
        if isinstance(exc, (gexc.PermissionDenied, gexc.Unauthenticated, gexc.Forbidden)):
            return SourceError(
                f"Access denied to {self.path} while trying to {doing}: the account estore-ops runs as lacks "
                f"{SUBSCRIBER_ROLES} on that subscription. Grant them, e.g. `gcloud pubsub subscriptions "
                f"add-iam-policy-binding {self.subscription} --project {self.project} --member=serviceAccount:SA_EMAIL "
                "--role=roles/pubsub.subscriber` (and roles/pubsub.viewer), or via terraform."
            )
        if isinstance(exc, (auth_exc.DefaultCredentialsError, auth_exc.RefreshError)):
            return SourceError(f"Google credentials for {self.path} are missing or invalid: {_first_line(exc)}. {ADC_HINT}")
        return SourceError(f"Pub/Sub did not answer for {self.path} while trying to {doing}: {_first_line(exc)}")

    def _probe(self) -> None:
        try:
            self._client.get_subscription(request={"subscription": self.path}, timeout=self.probe_timeout, retry=None)
        except Exception as exc:  # noqa: BLE001 - translated
            raise self._translate(exc, "read the subscription") from None
        self._last_probe = time.monotonic()

    # -- listening ------------------------------------------------------------------------------
    def start(self) -> None:
        self.stop()
        self._client = self._new_client()  # MissingExtraError without the gcp extra
        from google.cloud import pubsub_v1

        self._probe()
        flow = pubsub_v1.types.FlowControl(max_messages=self.max_messages, max_lease_duration=self.max_lease_seconds)
        try:
            self._future = self._client.subscribe(self.path, callback=self._on_message, flow_control=flow)
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, "subscribe") from None

    def _on_message(self, message: Any) -> None:
        """Runs in the client's callback threads: keep it short and never raise."""
        try:
            self.received += 1
            arrival = self._arrival(message)
        except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the stream
            log.warning("ignoring a notification that could not be read (%s): %s", type(exc).__name__, redact(str(exc)))
            arrival = None
        if arrival is None:
            self.ignored += 1
            message.ack()
            return
        self._queue.put(arrival)

    def _arrival(self, message: Any) -> Arrival | None:
        attrs = message.attributes
        if attrs.get("eventType") != "OBJECT_FINALIZE":
            return None
        bucket, object_id = attrs.get("bucketId", ""), attrs.get("objectId", "")
        if bucket != self.bucket:
            if bucket not in self._warned_buckets:
                self._warned_buckets.add(bucket)
                log.warning("%s carries notifications of bucket %r, not of the landing bucket %r: they are ignored",
                            self.path, bucket, self.bucket)
            return None
        if not object_id.startswith(self.prefix):
            return None
        name = object_id[len(self.prefix):]
        if not name or not is_csv_name(name) or any(p.startswith(".") or not p for p in name.split("/")):
            return None
        generation = attrs.get("objectGeneration")
        return Arrival(name, int(generation) if generation else None, message=message)

    def get(self, timeout: float) -> list[Arrival]:
        return drain(self._queue, timeout)

    def check(self) -> None:
        if self._future is None:
            raise SourceError(f"Not subscribed to {self.path}.")
        if self._future.done():
            exc = self._future.exception() if not self._future.cancelled() else None
            raise self._translate(exc, "pull messages") if exc else SourceError(f"The stream from {self.path} ended.")
        if time.monotonic() - self._last_probe >= self.probe_seconds:
            self._probe()

    def stop(self) -> None:
        future, self._future = self._future, None
        if future is not None:
            future.cancel()  # messages not acknowledged are delivered again
            try:
                future.result(timeout=10)
            except Exception:  # noqa: BLE001 - it ended; how does not matter any more
                pass
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


def _first_line(exc: BaseException | None) -> str:
    text = (str(exc).strip() if exc else "") or type(exc).__name__
    return redact(text.splitlines()[0][:300])
