"""`watch --events` on emulated GCP: fake-gcs-server publishes the bucket's object notifications to
Google's Pub/Sub emulator itself (`-event.*` flags), and the loop pulls them with
google-cloud-pubsub's streaming pull. No message is made by hand: the duplicate and out-of-order
scenario re-publishes real notifications captured on a second ("tap") subscription.

Landing and state are in fake GCS; the warehouse is DuckDB (it reads the objects through the
store), so every scenario ends with exact rows per file; one burst also runs on the BigQuery
emulator. Waits are on what the loop reports, each with a deadline.
"""

from __future__ import annotations

import io
import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.events_helpers import EventsProcess, wait_for
from tests.gcp_emulators import (  # noqa: F401 - fixtures
    PROJECT,
    FakeGCS,
    PubSubEmulator,
    bq_dataset,
    bq_emulator,
    fake_gcs,
    notification_flags,
    pubsub_emulator,
    start_fake_gcs,
    start_pubsub_emulator,
)
from tests.helpers import HEADER, Workspace, event_lines
from tests.slack_server import FakeSlack, slack  # noqa: F401 - fixture

pytestmark = pytest.mark.gcp

TOPIC = "gcs-events"
FAST = {"ESTORE_GATHER_WINDOW": "0.3", "ESTORE_TRANSFORM_QUIET_PERIOD": "3600", "ESTORE_TRANSFORM_MIN_INTERVAL": "3600"}


def _csv(lines: list[str]) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


@dataclass
class Notifying:
    """fake-gcs-server with notifications on (and a twin on the same files that publishes none)."""

    gcs: FakeGCS
    quiet: FakeGCS
    pubsub: PubSubEmulator
    topic: str


def _notifying(pubsub: PubSubEmulator, root: Path, logs: Path) -> Notifying:
    topic = pubsub.topic(TOPIC)
    gcs = start_fake_gcs(root, logs / f"fake-gcs-events-{uuid.uuid4().hex[:6]}.log", notification_flags(TOPIC), env=pubsub.env)
    quiet = start_fake_gcs(root, logs / f"fake-gcs-quiet-{uuid.uuid4().hex[:6]}.log")
    return Notifying(gcs, quiet, pubsub, topic)


@pytest.fixture(scope="module")
def notifying(pubsub_emulator: PubSubEmulator, fake_gcs: FakeGCS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notifying]:  # noqa: F811
    # The same filesystem root as the session's fake-gcs-server, which bqemulator reads gs:// from.
    n = _notifying(pubsub_emulator, fake_gcs.root, tmp_path_factory.mktemp("logs"))
    try:
        yield n
    finally:
        n.gcs.server.stop()
        n.quiet.server.stop()


class Cloud:
    def __init__(self, ws: Workspace, n: Notifying) -> None:
        self.ws, self.n = ws, n
        self.bucket = n.gcs.create_bucket()
        suffix = uuid.uuid4().hex[:8]
        self.subscription = n.pubsub.subscription(f"estore-{suffix}", n.topic)
        self.tap = n.pubsub.subscription(f"tap-{suffix}", n.topic)  # sees the same notifications
        self.client = n.gcs.client()
        self.warehouse = "duckdb:///./data/warehouse.duckdb"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **FAST, **self.n.gcs.env, **self.n.pubsub.env,
            "ESTORE_LANDING": f"gs://{self.bucket}/landing", "ESTORE_STATE": f"gs://{self.bucket}/state",
            "ESTORE_WAREHOUSE": self.warehouse,
            "ESTORE_NOTIFICATIONS": f"pubsub://{PROJECT}/{self.subscription.rsplit('/', 1)[1]}", **extra,
        }

    def start(self, **extra: str) -> EventsProcess:
        loop = EventsProcess(self.ws.root, "--interval", "1", env=self.env(**extra))
        loop.wait_event("listening", 120)
        loop.wait_event("catch-up", 120)
        return loop

    def upload(self, name: str, data: bytes, via: FakeGCS | None = None) -> int:
        client = via.client() if via else self.client
        blob = client.bucket(self.bucket).blob(f"landing/{name}")
        blob.upload_from_string(data, content_type="text/csv")
        return int(blob.generation)

    def read(self, name: str) -> Any:
        blob = self.client.bucket(self.bucket).blob(f"state/{name}")
        return json.loads(blob.download_as_bytes()) if blob.exists() else None

    def recorded(self) -> dict[str, Any]:
        doc = self.read("cursor.json") or {"files": {}}
        return {n: r for n, r in doc["files"].items() if r["status"] == "loaded"}

    def tapped(self, timeout: float = 30) -> list[Any]:
        got: list[Any] = []
        wait_for(lambda: got.extend(self.n.pubsub.pull(self.tap)) or got, timeout, "notifications on the tap subscription")
        return got


@pytest.fixture
def cloud(ws: Workspace, notifying: Notifying) -> Cloud:
    return Cloud(ws, notifying)


def _acked_everything(loop: EventsProcess) -> dict[str, Any]:
    stopped = loop.of("stopped")[-1]
    assert stopped["unacknowledged"] == 0, stopped
    assert stopped["acked"] + stopped["ignored"] == stopped["received"], stopped
    return stopped


# -- scenarios ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [pytest.param(25, id="25-files"), pytest.param(250, id="250-files", marks=pytest.mark.drill)])
def test_a_burst_of_uploads_loads_in_a_few_batches_and_every_message_is_acknowledged(cloud: Cloud, count: int) -> None:
    loop = cloud.start(ESTORE_GATHER_WINDOW="1")  # the default window
    expected = {f"2019/{i:04d}.csv": 3 + i % 4 for i in range(count)}
    try:
        # Not for loading: another extension, a hidden (temporary) name, an object outside landing/.
        cloud.upload("notes.txt", b"not events")
        cloud.upload(".upload-in-progress.csv", _csv(event_lines(2)))
        cloud.client.bucket(cloud.bucket).blob("elsewhere/x.csv").upload_from_string(_csv(event_lines(2)))
        for name, rows in expected.items():
            cloud.upload(name, _csv(event_lines(rows, start=len(name) * 1000 + rows)))
        loop.wait(lambda: set(loop.loaded()) == set(expected), 240, f"{count} uploads loaded")
        loop.wait(lambda: not loop.of("batch") or len(cloud.recorded()) == count, 30, "recorded")
    finally:
        assert loop.terminate() == 0, loop.log()
    stopped = _acked_everything(loop)
    assert stopped["acked"] >= count
    assert stopped["ignored"] >= 2  # the .txt and the hidden name (elsewhere/ is not even published)
    assert sorted(loop.loaded()) == sorted(expected)  # once each
    assert len([e for e in loop.of("batch") if e["files_loaded"]]) <= max(6, count // 25)
    assert cloud.ws.rows_by_file() == expected


def test_a_burst_on_the_bigquery_emulator(cloud: Cloud, bq_emulator, bq_dataset) -> None:  # noqa: F811
    cloud.warehouse = bq_emulator.url(bq_dataset)
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

    loop = cloud.start()
    expected = {f"bq-{i}.csv": 2 + i for i in range(6)}
    try:
        for name, rows in expected.items():
            cloud.upload(name, _csv(event_lines(rows, start=rows * 100)))
        loop.wait(lambda: set(loop.loaded()) == set(expected), 240, "uploads loaded into BigQuery")
    finally:
        assert loop.terminate() == 0, loop.log()
    _acked_everything(loop)
    warehouse = BigQueryWarehouse.from_url(bq_emulator.url(bq_dataset), client=bq_emulator.client())
    assert warehouse.rows_by_file() == expected


class _SlowReader(io.BytesIO):
    """Bytes handed out over several seconds (a slow producer's upload): a pause before each chunk."""

    def __init__(self, data: bytes, pause: float) -> None:
        super().__init__(data)
        self.pause, self.size = pause, len(data)

    def read(self, size: int | None = -1) -> bytes:
        if 0 < self.tell() < self.size:
            t0 = time.monotonic()
            wait_for(lambda: time.monotonic() - t0 >= self.pause, 10, "the producer's pause")
        return super().read(size)


def test_an_upload_written_slowly_is_loaded_once_complete(cloud: Cloud) -> None:
    loop = cloud.start()
    lines = event_lines(30_000)
    data = _csv(lines)
    try:
        blob = cloud.client.bucket(cloud.bucket).blob("landing/slow.csv", chunk_size=256 * 1024)
        started = time.monotonic()
        # Size unknown: a resumable upload, sent chunk by chunk as the producer makes the bytes.
        blob.upload_from_file(_SlowReader(data, 0.7), content_type="text/csv")
        assert time.monotonic() - started > 1.5  # it really took a while
        loop.wait(lambda: "slow.csv" in loop.loaded(), 120, "slow.csv loaded")
    finally:
        assert loop.terminate() == 0, loop.log()
    tapped = [m for m in cloud.tapped() if m.attributes["objectId"] == "landing/slow.csv"]
    assert len(tapped) == 1  # one OBJECT_FINALIZE, when the upload completed: never a partial object
    assert loop.loaded() == ["slow.csv"]
    assert cloud.ws.rows_by_file() == {"slow.csv": 30_000}
    _acked_everything(loop)


def test_a_dropped_notification_is_loaded_by_the_catch_up_scan(cloud: Cloud) -> None:
    loop = cloud.start(ESTORE_CATCHUP_INTERVAL="3")
    try:
        cloud.upload("seen.csv", _csv(event_lines(4)))
        landed = time.monotonic()
        cloud.upload("lost.csv", _csv(event_lines(6, start=40)), via=cloud.n.quiet)  # no notification is published
        loop.wait(lambda: {"seen.csv", "lost.csv"} <= set(loop.loaded()), 120, "both files loaded")
        late = time.monotonic() - landed
    finally:
        assert loop.terminate() == 0, loop.log()
    assert "lost.csv" in [n for e in loop.of("catch-up") for n in e["loaded"]]
    assert late < 3 + 15, late
    assert {m.attributes["objectId"] for m in cloud.tapped()} == {"landing/seen.csv"}
    assert cloud.ws.rows_by_file() == {"seen.csv": 4, "lost.csv": 6}


def test_duplicate_and_out_of_order_notifications_change_nothing(cloud: Cloud) -> None:
    loop = cloud.start()
    publisher = cloud.n.pubsub.publisher()
    try:
        g1 = cloud.upload("a.csv", _csv(event_lines(8)))
        loop.wait(lambda: cloud.recorded().get("a.csv", {}).get("generation") == g1, 60, "a.csv v1 loaded")
        g2 = cloud.upload("a.csv", _csv(event_lines(3, start=900)))
        loop.wait(lambda: cloud.recorded().get("a.csv", {}).get("generation") == g2, 60, "a.csv v2 loaded")
        captured = {int(m.attributes["objectGeneration"]): m for m in cloud.tapped() if m.attributes["objectId"] == "landing/a.csv"}
        wait_for(lambda: captured.update({int(m.attributes["objectGeneration"]): m for m in cloud.n.pubsub.pull(cloud.tap)})
                 or set(captured) == {g1, g2}, 30, "both real notifications captured")
        # The real v1 notification again, after v2 (out of order), and v2's twice (duplicates).
        for message in (captured[g1], captured[g2], captured[g2]):
            publisher.publish(cloud.n.topic, message.data, **dict(message.attributes)).result(timeout=30)
        loop.wait(lambda: _acks(loop) >= 3, 60, "the three re-published notifications acknowledged")
    finally:
        assert loop.terminate() == 0, loop.log()
    _acked_everything(loop)
    assert loop.loaded() == ["a.csv", "a.csv"]  # v1 once, v2 once
    assert cloud.recorded()["a.csv"]["generation"] == g2  # v1's late notice did not bring v1 back
    assert cloud.ws.rows_by_file() == {"a.csv": 3}
    assert cloud.ws.query("SELECT DISTINCT _source_generation FROM raw.events") == [(g2,)]


def _caught_up_after_listening(loop: EventsProcess) -> None:
    """The scan the loop runs as soon as it listens again (for what arrived meanwhile) is done."""
    def done() -> bool:
        with loop._lock:
            kinds = [e.get("event") for e in loop.events]
        last = len(kinds) - 1 - kinds[::-1].index("listening")
        return "catch-up" in kinds[last:]

    loop.wait(done, 60, "the catch-up after listening again")


def _acks(loop: EventsProcess) -> int:
    """Arrivals acknowledged as already recorded (from the loop's 'acknowledged' lines)."""
    return sum(e["arrivals"] for e in loop.of("acknowledged"))


def test_sigterm_during_a_load_exits_0_and_the_rest_loads_after_restart(cloud: Cloud) -> None:
    loop = cloud.start(ESTORE_LOAD_BATCH_MB="0")
    expected = {f"big-{i}.csv": 120_000 for i in range(3)}
    for i, name in enumerate(expected):
        cloud.upload(name, _csv(event_lines(120_000, start=i * 1_000_000)))
    marker = cloud.client.bucket(cloud.bucket).blob("state/inflight.json")
    wait_for(marker.exists, 120, "a load in progress (the in-flight marker)", step=0.01)
    loop.proc.send_signal(signal.SIGTERM)
    assert loop.terminate() == 0, loop.log()
    assert cloud.read("run.lock") is None
    done = cloud.ws.rows_by_file()
    assert done and set(done) < set(expected), done
    assert all(done[n] == expected[n] for n in done)
    again = cloud.start()
    try:
        again.wait(lambda: set(cloud.recorded()) == set(expected), 180, "the rest loaded after the restart")
    finally:
        assert again.terminate() == 0, again.log()
    assert cloud.ws.rows_by_file() == expected


def test_kill_9_between_commit_and_ack_then_the_redelivered_message_is_acknowledged(cloud: Cloud) -> None:
    loop = cloud.start(ESTORE_FAULT_POINT="before_ack")
    cloud.upload("a.csv", _csv(event_lines(9)))
    wait_for(lambda: loop.proc.poll() is not None, 120, "the kill before the ack")
    assert loop.proc.returncode == -signal.SIGKILL, loop.log()
    assert "a.csv" in cloud.recorded()  # committed and recorded, not acknowledged
    again = cloud.start()
    try:
        # Pub/Sub delivers the unacknowledged message again once its deadline passes.
        again.wait(lambda: _acks(again) >= 1, 180, "the redelivered notification acknowledged")
    finally:
        assert again.terminate() == 0, again.log()
    assert again.loaded() == []  # nothing loaded twice
    _acked_everything(again)
    assert cloud.ws.rows_by_file() == {"a.csv": 9}


def test_missing_subscription_means_polling_one_alert_and_resubscribing(
    cloud: Cloud, slack: FakeSlack  # noqa: F811
) -> None:
    gone = f"projects/{PROJECT}/subscriptions/missing-{uuid.uuid4().hex[:6]}"
    loop = EventsProcess(cloud.ws.root, "--interval", "1", env=cloud.env(
        ESTORE_NOTIFICATIONS=f"pubsub://{PROJECT}/{gone.rsplit('/', 1)[1]}", SLACK_WEBHOOK_URL=slack.webhook_url))
    try:
        degraded = loop.wait_event("degraded", 120)[0]
        assert "does not exist" in degraded["error"] and "terraform apply" in degraded["error"]
        cloud.upload("polled.csv", _csv(event_lines(5)))
        loop.wait(lambda: "polled.csv" in loop.loaded(), 60, "polled.csv loaded by polling")
        cloud.n.pubsub.subscription(gone.rsplit("/", 1)[1], cloud.n.topic)
        loop.wait_event("listening", 60)
        _caught_up_after_listening(loop)
        cloud.upload("heard.csv", _csv(event_lines(6, start=60)))
        loop.wait(lambda: "heard.csv" in [n for e in loop.of("batch") for n in e["loaded"]], 60, "heard.csv from a notification")
    finally:
        assert loop.terminate() == 0, loop.log()
    assert len(loop.of("degraded")) == 1
    assert len([m for m in slack.messages if "failed" in m]) == 1, slack.messages
    assert len([m for m in slack.messages if "recovered" in m]) == 1, slack.messages
    assert cloud.ws.rows_by_file() == {"polled.csv": 5, "heard.csv": 6}


def test_the_emulator_killed_and_restarted_mid_run(ws: Workspace, tmp_path: Path, slack: FakeSlack) -> None:  # noqa: F811
    """A Pub/Sub outage: the loop notices, polls, alerts once, and listens again when it is back."""
    server, port = start_pubsub_emulator(tmp_path / "pubsub-own.log")
    own = PubSubEmulator(f"127.0.0.1:{port}", server)
    n = _notifying(own, tmp_path / "gcs-root", tmp_path)
    try:
        cloud = Cloud(ws, n)
        loop = cloud.start(SLACK_WEBHOOK_URL=slack.webhook_url)
        try:
            cloud.upload("before.csv", _csv(event_lines(3)))
            loop.wait(lambda: "before.csv" in loop.loaded(), 60, "before.csv")
            server.stop()  # the emulator dies (and forgets its topics and subscriptions)
            loop.wait_event("degraded", 90)
            cloud.upload("during.csv", _csv(event_lines(4, start=100)))  # its notification is lost
            loop.wait(lambda: "during.csv" in loop.loaded(), 60, "during.csv loaded by polling")
            server, _ = start_pubsub_emulator(tmp_path / "pubsub-own-2.log", port=port)
            own.server = server
            own.topic(TOPIC)
            own.subscription(cloud.subscription.rsplit("/", 1)[1], n.topic)
            loop.wait(lambda: len(loop.of("listening")) >= 2, 90, "listening again")
            _caught_up_after_listening(loop)
            cloud.upload("after.csv", _csv(event_lines(5, start=200)))
            loop.wait(lambda: "after.csv" in [x for e in loop.of("batch") for x in e["loaded"]], 60, "after.csv from a notification")
        finally:
            assert loop.terminate() == 0, loop.log()
    finally:
        n.gcs.server.stop()
        n.quiet.server.stop()
        own.server.stop()
    assert len(loop.of("degraded")) == 1
    assert len([m for m in slack.messages if "failed" in m]) == 1, slack.messages
    assert len([m for m in slack.messages if "recovered" in m]) == 1, slack.messages
    assert ws.rows_by_file() == {"before.csv": 3, "during.csv": 4, "after.csv": 5}


@pytest.mark.drill
def test_drill_kill_9_at_random_moments_while_uploads_keep_coming(cloud: Cloud) -> None:
    """Rounds of uploads with the loop SIGKILLed at a random moment and restarted; unacknowledged
    notifications come back, the catch-up scan covers the rest; rows exact at the end."""
    import random

    rng = random.Random(15)
    expected: dict[str, int] = {}
    for round_ in range(5):
        loop = cloud.start()

        def uploader(r: int = round_) -> None:
            for i in range(15):
                name = f"r{r}/f{i:03d}.csv"
                rows = 3 + (i * 5 + r) % 30
                cloud.upload(name, _csv(event_lines(rows, start=r * 10_000 + i * 100)))
                expected[name] = rows

        loop.kill_during(uploader, rng.uniform(0.5, 3.0))
    final = cloud.start()
    try:
        final.wait(lambda: set(cloud.recorded()) >= set(expected), 300, "every upload recorded")
    finally:
        assert final.terminate() == 0, final.log()
    assert cloud.ws.rows_by_file() == expected
    print(f"\nevents drill (GCP emulators): 5 kill -9 rounds, {len(expected)} files, {sum(expected.values())} rows exact")
