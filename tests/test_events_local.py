"""`watch --events` on the embedded default: inotify through watchfiles, DuckDB, real processes.

Every scenario ends with the exact rows of every file. Waits are on what the loop reports (its
JSON lines), the state document or the process, each with a deadline; nothing sleeps and hopes.
Long versions (more files, more rounds) run under `make drill`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from estore_ops.config import load_settings
from estore_ops.ingest.events import folder as folder_mod
from estore_ops.ingest.events.base import Arrival
from estore_ops.ingest.events.folder import FolderSource, open_for_writing
from estore_ops.ingest.events.loop import EventLoop
from estore_ops.runtime import Runtime
from tests.events_helpers import EventsProcess, wait_for
from tests.helpers import HEADER, Workspace, clean_env, event_lines, write_csv
from tests.slack_server import FakeSlack, slack  # noqa: F401 - fixture

# Fast loop for tests: short gathering window, no transform unless a test asks for one.
FAST = {"ESTORE_GATHER_WINDOW": "0.3", "ESTORE_TRANSFORM_QUIET_PERIOD": "3600", "ESTORE_TRANSFORM_MIN_INTERVAL": "3600"}


def _state(ws: Workspace) -> dict[str, Any]:
    path = ws.state / "cursor.json"
    return json.loads(path.read_text()) if path.exists() else {"files": {}, "folded": {}}


def _recorded(ws: Workspace) -> dict[str, Any]:
    return {n: r for n, r in _state(ws)["files"].items() if r["status"] == "loaded"}


def _runs(ws: Workspace) -> list[dict[str, Any]]:
    path = ws.state / "runs.json"
    return json.loads(path.read_text()) if path.exists() else []


def _start(ws: Workspace, *args: str, **env: str) -> EventsProcess:
    loop = EventsProcess(ws.root, "--interval", "1", *args, env={**FAST, **env})
    loop.wait_event("listening", 120)
    loop.wait_event("catch-up", 120)
    return loop


def _write_burst(ws: Workspace, count: int, rows: int = 7) -> dict[str, int]:
    expected = {}
    for i in range(count):
        name = f"burst/{i:04d}.csv"
        ws.add(name, event_lines(rows + i % 3, start=i * 100))
        expected[name] = rows + i % 3
    return expected


@pytest.mark.parametrize("count", [pytest.param(40, id="40-files"), pytest.param(400, id="400-files", marks=pytest.mark.drill)])
def test_a_burst_loads_in_a_few_batches_then_one_transform_after_the_pause(ws: Workspace, count: int) -> None:
    loop = _start(ws, ESTORE_TRANSFORM_QUIET_PERIOD="2", ESTORE_GATHER_WINDOW="1")  # the default window
    try:
        expected = _write_burst(ws, count)
        loop.wait(lambda: set(loop.loaded()) == set(expected), 180, f"{count} files loaded")
        transform = loop.wait_event("transform", 300)[0]
        assert transform["ok"] is True, loop.log()
    finally:
        code = loop.terminate()
    assert code == 0, loop.log()
    assert ws.rows_by_file() == expected
    batches = [e for e in loop.of("batch") if e["files_loaded"]]
    # Gathered: a burst is a few transactions, not one per file.
    assert len(batches) <= max(5, count // 40), [b["files_loaded"] for b in batches]
    assert sorted(loop.loaded()) == sorted(expected)  # each file loaded once
    assert len(loop.of("transform")) == 1
    assert [r["job"] for r in _runs(ws)].count("transform") == 1
    assert ws.query("SELECT count(*) FROM marts.fct_events") == [(sum(expected.values()),)]


def test_a_file_written_slowly_loads_only_once_complete(ws: Workspace) -> None:
    loop = _start(ws)
    path = ws.landing / "slow.csv"
    lines = event_lines(60)
    try:
        with open(path, "w", encoding="utf-8") as fh:  # written in place, not renamed: the hard case
            fh.write(HEADER + "\n")
            for chunk in range(6):
                fh.writelines(line + "\n" for line in lines[chunk * 10:(chunk + 1) * 10])
                fh.flush()
                if chunk == 1:
                    # The loop saw the file, found it open for writing, and left it alone.
                    loop.wait_event("incomplete", 60, where=lambda e: e["file"] == "slow.csv")
                # Several gathering windows and rechecks pass while the writer is still busy.
                t0 = time.monotonic()
                wait_for(lambda: time.monotonic() - t0 > 0.4, 5, "the writer's pause")
                assert "slow.csv" not in _recorded(ws) and "slow.csv" not in loop.loaded()
        loop.wait(lambda: "slow.csv" in loop.loaded(), 60, "slow.csv loaded after the writer closed it")
    finally:
        assert loop.terminate() == 0, loop.log()
    assert ws.rows_by_file() == {"slow.csv": 60}
    assert loop.loaded() == ["slow.csv"]
    assert _recorded(ws)["slow.csv"]["attempts"] == 1


def test_a_lost_notification_is_loaded_by_the_catch_up_scan(ws: Workspace) -> None:
    loop = _start(ws, ESTORE_DROP_POINT="arrival@lost.csv", ESTORE_CATCHUP_INTERVAL="3")
    try:
        ws.add("seen.csv", event_lines(4))
        landed = time.monotonic()
        ws.add("lost.csv", event_lines(6, start=50))
        loop.wait(lambda: {"seen.csv", "lost.csv"} <= set(loop.loaded()), 60, "both files loaded")
        late = time.monotonic() - landed
        # The catch-up scans are the loop's heartbeat: `health` sees ingest fresh while it runs.
        before = json.loads((ws.state / "heartbeats.json").read_text())["ingest"]["at"]
        loop.wait(lambda: json.loads((ws.state / "heartbeats.json").read_text())["ingest"]["at"] > before, 30,
                  "a heartbeat from the next catch-up scan, with nothing new")
        checks = {c["check"]: c for c in json.loads(ws.run("health", "--json").stdout)["checks"]}
        assert checks["ingest"]["stale"] is False and checks["ingest"]["age_seconds"] < 10
    finally:
        assert loop.terminate() == 0, loop.log()
    assert "seen.csv" in [n for e in loop.of("batch") for n in e["loaded"]]
    assert "lost.csv" in [n for e in loop.of("catch-up") for n in e["loaded"]]  # only the scan found it
    assert late < 3 + 15, late  # catchup_interval, plus the load on a busy machine
    assert ws.rows_by_file() == {"seen.csv": 4, "lost.csv": 6}


def test_sigterm_during_a_load_finishes_the_file_and_exits_0(ws: Workspace) -> None:
    loop = _start(ws, ESTORE_LOAD_BATCH_MB="0")
    expected = {f"big-{i}.csv": 150_000 for i in range(3)}
    for i, name in enumerate(expected):
        ws.add(name, event_lines(150_000, start=i * 1_000_000))
    inflight = ws.state / "inflight.json"
    wait_for(inflight.exists, 120, "a load in progress (the in-flight marker)", step=0.005)
    loop.proc.send_signal(signal.SIGTERM)
    code = loop.terminate()
    assert code == 0, loop.log()
    assert not (ws.state / "run.lock").exists()
    done = ws.rows_by_file()
    assert done and set(done) < set(expected), done  # the file in progress finished, the rest did not start
    assert all(done[name] == expected[name] for name in done)
    assert set(_recorded(ws)) == set(done)  # what committed is recorded

    again = _start(ws)
    try:
        again.wait(lambda: set(_recorded(ws)) == set(expected), 180, "the rest loaded after the restart")
    finally:
        assert again.terminate() == 0, again.log()
    assert ws.rows_by_file() == expected


@pytest.mark.parametrize("point", ["after_commit", "after_state_write", "before_ack"])
def test_kill_9_between_commit_and_acknowledgement_then_restart_gives_exact_rows(ws: Workspace, point: str) -> None:
    loop = _start(ws, ESTORE_FAULT_POINT=point)
    ws.add("a.csv", event_lines(11))
    wait_for(lambda: loop.proc.poll() is not None, 120, f"the kill at {point}")
    assert loop.proc.returncode == -signal.SIGKILL, loop.log()
    ws.add("b.csv", event_lines(5, start=500))  # arrives while the loop is down
    again = _start(ws)
    try:
        again.wait(lambda: {"a.csv", "b.csv"} <= set(_recorded(ws)), 120, "both files recorded after the restart")
    finally:
        assert again.terminate() == 0, again.log()
    assert ws.rows_by_file() == {"a.csv": 11, "b.csv": 5}


def test_when_the_folder_cannot_be_watched_it_polls_alerts_once_and_recovers(
    ws: Workspace, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    ws.landing.mkdir(parents=True)
    loop = _start(ws)
    try:
        ws.add("before.csv", event_lines(3))
        loop.wait(lambda: "before.csv" in loop.loaded(), 60, "before.csv")
        # The landing folder is replaced (an operator's `mv`, a remount): the OS watch is gone.
        os.rename(ws.landing, ws.root / "data" / "landing-old")
        ws.landing.mkdir()
        loop.wait_event("degraded", 60)
        ws.add("during.csv", event_lines(4, start=100))
        loop.wait(lambda: "during.csv" in loop.loaded(), 60, "during.csv loaded")
        loop.wait(lambda: len(loop.of("listening")) >= 2, 60, "listening again")
        ws.add("after.csv", event_lines(5, start=200))
        loop.wait(lambda: "after.csv" in loop.loaded(), 60, "after.csv")
    finally:
        assert loop.terminate() == 0, loop.log()
    assert len(loop.of("degraded")) == 1
    failures = [m for m in slack.messages if "failed" in m]
    recoveries = [m for m in slack.messages if "recovered" in m]
    assert len(failures) == 1 and "watch --events notifications" in failures[0], slack.messages
    assert len(recoveries) == 1, slack.messages
    assert ws.rows_by_file() == {"before.csv": 3, "during.csv": 4, "after.csv": 5}


# -- in-process: duplicates and out-of-order arrivals ------------------------------------------------


class _Replaying(FolderSource):
    """The real folder source, plus every arrival delivered twice and earlier ones replayed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []
        self.replay: list[Arrival] = []

    def get(self, timeout: float) -> list[Arrival]:
        real = super().get(timeout)
        out = [Arrival(a.name) for a in real for _ in range(2)] + self.replay
        self.replay = []
        self.seen += [a.name for a in real]
        return out


def _in_process_loop(ws: Workspace, source_cls: type[FolderSource] = _Replaying) -> tuple[EventLoop, threading.Event, list[dict[str, Any]]]:
    env = clean_env(FAST, ESTORE_LOG_FORMAT="json")
    rt = Runtime(load_settings({}, env=env, cwd=ws.root))
    stop = threading.Event()
    lines: list[dict[str, Any]] = []
    loop = EventLoop(rt, source_cls(rt.landing), 1.0, should_stop=stop.is_set, wait=stop.wait,
                     on_line=lambda line, data: lines.append(data))
    return loop, stop, lines


def test_duplicate_and_out_of_order_arrivals_load_each_version_once(ws: Workspace) -> None:
    ws.landing.mkdir(parents=True)
    loop, stop, lines = _in_process_loop(ws)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: any(e["event"] == "listening" for e in lines), 60, "listening")
        ws.add("a.csv", event_lines(8))
        wait_for(lambda: "a.csv" in _recorded(ws), 60, "a.csv v1")
        v1 = _recorded(ws)["a.csv"]["generation"]
        ws.add("a.csv", event_lines(3, start=900))  # v2 renamed over v1
        wait_for(lambda: _recorded(ws).get("a.csv", {}).get("generation", v1) != v1, 60, "a.csv v2")
        # Late copies of the v1 arrival and of v2's, after v2 is loaded.
        batches = len([e for e in lines if e["event"] == "batch"])
        loop.source.replay = [Arrival("a.csv"), Arrival("a.csv")]  # type: ignore[attr-defined]  # the test's _Replaying source
        wait_for(lambda: len([e for e in lines if e["event"] == "batch"]) > batches, 60, "the replayed arrivals handled")
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    loaded = [n for e in lines if e["event"] in ("batch", "catch-up") for n in e.get("loaded", [])]
    assert loaded == ["a.csv", "a.csv"]  # v1 once, v2 once: duplicates and replays loaded nothing
    assert ws.rows_by_file() == {"a.csv": 3}
    assert ws.query("SELECT DISTINCT _source_generation FROM raw.events") == [(_recorded(ws)["a.csv"]["generation"],)]


class _Message:
    """A Pub/Sub message as the loop sees it: only `ack()`."""

    def __init__(self) -> None:
        self.acks = 0

    def ack(self) -> None:
        self.acks += 1


class _Redelivering(FolderSource):
    """The folder source, plus one queued notification (with its generation, like Pub/Sub's) handed
    out by the very first `get`: a redelivery that reaches a restarted loop before its first scan."""

    redelivered: Arrival | None = None

    def get(self, timeout: float) -> list[Arrival]:
        first, self.redelivered = self.redelivered, None
        return [first] if first else super().get(timeout)


def test_a_redelivery_found_by_the_start_up_scan_is_acknowledged_and_said(ws: Workspace) -> None:
    """A message redelivered after a kill -9 between commit and ack can be waiting when the loop
    starts: the start-up catch-up scan finds the file recorded, and the arrival is acknowledged
    and reported exactly like one acknowledged by a batch."""
    ws.add("a.csv", event_lines(9))
    assert ws.run("load").returncode == 0
    generation = _recorded(ws)["a.csv"]["generation"]
    message = _Message()
    loop, stop, lines = _in_process_loop(ws, _Redelivering)
    loop.source.redelivered = Arrival("a.csv", generation, message=message)  # type: ignore[attr-defined]  # _Redelivering's own field, not PubSubSource's
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: any(e["event"] == "catch-up" for e in lines), 60, "the start-up catch-up scan")
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert message.acks == 1
    acknowledged = [e for e in lines if e["event"] == "acknowledged"]
    assert [(e["files"], e["arrivals"]) for e in acknowledged] == [(["a.csv"], 1)], lines
    assert [n for e in lines if e["event"] in ("batch", "catch-up") for n in e.get("loaded", [])] == []
    assert ws.rows_by_file() == {"a.csv": 9}


# -- completeness -------------------------------------------------------------------------------------


def test_open_for_writing_is_told_by_the_kernel(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    with open(path, "w") as fh:
        fh.write("x")
        assert open_for_writing(path) == folder_mod.OPEN_FOR_WRITING
        with open(path) as reader:  # a reader does not count
            reader.read()
            assert open_for_writing(path) == folder_mod.OPEN_FOR_WRITING
    assert open_for_writing(path) == folder_mod.NOT_OPEN
    with open(path):
        assert open_for_writing(path) == folder_mod.NOT_OPEN


def test_without_leases_a_file_is_complete_once_it_settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from estore_ops.backends.stores.local import LocalFolderStore

    monkeypatch.setattr(folder_mod, "open_for_writing", lambda path: folder_mod.UNKNOWN)  # not the owner, NFS
    monkeypatch.setattr(folder_mod, "SETTLE_SECONDS", 0.5)
    source = FolderSource(LocalFolderStore(tmp_path))
    path = write_csv(tmp_path / "a.csv", event_lines(2))
    assert not source.complete("a.csv")
    os.utime(path, (0, 0))  # an old mtime (cp -p) is not enough: ctime says it just changed
    assert not source.complete("a.csv")
    wait_for(lambda: source.complete("a.csv"), 10, "the file settled")


# -- systemd readiness and watchdog ------------------------------------------------------------------


def test_readiness_watchdog_and_stopping_are_sent_to_systemd(ws: Workspace, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.2)
    received: list[str] = []
    everything: list[str] = []

    def receive(until: str, timeout: float) -> None:
        def got() -> bool:
            try:
                lines = sock.recv(4096).decode().splitlines()
            except TimeoutError:
                lines = []
            received.extend(lines)
            everything.extend(lines)
            return until in received

        wait_for(got, timeout, f"{until} from the loop", step=0)

    loop = EventsProcess(ws.root, "--interval", "1", env={**FAST, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
    try:
        receive("READY=1", 120)
        received.clear()
        receive("WATCHDOG=1", 10)
        loop.proc.send_signal(signal.SIGTERM)
        receive("STOPPING=1", 60)
    finally:
        assert loop.terminate() == 0, loop.log()
        sock.close()
    assert any(line.startswith("STATUS=listening on file notifications (inotify)") for line in everything), everything


@pytest.mark.drill
def test_drill_kill_9_at_random_moments_while_files_keep_arriving(ws: Workspace) -> None:
    """Rounds of: files arriving in place and renamed, the loop SIGKILLed at a random moment,
    restarted. At the end every file's rows are exact (none lost, none duplicated)."""
    import random

    rng = random.Random(15)
    expected: dict[str, int] = {}
    ws.landing.mkdir(parents=True)
    for round_ in range(8):
        loop = _start(ws, ESTORE_LOAD_BATCH_MB=rng.choice(["0", "256"]))
        pauses = [rng.uniform(0, 0.08) for _ in range(25)]

        def writer(r: int = round_) -> None:
            for i, pause in enumerate(pauses):
                name = f"r{r}/f{i:03d}.csv"
                rows = 5 + (i * 7 + r) % 40
                ws.add(name, event_lines(rows, start=r * 10_000 + i * 100))
                expected[name] = rows
                t0 = time.monotonic()
                wait_for(lambda: time.monotonic() - t0 >= pause, 5, "the producer's pause", step=0.01)

        loop.kill_during(writer, rng.uniform(0.2, 2.5))
    final = _start(ws)
    try:
        final.wait(lambda: set(_recorded(ws)) >= set(expected), 300, "every file recorded")
    finally:
        assert final.terminate() == 0, final.log()
    assert ws.rows_by_file() == expected
    print(f"\nevents drill (local): 8 kill -9 rounds, {len(expected)} files, {sum(expected.values())} rows exact")
