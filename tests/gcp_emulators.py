"""Session-scoped pytest fixtures that run the Google Cloud emulators on 127.0.0.1.

- `fake_gcs`: fake-gcs-server with the filesystem backend. Its root holds `ROOT/BUCKET/OBJECT`,
  which is exactly the layout bqemulator resolves `gs://BUCKET/OBJECT` to under
  BQEMU_GCS_LOCAL_ROOT, so BigQuery load jobs read what the store wrote, with no copying.
- `bq_emulator`: bqemulator (BigQuery REST on DuckDB) with BQEMU_GCS_LOCAL_ROOT = that root.

Both are started here (not through the wrappers' launchers: fake-gcs-server's Python wrapper pipes
the server's logs without reading them and the server blocks after a few hundred requests), on
free ports, with logs in a temp file that is printed when start-up fails, and stopped by killing
their process group. Missing tools FAIL the tests (CI installs them; a skip would hide breakage).

Use in a test module:  `from tests.gcp_emulators import fake_gcs, bq_emulator, gcs_bucket, bq_dataset  # noqa: F401`
and mark the tests `@pytest.mark.gcp`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = "test-project"
START_TIMEOUT = 60.0


def tools_dir() -> Path:
    return Path(os.environ.get("ESTORE_TOOLS_DIR") or REPO / ".tools")


def _tool(name: str) -> Path:
    path = tools_dir() / "bin" / name
    if not (path.exists() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} is not installed at {path}: run `make tools` (tests/tools/install.sh) "
            "or set ESTORE_TOOLS_DIR to the folder it installed into.",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A child process in its own process group, with its log in a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, health_url: str) -> None:
        self.name, self.argv, self.log_path, self.health_url = name, argv, log_path, health_url
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(
                    f"{self.name} exited with code {self.proc.returncode} while starting "
                    f"({' '.join(self.argv)}). Log:\n{self.log_text()}",
                    pytrace=False,
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                    if resp.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
                last = exc
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"{self.name} did not answer {self.health_url} within {timeout:.0f}s ({last}). Log:\n{self.log_text()}", pytrace=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


@dataclass
class FakeGCS:
    endpoint: str  # http://127.0.0.1:PORT
    root: Path  # filesystem backend root: ROOT/BUCKET/OBJECT
    server: Server

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        # The client reads STORAGE_EMULATOR_HOST when it is built.
        with mock.patch.dict(os.environ, self.env):
            return storage.Client(project=PROJECT, credentials=AnonymousCredentials())

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(name)
        return name

    def store(self, url: str) -> Any:
        from estore_ops.backends.stores.gcs import GCSStore

        return GCSStore.from_url(url, client=self.client())


@dataclass
class BQEmulator:
    endpoint: str
    project: str
    server: Server
    gcs_root: Path

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint})

    def create_dataset(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.client().create_dataset(f"{self.project}.{name}")
        return name

    def url(self, dataset: str, endpoint: str | None = None) -> str:
        return f"bigquery://{self.project}/{dataset}?location=US&api_endpoint={endpoint or self.endpoint}"


def _start(name: str, argv_for_port: Any, env: dict[str, str], log_path: Path, health: Any, attempts: int = 3) -> tuple[Server, int]:
    """Start on a free port; try another port if the chosen one was taken meanwhile."""
    for attempt in range(attempts):
        port = free_port()
        argv = argv_for_port(port)
        server = Server(name, argv, env, log_path, health(port))
        try:
            server.wait_ready()
            return server, port
        except pytest.fail.Exception:
            if "address already in use" in server.log_text() and attempt + 1 < attempts:
                continue
            raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    binary = _tool("fake-gcs-server")
    root = tmp_path_factory.mktemp("gcs-root")
    log = tmp_path_factory.mktemp("logs") / "fake-gcs-server.log"
    server, port = _start(
        "fake-gcs-server",
        lambda port: [
            str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
            "-backend", "filesystem", "-filesystem-root", str(root), "-log-level", "warn",
            "-external-url", f"http://127.0.0.1:{port}",
        ],
        {**os.environ},
        log,
        lambda port: f"http://127.0.0.1:{port}/storage/v1/b",
    )
    try:
        yield FakeGCS(f"http://127.0.0.1:{port}", root, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bq_emulator(fake_gcs: FakeGCS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BQEmulator]:
    binary = _tool("bqemulator")
    log = tmp_path_factory.mktemp("logs") / "bqemulator.log"
    env = {**os.environ, "BQEMU_GCS_LOCAL_ROOT": str(fake_gcs.root)}

    def argv(port: int) -> list[str]:
        return [
            str(binary), "start", "--rest-host", "127.0.0.1", "--rest-port", str(port),
            "--grpc-host", "127.0.0.1", "--grpc-port", str(free_port()), "--project", PROJECT,
            "--log-level", "warning",
        ]

    server, port = _start("bqemulator", argv, env, log, lambda port: f"http://127.0.0.1:{port}/bigquery/v2/projects/{PROJECT}/datasets")
    try:
        yield BQEmulator(f"http://127.0.0.1:{port}", PROJECT, server, fake_gcs.root)
    finally:
        server.stop()


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGCS) -> str:
    """A new, empty bucket for one test."""
    return fake_gcs.create_bucket()


@pytest.fixture
def bq_dataset(bq_emulator: BQEmulator) -> str:
    """A new, empty dataset for one test."""
    return bq_emulator.create_dataset()


# -- Pub/Sub: Google's emulator, and fake-gcs-server publishing object notifications to it ----------


@dataclass
class PubSubEmulator:
    host: str  # 127.0.0.1:PORT, for PUBSUB_EMULATOR_HOST
    server: Server
    project: str = PROJECT

    @property
    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def publisher(self) -> Any:
        from google.cloud import pubsub_v1

        with mock.patch.dict(os.environ, self.env):
            return pubsub_v1.PublisherClient()

    def subscriber(self) -> Any:
        from google.cloud import pubsub_v1

        with mock.patch.dict(os.environ, self.env):
            return pubsub_v1.SubscriberClient()

    def topic(self, name: str) -> str:
        path = f"projects/{self.project}/topics/{name}"
        publisher = self.publisher()
        try:
            publisher.create_topic(name=path)
        except Exception as exc:  # noqa: BLE001 - AlreadyExists is fine
            if "AlreadyExists" not in type(exc).__name__:
                raise
        return path

    def subscription(self, name: str, topic: str) -> str:
        path = f"projects/{self.project}/subscriptions/{name}"
        with self.subscriber() as subscriber:
            subscriber.create_subscription(request={"name": path, "topic": topic, "ack_deadline_seconds": 10})
        return path

    def pull(self, subscription: str, max_messages: int = 100, ack: bool = True) -> list[Any]:
        """What is waiting on a subscription now (synchronous pull; the messages are acknowledged)."""
        with self.subscriber() as subscriber:
            response = subscriber.pull(request={"subscription": subscription, "max_messages": max_messages,
                                                "return_immediately": True}, timeout=10)
            received = list(response.received_messages)
            if ack and received:
                subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [m.ack_id for m in received]})
        return [m.message for m in received]


def start_pubsub_emulator(log_path: Path, port: int | None = None) -> tuple[Server, int]:
    """`gcloud beta emulators pubsub start` (Java, from google-cloud-cli-pubsub-emulator) on 127.0.0.1."""
    import shutil

    gcloud = shutil.which("gcloud")
    if not gcloud:
        pytest.fail("gcloud is not installed: run `make tools` (tests/tools/install-pubsub-emulator.sh).", pytrace=False)
    config = log_path.parent / f"gcloud-config-{log_path.stem}"
    env = {**os.environ, "CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
           "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1"}

    def argv(p: int) -> list[str]:
        return [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{p}", f"--project={PROJECT}"]

    if port is not None:
        server = Server("pubsub emulator", argv(port), env, log_path, f"http://127.0.0.1:{port}/")
        server.wait_ready(START_TIMEOUT * 2)
        return server, port
    return _start("pubsub emulator", argv, env, log_path, lambda p: f"http://127.0.0.1:{p}/")


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    log = tmp_path_factory.mktemp("logs") / "pubsub-emulator.log"
    server, port = start_pubsub_emulator(log)
    try:
        yield PubSubEmulator(f"127.0.0.1:{port}", server)
    finally:
        server.stop()


def start_fake_gcs(root: Path, log: Path, extra: list[str] = (), env: dict[str, str] | None = None) -> FakeGCS:  # type: ignore[assignment]
    """Another fake-gcs-server on `root` (e.g. one that publishes notifications: `-event.*` flags)."""
    binary = _tool("fake-gcs-server")
    server, port = _start(
        "fake-gcs-server",
        lambda port: [
            str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
            "-backend", "filesystem", "-filesystem-root", str(root), "-log-level", "info",
            "-external-url", f"http://127.0.0.1:{port}", *extra,
        ],
        {**os.environ, **(env or {})},
        log,
        lambda port: f"http://127.0.0.1:{port}/storage/v1/b",
    )
    return FakeGCS(f"http://127.0.0.1:{port}", root, server)


def notification_flags(topic: str, prefix: str = "landing/") -> list[str]:
    """fake-gcs-server publishes an OBJECT_FINALIZE message per object written under `prefix`."""
    return ["-event.pubsub-project-id", PROJECT, "-event.pubsub-topic", topic, "-event.object-prefix", prefix,
            "-event.list", "finalize"]
