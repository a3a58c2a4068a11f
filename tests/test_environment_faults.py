"""A fault of the machine is never blamed on a file.

A full disk under the warehouse, a read-only or unwritable data folder, DuckDB running out of memory,
another program holding the database: the run stops with exit 4, the message names the path and
what to free or fix, no attempt is counted against any file (nothing is ever quarantined for it),
one alert goes out per episode, `health` reports a load failing for that reason for longer than its
threshold, and the next run after the fix loads everything. Real faults throughout: a tmpfs that is
really full, a read-only mount, a real DuckDB memory limit, a second process holding the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from estore_ops.errors import ExitCode
from tests.disk import CappedDisk, read_only_mount, small_disk  # noqa: F401 - fixture
from tests.helpers import Workspace, clean_env, event_lines
from tests.slack_server import FakeSlack, slack  # noqa: F401 - fixture

NOT_BLAMED = "No file was blamed"


def _run(ws: Workspace, env: dict[str, str], *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "estore_ops", *args], cwd=ws.root, env=clean_env(env),
                          capture_output=True, text=True, timeout=180, **kwargs)  # type: ignore[call-overload]  # **kwargs hides which overload


def _records(ws: Workspace) -> dict[str, dict[str, object]]:
    path = ws.state / "cursor.json"
    return json.loads(path.read_text())["files"] if path.exists() else {}


def _files(ws: Workspace, n: int = 3, rows: int = 20_000) -> dict[str, int]:
    expected = {}
    for i in range(n):
        ws.add(f"f{i}.csv", event_lines(rows, start=i * 100_000))
        expected[f"f{i}.csv"] = rows
    return expected


def test_a_full_warehouse_disk_stops_the_run_blames_no_file_and_alerts_once(
    ws: Workspace, small_disk: CappedDisk, slack: FakeSlack  # noqa: F811
) -> None:
    env = {"ESTORE_WAREHOUSE": f"duckdb:///{small_disk.path / 'warehouse.duckdb'}", "SLACK_WEBHOOK_URL": slack.webhook_url,
           "ESTORE_MAX_ATTEMPTS": "2", "ESTORE_ALERT_DEDUP_MINUTES": "0", "ESTORE_LOG_FORMAT": "json"}
    ws.add("first.csv", event_lines(10))
    assert _run(ws, env, "load").returncode == 0
    expected = {"first.csv": 10, **_files(ws)}
    small_disk.fill()
    for _ in range(3):  # more runs than max_attempts: a file blamed each time would be quarantined
        failed = _run(ws, env, "load", **small_disk.popen_kwargs())
        assert failed.returncode == ExitCode.BACKEND, failed.stderr
        assert str(small_disk.path) in failed.stderr and NOT_BLAMED in failed.stderr
        assert "Fix the file" not in failed.stderr
    assert set(_records(ws)) == {"first.csv"}, "no attempt is counted against any file"
    failures = [m for m in slack.messages if "failed" in m]
    assert len(failures) == 1, slack.messages  # one alert for the episode (the dedup window is 0 here)
    assert "environment" in failures[0] and str(small_disk.path) in failures[0]

    small_disk.free()
    done = _run(ws, env, "load", "--json")
    assert done.returncode == 0, done.stderr
    assert Workspace(ws.root, db=small_disk.path / "warehouse.duckdb").rows_by_file() == expected
    assert all(r["status"] == "loaded" and r["attempts"] == 1 for r in _records(ws).values())
    assert any("recovered" in m for m in slack.messages)
    beats = json.loads((ws.state / "heartbeats.json").read_text())
    assert not beats.get("environment"), "the episode ends with the first success"


def test_duckdb_out_of_memory_is_the_machine_not_the_file(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws.add("a.csv", event_lines(200))
    monkeypatch.setenv("ESTORE_LOAD_MEMORY_LIMIT", "1MB")
    for _ in range(4):
        result = ws.cli("load")
        assert result.exit_code == ExitCode.BACKEND, result.output
        assert "DuckDB ran out of memory" in result.output and "load_memory_limit is 1MB" in result.output
    assert _records(ws) == {}
    monkeypatch.delenv("ESTORE_LOAD_MEMORY_LIMIT")
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"a.csv": 200}


def _read_only(path: Path) -> object:
    """A read-only file system on `path` (root), or a folder without write permission (other users)."""
    undo = read_only_mount(path)
    if undo is not None:
        return undo
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return lambda: path.chmod(0o755)


@pytest.mark.parametrize("place", ["state", "warehouse", "work"])
def test_a_read_only_data_folder_is_the_machine_not_the_file(ws: Workspace, place: str) -> None:
    ws.add("a.csv", event_lines(5))
    ws.add("b[1].csv", event_lines(5, start=100))  # a pattern character: read through a link in the work folder
    folder = ws.root / f"ro-{place}"
    env = {"ESTORE_STATE": str(ws.state), "ESTORE_WAREHOUSE": f"duckdb:///{ws.db}", "ESTORE_WORK_DIR": str(ws.root / "work")}
    if place == "state":
        env["ESTORE_STATE"] = str(folder)
    elif place == "warehouse":
        env["ESTORE_WAREHOUSE"] = f"duckdb:///{folder / 'warehouse.duckdb'}"
    else:
        env["ESTORE_WORK_DIR"] = str(folder)
    undo = _read_only(folder)
    try:
        for _ in range(2):
            result = _run(ws, env, "load")
            assert result.returncode == ExitCode.BACKEND, result.stderr
            assert str(folder) in result.stderr and NOT_BLAMED in result.stderr, result.stderr
            assert "unexpected" not in result.stderr
    finally:
        undo()  # type: ignore[operator]  # set before the try
    assert all(r["status"] == "loaded" for r in _records(ws).values())  # nothing failed, only committed files
    done = _run(ws, env, "load")
    assert done.returncode == 0, done.stderr
    db = folder / "warehouse.duckdb" if place == "warehouse" else ws.db
    assert Workspace(ws.root, db=db).rows_by_file() == {"a.csv": 5, "b[1].csv": 5}


def test_another_program_holding_the_warehouse_is_the_machine(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(5))
    ws.db.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(60)"
    ), str(ws.db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        result = _run(ws, {}, "load")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == ExitCode.BACKEND, result.stderr
    assert "Another program holds the warehouse" in result.stderr and NOT_BLAMED in result.stderr
    assert _records(ws) == {}


def test_health_reports_a_load_failing_for_environment_reasons_longer_than_its_threshold(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.add("a.csv", event_lines(5))
    assert ws.cli("load").exit_code == 0  # a fresh ingest heartbeat
    ws.add("b.csv", event_lines(5, start=100))
    monkeypatch.setenv("ESTORE_LOAD_MEMORY_LIMIT", "1MB")
    assert ws.cli("load").exit_code == ExitCode.BACKEND
    monkeypatch.delenv("ESTORE_LOAD_MEMORY_LIMIT")
    # The episode started 20 minutes ago (written as an earlier run would have); the heartbeat is fresh.
    beats_path = ws.state / "heartbeats.json"
    beats = json.loads(beats_path.read_text())
    beats["environment"]["ingest"]["since"] = (datetime.now(timezone.utc) - timedelta(minutes=20)).isoformat()
    beats["ingest"]["at"] = datetime.now(timezone.utc).isoformat()
    beats_path.write_text(json.dumps(beats))

    result = ws.cli("health", "--json")
    assert result.exit_code == ExitCode.UNHEALTHY
    ingest = next(c for c in json.loads(result.stdout)["checks"] if c["check"] == "ingest")
    assert ingest["stale"] is True and ingest["environment"]["kind"] == "memory"
    text = ws.cli("health")
    assert "failing because of the machine: ingest" in text.output and "DuckDB ran out of memory" in text.output

    assert ws.cli("load").exit_code == 0  # fixed: the episode ends
    assert ws.cli("health").exit_code == ExitCode.UNHEALTHY  # (transform and snapshot never ran)
    ingest = next(c for c in json.loads(ws.cli("health", "--json").stdout)["checks"] if c["check"] == "ingest")
    assert ingest["stale"] is False and ingest["environment"] is None


def test_a_transform_that_fills_the_warehouse_disk_blames_no_model(ws: Workspace, tmp_path: Path) -> None:
    disk = CappedDisk(tmp_path / "disk", size_mb=64)  # room for the models once space returns
    try:
        env = {"ESTORE_WAREHOUSE": f"duckdb:///{disk.path / 'warehouse.duckdb'}"}
        ws.add("a.csv", event_lines(5_000))
        assert _run(ws, env, "load").returncode == 0
        disk.fill(leave=16 << 10)
        result = _run(ws, env, "transform", **disk.popen_kwargs())
        assert result.returncode == ExitCode.BACKEND, result.stdout + result.stderr
        assert NOT_BLAMED in result.stderr and str(disk.path) in result.stderr
        runs = json.loads((ws.state / "runs.json").read_text())
        assert runs[0]["job"] == "transform" and runs[0]["failures"][0]["subject"].startswith("environment (")
        disk.free()
        done = _run(ws, env, "transform")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    finally:
        disk.close()
