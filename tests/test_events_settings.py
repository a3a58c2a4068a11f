"""watch --events: its settings, which source it picks, and the transform schedule (a fake clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from estore_ops.config import load_settings
from estore_ops.errors import ConfigError, ExitCode
from estore_ops.ingest.events import loop as loop_mod
from estore_ops.ingest.events.base import Arrival, ArrivalSource
from estore_ops.ingest.events.loop import EventLoop, open_source, version_recorded
from estore_ops.ingest.pipeline import LoadResult
from estore_ops.runtime import Runtime
from estore_ops.ingest.state import IngestState
from tests.helpers import Workspace


def _settings(tmp_path: Path, env: dict[str, str] | None = None, flags: dict[str, Any] | None = None) -> Any:
    return load_settings(flags or {}, env=env or {}, cwd=tmp_path)


def test_notifications_setting_precedence_flag_env_file(tmp_path: Path) -> None:
    (tmp_path / "estore-ops.toml").write_text('notifications = "pubsub://file-project/from-file"\n')
    assert _settings(tmp_path).notifications == "pubsub://file-project/from-file"
    env = {"ESTORE_NOTIFICATIONS": "pubsub://env-project/from-env"}
    assert _settings(tmp_path, env).notifications == "pubsub://env-project/from-env"
    flagged = _settings(tmp_path, env, {"notifications": "pubsub://flag-project/from-flag"})
    assert flagged.notifications == "pubsub://flag-project/from-flag"
    assert flagged.sources["notifications"] == "flag --notifications"
    (tmp_path / "none").mkdir()
    defaults = _settings(tmp_path / "none")
    assert (defaults.gather_window, defaults.catchup_interval, defaults.transform_min_interval) == (1.0, 600, 900)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("projects/p/subscriptions/s", "not a Pub/Sub subscription"),
        ("gs://bucket/landing", "not a Pub/Sub subscription"),
        ("pubsub://Bad_Project/subs", "is not a project id"),
        ("pubsub://my-project/ab", "is not a subscription name"),
        ("pubsub://my-project/goog-sub", "is not a subscription name"),
        ("pubsub://my-project/a/b", "is not a subscription name"),
    ],
)
def test_malformed_notifications_are_refused_with_the_form_to_use(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _settings(tmp_path, {"ESTORE_NOTIFICATIONS": value})
    assert "pubsub://PROJECT/SUBSCRIPTION" in str(info.value) and "ESTORE_NOTIFICATIONS" in str(info.value)


def test_source_follows_the_landing_area(tmp_path: Path) -> None:
    local = Runtime(_settings(tmp_path))
    assert type(open_source(local)).__name__ == "FolderSource"
    with pytest.raises(ConfigError, match="applies to a gs:// landing"):
        open_source(Runtime(_settings(tmp_path, {"ESTORE_NOTIFICATIONS": "pubsub://my-project/estore-sub"})))
    gcs = {"ESTORE_LANDING": "gs://bucket/landing", "ESTORE_STATE": "gs://bucket/state"}
    with pytest.raises(ConfigError, match="needs the Pub/Sub subscription"):
        open_source(Runtime(_settings(tmp_path, gcs)))
    source = open_source(Runtime(_settings(tmp_path, {**gcs, "ESTORE_NOTIFICATIONS": "pubsub://my-project/estore-sub"})))
    assert source.description == "Pub/Sub subscription projects/my-project/subscriptions/estore-sub"


def test_cli_refuses_events_with_once_and_a_catch_up_slower_than_the_health_check(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    both = ws.cli("watch", "--events", "--once")
    assert both.exit_code == ExitCode.USAGE and "--events runs until stopped" in both.output
    monkeypatch.setenv("ESTORE_CATCHUP_INTERVAL", "900")
    slow = ws.cli("watch", "--events")
    assert slow.exit_code == ExitCode.USAGE
    assert "catchup_interval (900 s, from env ESTORE_CATCHUP_INTERVAL) must be shorter than health_ingest_max_age" in slow.output


def test_an_older_or_equal_generation_is_already_recorded() -> None:
    state = IngestState()
    state.record_success("a.csv", 200, 1, 1, "r")
    state.record_failure("bad.csv", 50, 1, "boom", "r", 3)
    state.folded["old.csv"] = 10
    assert version_recorded(state, "a.csv", 100) and version_recorded(state, "a.csv", 200)
    assert not version_recorded(state, "a.csv", 201)
    assert version_recorded(state, "bad.csv", 50)  # a recorded failure: the catch-up scan retries it
    assert version_recorded(state, "old.csv", 10) and not version_recorded(state, "old.csv", 11)
    assert not version_recorded(state, "new.csv", 1)


# -- the transform schedule ---------------------------------------------------------------------------


class _Silent(ArrivalSource):
    description = "test"

    def start(self) -> None: ...
    def get(self, timeout: float) -> list[Arrival]: return []
    def check(self) -> None: ...
    def stop(self) -> None: ...


class _Result:
    ok, elapsed = True, 0.1


def test_transforms_after_a_pause_and_at_most_every_min_interval_while_files_keep_coming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    runs: list[float] = []

    def transform(rt: Any) -> _Result:
        runs.append(now[0])
        return _Result()

    monkeypatch.setattr(loop_mod.jobs, "transform", transform)
    settings = _settings(tmp_path, {"ESTORE_TRANSFORM_MIN_INTERVAL": "900", "ESTORE_TRANSFORM_QUIET_PERIOD": "60"})
    loop = EventLoop(Runtime(settings), _Silent(), 300, should_stop=lambda: False, wait=lambda t: None, clock=lambda: now[0])

    def load_at(t: float) -> None:
        now[0] = t
        loop.last_load = t
        loop.due_since = loop.due_since if loop.due_since is not None else t

    def tick_until(t: float) -> None:
        while now[0] < t:
            now[0] += 5
            loop._maybe_transform(now[0])
            # The loop sleeps until the next transform is due: that moment is never in the past
            # (it would spin), whether a transform just ran or is held back.
            at = loop._transform_at(now[0])
            assert at is None or at > now[0], (now[0], at)

    # A burst, then a pause: one transform, a quiet period after the last load.
    for t in (1000, 1002, 1010):
        load_at(t)
        loop._maybe_transform(t)
    assert runs == []
    tick_until(1100)
    assert runs == [1070]
    # A steady stream (a file every 30 s, never a 60 s pause) for an hour: one per min_interval.
    runs.clear()
    for t in range(1200, 4800, 30):
        load_at(t)
        tick_until(t + 30)
    assert len(runs) == 4 and all(b - a >= 900 for a, b in zip(runs, runs[1:])), runs
    # A trickle with pauses longer than the quiet period: the quiet transform at most once per min_interval.
    runs.clear()
    for t in range(5000, 8600, 120):
        load_at(t)
        tick_until(t + 120)
    window = [r for r in runs if r < 5000 + 900]
    assert len(window) <= 2 and len(runs) <= 2 * (3600 // 900) + 1, runs


# -- the catch-up schedule ----------------------------------------------------------------------------


def test_catch_up_scans_start_every_interval_however_long_each_takes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost notification waits at most catchup_interval for the scan that picks the file up: scans
    start on a cadence measured from the start of the previous one, not from its end (a scan that
    lists and loads for 25 s must not make the next one start 25 s late)."""
    now = [1000.0]
    starts: list[float] = []
    durations = iter([25.0, 1.0, 45.0, 1.0, 1.0])  # 45 s: longer than the interval itself

    def scan(rt: Any, files: Any = (), **kwargs: Any) -> LoadResult:
        starts.append(now[0])
        now[0] += next(durations, 1.0)
        return LoadResult(rt.run_id)

    class Idle(_Silent):
        def get(self, timeout: float) -> list[Arrival]:
            now[0] += timeout  # nothing arrives: the loop sleeps until its next wake-up
            return []

    monkeypatch.setattr(loop_mod.jobs, "ingest_arrivals", scan)
    lines: list[dict[str, Any]] = []
    loop = EventLoop(Runtime(_settings(tmp_path, {"ESTORE_CATCHUP_INTERVAL": "30"})), Idle(), 300,
                     should_stop=lambda: len(starts) >= 6, wait=lambda t: None,
                     on_line=lambda line, data: lines.append(data), clock=lambda: now[0])
    assert loop.run() == 0
    assert starts == [1000, 1030, 1060, 1105, 1120, 1150]  # the 45 s scan: the next one at once
    # Each scan says when it started (wall clock), so its delay after a file landed can be measured.
    said = [e for e in lines if e["event"] == "catch-up"]
    assert len(said) == 6 and all(e["started_at"].endswith("+00:00") for e in said)


def test_pubsub_refusals_say_which_role_or_resource_is_missing() -> None:
    """The emulator has no IAM: the answers of the real service are the client library's own
    exception classes for PERMISSION_DENIED / NOT_FOUND / UNAVAILABLE
    (https://cloud.google.com/pubsub/docs/reference/error-codes)."""
    pytest.importorskip("google.cloud.pubsub_v1", reason="the gcp extra is not installed")
    from google.api_core import exceptions as gexc

    from estore_ops.ingest.events.pubsub import PubSubSource

    source = PubSubSource("pubsub://my-project/estore-sub", "gs://bucket/landing")
    denied = source._translate(gexc.PermissionDenied("User not authorized to perform this action."), "pull messages")
    assert "roles/pubsub.subscriber" in str(denied) and "projects/my-project/subscriptions/estore-sub" in str(denied)
    missing = source._translate(gexc.NotFound("Resource not found (resource=estore-sub)."), "read the subscription")
    assert "does not exist" in str(missing) and "terraform apply" in str(missing)
    down = source._translate(gexc.ServiceUnavailable("failed to connect to all addresses"), "read the subscription")
    assert "Pub/Sub did not answer" in str(down)
    for error in (denied, missing, down):
        assert error.exit_code == ExitCode.BACKEND


def test_pubsub_leases_are_extended_a_minute_at_a_time_so_a_crash_costs_at_most_a_minute() -> None:
    """Left to itself, google-cloud-pubsub extends a lease by the 99th percentile of past ack delays
    (up to 600 s): after slow loads, a crash would hold the notification back for minutes.
    `max_duration_per_lease_extension` "bounds the delay before a message redelivery if the
    subscriber fails to extend the deadline" (https://cloud.google.com/pubsub/docs/lease-management)."""
    pytest.importorskip("google.cloud.pubsub_v1", reason="the gcp extra is not installed")
    from estore_ops.ingest.events.pubsub import PubSubSource

    class Client:
        flow: Any = None

        def get_subscription(self, **kwargs: Any) -> None: ...

        def subscribe(self, path: str, callback: Any, flow_control: Any) -> Any:
            Client.flow = flow_control
            return None

    source = PubSubSource("pubsub://my-project/estore-sub", "gs://bucket/landing")
    source._new_client = Client  # type: ignore[method-assign]  # a fake client factory, the test's point
    source.start()
    assert Client.flow.max_duration_per_lease_extension == PubSubSource.max_lease_extension_seconds == 60
    assert Client.flow.max_lease_duration == PubSubSource.max_lease_seconds
