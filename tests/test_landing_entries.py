"""One landing entry never blocks the others.

A landing folder with every kind of entry the OS, the reader or the CSV sniffing can choke on (an
unreadable subfolder and file, dangling and looping links, a named pipe, names that are not valid
object names, names full of glob characters, classic Mac line endings, a link to another landing
file) is scanned and loaded by real processes, as a user without root's override of file modes.
Each odd entry fails alone with its own message and is recorded (so it is retried, then
quarantined); every good file loads in the same run, once; nothing is reported as "unexpected".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from estore_ops.errors import ExitCode
from tests.disk import as_unprivileged
from tests.helpers import Workspace, clean_env, csv_bytes, event_lines

GOOD = {"a.csv": 3, "data[1].csv": 4, "what?.csv": 2, "star*.csv": 2, "{x,y}.csv": 2, "[bold]x[/].csv": 2,
        "sub/ok.csv": 5, "locked-file-neighbour.csv": 1}


def _cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(ESTORE_LOG_FORMAT="json")
    return subprocess.run(as_unprivileged([sys.executable, "-m", "estore_ops", *args]), cwd=ws.root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def hostile(ws: Workspace) -> Workspace:
    land = ws.landing
    start = 0
    for name, rows in GOOD.items():  # "[bold]x[/].csv" is the file "].csv" in a folder "[bold]x["
        ws.add(name, event_lines(rows, start=start))
        start += 100
    (land / "locked").mkdir()
    ws.add("locked/hidden.csv", event_lines(2, start=5000))
    (land / "locked").chmod(0)
    ws.add("secret.csv", event_lines(2, start=6000))
    (land / "secret.csv").chmod(0)
    os.symlink("nowhere.csv", land / "dangling.csv")
    os.symlink("loop-b.csv", land / "loop-a.csv")
    os.symlink("loop-a.csv", land / "loop-b.csv")
    os.symlink("a.csv", land / "alias-of-a.csv")  # would load a.csv's rows a second time
    os.mkfifo(land / "pipe.csv")  # reading it would block forever
    ws.add("odd\\name.csv", event_lines(1, start=7000))
    (land / os.fsdecode(b"latin1-\xe9t\xe9.csv")).write_bytes(csv_bytes(event_lines(1, start=7100)))
    (land / "mac.csv").write_bytes(csv_bytes(event_lines(2, start=7200), newline="\r"))
    return ws


PROBLEMS = {
    "locked/": "the folder cannot be listed (Permission denied)",
    "secret.csv": "cannot be read (Permission denied)",
    "dangling.csv": "the link points to nowhere.csv, which cannot be opened",
    "loop-a.csv": "the link points to loop-b.csv, which cannot be opened",
    "loop-b.csv": "the link points to loop-a.csv, which cannot be opened",
    "pipe.csv": "is not a regular file",
    "odd\\name.csv": "its name contains a backslash",
    os.fsdecode(b"latin1-\xe9t\xe9.csv"): "its name is not valid UTF-8 text",
    "mac.csv": "line 1: the line ends with a CR alone",
}


def test_every_odd_entry_fails_alone_and_every_good_file_loads_once(hostile: Workspace) -> None:
    ws = hostile
    scan = _cli(ws, "scan", "--json")
    assert scan.returncode == 0, scan.stderr
    assert "unexpected" not in scan.stderr
    pending = {p["name"] for p in json.loads(scan.stdout)["pending"]}
    assert set(GOOD) | set(PROBLEMS) == pending

    load = _cli(ws, "load", "--json")
    assert load.returncode == ExitCode.FAILED, load.stderr
    assert "unexpected" not in load.stderr and "Traceback" not in load.stderr
    files = {f["name"]: f for f in json.loads(load.stdout)["files"]}
    for name, fragment in PROBLEMS.items():
        assert files[name]["status"] == "failed" and fragment in files[name]["error"], (name, files[name]["error"])
    assert ws.rows_by_file() == GOOD, "every good file loads, once (the link to a.csv is not loaded again)"

    state = json.loads((ws.state / "cursor.json").read_text())["files"]
    assert {n for n, r in state.items() if r["status"] == "failed"} == set(PROBLEMS)  # recorded: retried, then quarantined

    (ws.landing / "locked").chmod(0o755)  # fixed: its files are seen and load on the next run
    again = _cli(ws, "load", "--json")
    loaded = {f["name"] for f in json.loads(again.stdout)["files"] if f["status"] == "loaded"}
    assert loaded == {"locked/hidden.csv"}
    assert ws.rows_by_file()["locked/hidden.csv"] == 2


def test_load_file_of_an_odd_entry_fails_that_entry_alone(hostile: Workspace) -> None:
    result = _cli(hostile, "load", "--json", "--file", "loop-a.csv", "--file", "a.csv")
    assert result.returncode == ExitCode.FAILED, result.stderr
    files = {f["name"]: f for f in json.loads(result.stdout)["files"]}
    assert files["a.csv"]["status"] == "loaded"
    assert files["loop-a.csv"]["status"] == "failed" and "cannot be" in files["loop-a.csv"]["error"]


def test_a_landing_folder_that_cannot_be_listed_is_the_machine(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(2))
    ws.landing.chmod(0)
    try:
        result = _cli(ws, "scan")
    finally:
        ws.landing.chmod(0o755)
    assert result.returncode == ExitCode.BACKEND, result.stderr
    assert str(ws.landing) in result.stderr and "unexpected" not in result.stderr


def test_links_inside_the_landing_area_load_their_target_once(ws: Workspace) -> None:
    ws.add("2019/oct.csv", event_lines(3))
    (ws.landing / "latest").mkdir()
    os.symlink(Path("..") / "2019" / "oct.csv", ws.landing / "latest" / "oct.csv")
    hidden = ws.landing / ".incoming"
    hidden.mkdir()
    (hidden / "nov.csv").write_bytes(csv_bytes(event_lines(2, start=50)))
    os.symlink(Path("..") / ".incoming" / "nov.csv", ws.landing / "latest" / "nov.csv")  # target not listed itself
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"2019/oct.csv": 3, "latest/nov.csv": 2}
