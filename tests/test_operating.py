"""Unattended operation: watch as a real process, health episodes, run history, secrets never shown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from estore_ops.errors import ExitCode
from tests.helpers import HEADER, Workspace, event_lines
from tests.slack_server import FakeSlack, slack  # noqa: F401 - fixture


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _runs(ws: Workspace) -> list[dict]:  # type: ignore[type-arg]
    path = ws.state / "runs.json"
    return json.loads(path.read_text()) if path.exists() else []


def test_watch_loads_new_files_transforms_once_per_loading_tick_and_stops_on_sigterm(ws: Workspace) -> None:
    ws.add("2019-Oct.csv", event_lines(30))
    proc = subprocess.Popen(
        [sys.executable, "-m", "estore_ops", "watch", "--interval", "0.5"], cwd=ws.root,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "ESTORE_LOG_FORMAT": "json"},
    )
    try:
        def transformed_ticks() -> list[dict]:  # type: ignore[type-arg]
            return [r for r in _runs(ws) if r["job"] == "watch" and r["status"] == "success" and r["dbt_nodes"]]

        _wait_for(lambda: len(transformed_ticks()) >= 1, 180, "the first loading tick with its transform")
        ws.add("2019-Nov.csv", event_lines(20, start=500))
        ws.add("2019-Dec.csv.gz", event_lines(10, start=900))
        # (the warehouse is not opened here: DuckDB allows one process, and watch is it)
        _wait_for(lambda: sum(t["files_loaded"] for t in transformed_ticks()) == 3 and len(transformed_ticks()) >= 2,
                  180, "the second loading tick")
        # Let at least one idle tick pass, then stop.
        n = len(_runs(ws))
        _wait_for(lambda: len(_runs(ws)) > n, 60, "an idle tick")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert not (ws.state / "run.lock").exists()
    assert ws.rows_by_file() == {"2019-Oct.csv": 30, "2019-Nov.csv": 20, "2019-Dec.csv.gz": 10}
    ticks = [r for r in _runs(ws) if r["job"] == "watch"]
    for tick in ticks:
        # One dbt build per tick that loaded files (however many), none on idle ticks.
        assert bool(tick["dbt_nodes"]) == (tick["files_loaded"] > 0), tick
    assert sum(t["files_loaded"] for t in ticks) == 3
    assert "file(s) loaded" in out
    assert "stopped by SIGTERM" in err
    assert ws.query("SELECT count(*) FROM marts.fct_events") == [(60,)]


def test_watch_once_exit_code_is_the_tick_outcome(ws: Workspace) -> None:
    ws.add("bad.csv", event_lines(2), header=HEADER.replace("price", "cost"))
    failed = ws.run("watch", "--once")
    assert failed.returncode == ExitCode.FAILED
    assert "tick" in failed.stdout and "1 failed" in failed.stdout


def _beats(ws: Workspace, **ages: float | None) -> None:
    now = datetime.now(timezone.utc)
    doc = {k: {"at": (now - timedelta(seconds=v)).isoformat(), "run_id": f"r-{k}"} for k, v in ages.items() if v is not None}
    ws.state.mkdir(parents=True, exist_ok=True)
    (ws.state / "heartbeats.json").write_text(json.dumps(doc))


def test_health_exit_codes_and_one_alert_per_stale_episode(
    ws: Workspace, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    _beats(ws, ingest=60, transform=3600, snapshot=86400)
    fresh = ws.cli("health", "--json")
    assert fresh.exit_code == 0 and json.loads(fresh.stdout)["healthy"] is True
    assert slack.requests == []

    _beats(ws, ingest=16 * 60, transform=3600, snapshot=86400)  # the 5-minute timer stopped firing
    stale = ws.cli("health")
    assert stale.exit_code == ExitCode.UNHEALTHY
    assert "error: stale: ingest" in stale.output
    assert len(slack.messages) == 1 and "pipeline is stale" in slack.messages[0] and "*ingest*" in slack.messages[0]
    assert ws.cli("health").exit_code == ExitCode.UNHEALTHY
    assert len(slack.messages) == 1  # same episode: no second alert

    _beats(ws, ingest=10, transform=3600, snapshot=86400)
    assert ws.cli("health").exit_code == 0
    assert len(slack.messages) == 2 and "fresh again: ingest" in slack.messages[1]

    _beats(ws, ingest=10, transform=27 * 3600, snapshot=86400)  # a new episode, another check
    assert ws.cli("health").exit_code == ExitCode.UNHEALTHY
    assert len(slack.messages) == 3 and "*transform*" in slack.messages[2]


def test_health_thresholds_are_configurable(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _beats(ws, ingest=120, transform=60, snapshot=60)
    monkeypatch.setenv("ESTORE_HEALTH_INGEST_MAX_AGE", "60")
    assert ws.cli("health").exit_code == ExitCode.UNHEALTHY
    monkeypatch.setenv("ESTORE_HEALTH_INGEST_MAX_AGE", "600")
    assert ws.cli("health").exit_code == 0


def test_runs_lists_and_shows_what_happened(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(5))
    ws.add("bad.csv", event_lines(2), header="x,y")
    load = json.loads(ws.cli("load", "--json").stdout)
    listing = json.loads(ws.cli("runs", "--json").stdout)
    assert listing[0]["run_id"] == load["run_id"] and listing[0]["status"] == "failed"
    assert listing[0]["files_loaded"] == 1 and listing[0]["files_failed"] == 1 and listing[0]["rows_loaded"] == 5
    assert 0 < listing[0]["seconds"] < 60  # a sub-second run has a duration, not 0
    detail = ws.cli("runs", "show", load["run_id"][:22])
    assert detail.exit_code == 0
    assert "FAILED bad.csv: bad.csv, line 1: header has missing column(s)" in detail.output
    assert json.loads(ws.cli("runs", "--status", "success", "--json").stdout) == []
    missing = ws.cli("runs", "show", "nope")
    assert missing.exit_code == 2 and "no run with id 'nope'" in missing.output


def test_run_history_is_bounded(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTORE_RUNS_KEEP", "3")
    for _ in range(5):
        assert ws.cli("load").exit_code == 0
    assert len(json.loads((ws.state / "runs.json").read_text())) == 3


SECRET_TOKEN = "xoxb-9999999999-SUPERSECRETTOKENVALUE"
SECRET_HOOK = "https://hooks.slack.com/services/T1/B2/SECRETHOOKPART"


@pytest.mark.parametrize(
    "args",
    [
        ["config"], ["config", "--json"], ["scan"], ["scan", "--json"], ["load"], ["load", "--json"],
        ["cursor", "show"], ["cursor", "show", "--json"], ["runs"], ["runs", "--json"], ["health", "--json"],
        ["lock", "show", "--json"], ["--verbose", "--log-format", "json", "load"], ["--debug", "load", "--file", "missing.csv"],
        ["alert", "test"], ["systemd", "install", "--dry-run"],
    ],
)
def test_secrets_never_appear_in_output_or_logs(ws: Workspace, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET_TOKEN)
    monkeypatch.setenv("ESTORE_SLACK_CHANNEL", "#x")
    monkeypatch.setenv("ESTORE_SLACK_API_URL", "http://127.0.0.1:9/api/")  # discard port: delivery fails fast
    monkeypatch.setenv("SLACK_WEBHOOK_URL", SECRET_HOOK)
    ws.add("bad.csv", event_lines(2), header="x,y")
    result = ws.run(*args)
    for secret in ("SUPERSECRETTOKENVALUE", "SECRETHOOKPART"):
        assert secret not in result.stdout and secret not in result.stderr, args
    for path in ws.state.glob("*"):
        if path.is_file():
            assert "SUPERSECRET" not in path.read_text(errors="replace")


def test_watch_keeps_going_after_a_crashed_tick(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick that raises something unexpected is recorded, and the loop carries on."""
    from estore_ops import jobs
    from estore_ops.config import load_settings
    from estore_ops.runtime import Runtime
    from estore_ops.ingest.watch import watch

    calls = {"n": 0}
    real_tick = jobs.ingest_tick

    def flaky_tick(rt: Runtime, should_stop=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk on fire")
        return real_tick(rt, should_stop)

    monkeypatch.setattr(jobs, "ingest_tick", flaky_tick)
    ws.add("a.csv", event_lines(3))
    lines: list[str] = []
    code = watch(lambda: Runtime(load_settings(env={}, cwd=ws.root)), interval=0, on_tick=lambda line, _r: lines.append(line), max_ticks=2)
    assert calls["n"] == 2
    assert "FAILED RuntimeError: disk on fire" in lines[0]
    assert "1 file(s) loaded" in lines[1] and code == 0
