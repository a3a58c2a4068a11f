"""Real processes: SIGKILL at fault points, then a plain rerun; two runs racing for the lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from estore_ops.errors import ExitCode
from tests.helpers import Workspace, event_lines, fault_env

FILES = {"a.csv": 40, "b.csv.gz": 25, "c.csv": 31}


def _add_files(ws: Workspace) -> None:
    start = 0
    for name, n in FILES.items():
        ws.add(name, event_lines(n, start=start))
        start += 1000


@pytest.mark.parametrize(
    "point",
    ["after_commit", "after_commit:2", "inside_transaction", "inside_transaction:3", "state_write", "state_write:2", "after_state_write"],
)
def test_killed_load_then_rerun_gives_exact_rows(ws: Workspace, point: str) -> None:
    _add_files(ws)
    killed = ws.run("load", env=fault_env(point))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rerun = ws.run("load")
    assert rerun.returncode == 0, rerun.stderr
    assert ws.rows_by_file() == FILES
    assert ws.query("SELECT count(*) FROM (SELECT DISTINCT * EXCLUDE (_loaded_at) FROM raw.events)") == [(sum(FILES.values()),)]
    show = json.loads(ws.run("cursor", "show", "--json").stdout)
    assert show["counts"] == {"loaded": 3, "failed": 0, "quarantined": 0}


def test_lock_of_a_killed_run_on_this_host_is_taken_over_at_once(ws: Workspace) -> None:
    _add_files(ws)
    killed = ws.run("load", env={"ESTORE_FAULT_POINT": "after_commit"})
    assert killed.returncode == -signal.SIGKILL
    assert (ws.state / "run.lock").exists()  # SIGKILL: no chance to release it
    rerun = ws.run("load")
    assert rerun.returncode == 0, rerun.stderr
    assert ws.rows_by_file() == FILES


def _foreign_lock(ws: Workspace, expires_in: float) -> None:
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    ws.state.mkdir(parents=True, exist_ok=True)
    (ws.state / "run.lock").write_text(json.dumps({
        "owner": "20260101T000000Z-abcdef", "command": "transform", "host": "other-vm", "pid": 4242,
        "started_at": now.isoformat(timespec="seconds"),
        "expires_at": (now + timedelta(seconds=expires_in)).isoformat(timespec="seconds"), "boot_id": "x",
    }))


def test_lock_held_on_another_host_blocks_until_broken(ws: Workspace) -> None:
    _add_files(ws)
    _foreign_lock(ws, 600)
    blocked = ws.run("load")
    assert blocked.returncode == ExitCode.LOCKED, blocked.stderr
    assert ("error: Another run holds the lock" in blocked.stderr
            and "run 20260101T000000Z-abcdef (transform) on other-vm, pid 4242" in blocked.stderr)
    assert "estore-ops lock break --yes" in blocked.stderr
    assert ws.rows_by_file() == {}
    shown = json.loads(ws.run("lock", "show", "--json").stdout)
    assert shown["held"] and shown["lock"]["host"] == "other-vm" and not shown["stale"]
    assert ws.run("lock", "break").returncode == ExitCode.USAGE  # no terminal, no --yes: refuses
    assert ws.run("lock", "break", "--yes").returncode == 0
    assert ws.run("load").returncode == 0
    assert ws.rows_by_file() == FILES


def test_expired_lease_of_another_host_is_taken_over(ws: Workspace) -> None:
    _add_files(ws)
    _foreign_lock(ws, -1)
    rerun = ws.run("load")
    assert rerun.returncode == 0, rerun.stderr
    assert ws.rows_by_file() == FILES


def test_two_runs_started_together_one_runs_the_other_exits_with_the_lock_code(ws: Workspace, tmp_path: Path) -> None:
    _add_files(ws)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {"ESTORE_PAUSE_POINT": f"lock_held:{barrier}"}
    import os

    first = subprocess.Popen([sys.executable, "-m", "estore_ops", "load"], cwd=ws.root, env={**os.environ, **env},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (barrier / "reached").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "first run never took the lock"
            time.sleep(0.02)
        started = time.monotonic()
        second = ws.run("load")
        assert time.monotonic() - started < 5
        assert second.returncode == ExitCode.LOCKED
        assert f"pid {first.pid}" in second.stderr
        (barrier / "release").write_text("go")
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    assert ws.rows_by_file() == FILES
    assert not (ws.state / "run.lock").exists()


def test_a_lock_taken_by_another_run_is_noticed_by_its_holder(tmp_path: Path) -> None:
    from estore_ops.ops.lock import LOCK_NAME, RunLock
    from estore_ops.backends.stores.local import LocalFolderStore

    store = LocalFolderStore(tmp_path / "state")
    lock = RunLock(store, "run-a", "load", lease_seconds=3).acquire()  # renews every second
    try:
        store.write(LOCK_NAME, json.dumps({"owner": "run-b", "command": "load", "host": "other", "pid": 1,
                                           "started_at": "x", "expires_at": "2999-01-01T00:00:00+00:00"}).encode())
        assert lock.lost.wait(10), "the holder never noticed"
    finally:
        lock.release()
    assert json.loads((tmp_path / "state" / LOCK_NAME).read_text())["owner"] == "run-b"  # not deleted by A


def test_lock_break_only_deletes_the_lock_the_operator_saw(tmp_path: Path) -> None:
    from estore_ops.ops.lock import break_lock, read_lock
    from estore_ops.backends.stores.local import LocalFolderStore

    store = LocalFolderStore(tmp_path / "state")
    store.write("run.lock", b'{"owner": "a", "command": "load", "host": "h", "pid": 1, "started_at": "x", "expires_at": "2999-01-01T00:00:00+00:00"}')
    seen = read_lock(store)
    assert seen is not None
    store.write("run.lock", b'{"owner": "b", "command": "load", "host": "h", "pid": 2, "started_at": "x", "expires_at": "2999-01-01T00:00:00+00:00"}')
    assert break_lock(store, expected_generation=seen[1]) is None  # it changed hands meanwhile
    assert read_lock(store)[0].owner == "b"  # type: ignore[index]


def test_a_file_that_kills_the_process_every_time_is_quarantined_and_the_rest_load(ws: Workspace) -> None:
    """An OOM-like crash on one file must not block the pipeline forever."""
    _add_files(ws)
    env = {"ESTORE_FAULT_POINT": "inside_transaction@b.csv.gz", "ESTORE_MAX_ATTEMPTS": "2"}
    first = ws.run("load", env=env)
    assert first.returncode == -signal.SIGKILL
    second = ws.run("load", env=env)  # counts the crash (attempt 1), retries b, dies again
    assert second.returncode == -signal.SIGKILL
    third = ws.run("load", env=env)  # counts attempt 2: quarantined, the others load
    assert third.returncode == 0, third.stderr
    assert "died while loading this file" in third.stderr
    rows = ws.rows_by_file()
    assert rows == {"a.csv": FILES["a.csv"], "c.csv": FILES["c.csv"]}
    show = json.loads(ws.run("cursor", "show", "--json").stdout)
    assert show["counts"] == {"loaded": 2, "failed": 0, "quarantined": 1}
    assert "died while loading this file" in show["problems"][0]["error"]
    assert ws.run("load", env=env).returncode == 0  # quarantined: no more crashes
    assert not (ws.state / "inflight.json").exists()
