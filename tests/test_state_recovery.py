"""State recovery drill: a damaged or lost state document never loses or duplicates rows.

Each kind of damage makes every command that reads the state refuse (exit 3) with a message that
says what is wrong and gives the recovery command; the refused load changes nothing; `cursor
restore --yes` brings back the previous version and the next load completes with exact rows.
A deleted state document with data already in the warehouse reloads every file, and the lineage
columns make the reload replace rows instead of duplicating them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from estore_ops.errors import ExitCode
from tests.helpers import Workspace, event_lines, fault_env

FILES = {"a.csv": 4, "b.csv.gz": 3, "c.csv": 5}
RESTORE = "estore-ops cursor restore --yes"

DAMAGE = {
    "truncated": (lambda raw: raw[: len(raw) // 2], "is not valid JSON"),
    "zero_bytes": (lambda raw: b"", "is not valid JSON"),
    "invalid_json": (lambda raw: b"{not json at all", "is not valid JSON"),
    "binary_garbage": (lambda raw: b"\x89\xff\x00\x13garbage", "is not valid JSON"),
    "not_a_state_document": (lambda raw: b"[1, 2, 3]", "is not an estore-ops state document"),
    "future_format_version": (
        lambda raw: json.dumps({**json.loads(raw), "format_version": 2}).encode(),
        "was written by a newer estore-ops (format 2, this one reads 1): upgrade estore-ops",
    ),
    "malformed_record": (
        lambda raw: json.dumps({**json.loads(raw), "files": {"a.csv": {"generation": "x", "status": "loaded"}}}).encode(),
        "has a malformed entry",
    ),
}

# Every command that reads the state document.
READERS = [("scan",), ("load",), ("cursor", "show"), ("cursor", "reset", "--file", "a.csv", "--yes"), ("watch", "--once")]


def _load_in_two_runs(ws: Workspace) -> None:
    start = 0
    names = list(FILES)
    for name in names[:2]:
        ws.add(name, event_lines(FILES[name], start=start))
        start += 100
    assert ws.cli("load").exit_code == 0
    ws.add(names[2], event_lines(FILES[names[2]], start=start))
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == FILES


def _all_loaded(ws: Workspace) -> None:
    show = ws.cli("cursor", "show", "--json")
    assert show.exit_code == 0, show.output
    assert json.loads(show.stdout)["counts"] == {"loaded": len(FILES), "failed": 0, "quarantined": 0}
    assert ws.rows_by_file() == FILES
    distinct = ws.query("SELECT count(*) FROM (SELECT DISTINCT * EXCLUDE (_loaded_at) FROM raw.events)")
    assert distinct == [(sum(FILES.values()),)]


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_state_is_refused_everywhere_and_restore_loses_nothing(ws: Workspace, kind: str) -> None:
    _load_in_two_runs(ws)
    doc = ws.state / "cursor.json"
    damage, message = DAMAGE[kind]
    doc.write_bytes(damage(doc.read_bytes()))
    damaged = doc.read_bytes()
    ws.add("d-new.csv", event_lines(2, start=900))  # a new file must not load against a damaged state
    for args in READERS:
        result = ws.cli(*args)
        assert result.exit_code == ExitCode.STATE, (args, result.output)
        assert message in result.output, (args, result.output)
        assert RESTORE in result.output, (args, result.output)
    assert doc.read_bytes() == damaged, "a refused command must not touch the document"
    assert ws.rows_by_file() == FILES
    assert not (ws.state / "run.lock").exists()

    restored = ws.cli("cursor", "restore", "--yes")
    assert restored.exit_code == 0, restored.output
    assert ws.cli("load").exit_code == 0
    expected = {**FILES, "d-new.csv": 2}
    assert ws.rows_by_file() == expected
    show = json.loads(ws.cli("cursor", "show", "--json").stdout)
    assert show["counts"]["loaded"] == 4 and show["counts"]["failed"] == 0


def test_both_versions_damaged_points_to_reset_and_reset_reloads_without_duplicates(ws: Workspace) -> None:
    _load_in_two_runs(ws)
    (ws.state / "cursor.json").write_bytes(b"{")
    (ws.state / "cursor.prev.json").write_bytes(b"{")
    restored = ws.cli("cursor", "restore", "--yes")
    assert restored.exit_code == ExitCode.STATE
    assert "is not valid JSON" in restored.output and "cursor reset --all --yes" in restored.output
    reset = ws.cli("cursor", "reset", "--all", "--yes")
    assert reset.exit_code == 0, reset.output
    assert ws.cli("load").exit_code == 0
    _all_loaded(ws)


def test_deleted_state_document_reloads_and_replaces_rows(ws: Workspace) -> None:
    _load_in_two_runs(ws)
    (ws.state / "cursor.json").unlink()
    (ws.state / "cursor.prev.json").unlink()
    scan = json.loads(ws.cli("scan", "--json").stdout)
    assert sorted(p["name"] for p in scan["pending"]) == sorted(FILES)
    assert ws.cli("load").exit_code == 0
    _all_loaded(ws)


def test_state_folder_lost_entirely_reloads_and_replaces_rows(ws: Workspace) -> None:
    import shutil

    _load_in_two_runs(ws)
    shutil.rmtree(ws.state)
    assert ws.cli("load").exit_code == 0
    _all_loaded(ws)


def test_restoring_twice_goes_back_two_writes_and_reloads_what_it_lacks(ws: Workspace) -> None:
    """restore goes back one *write* (a load writes once per file, then once to compact): going
    back further leaves files pending, and they load again with their rows replaced."""
    _load_in_two_runs(ws)
    for _ in range(2):
        assert ws.cli("cursor", "restore", "--yes").exit_code == 0
    (ws.state / "cursor.prev.json").write_bytes((ws.state / "cursor.json").read_bytes())
    assert ws.cli("cursor", "reset", "--file", "c.csv", "--yes").exit_code == 0
    assert ws.cli("cursor", "restore", "--yes").exit_code == 0  # back to before the reset
    assert ws.cli("cursor", "reset", "--file", "c.csv", "--file", "a.csv", "--yes").exit_code == 0
    pending = sorted(p["name"] for p in json.loads(ws.cli("scan", "--json").stdout)["pending"])
    assert pending == ["a.csv", "c.csv"]
    assert ws.cli("load").exit_code == 0
    _all_loaded(ws)


def test_damaged_state_written_by_a_killed_run_is_recoverable(ws: Workspace, tmp_path: Path) -> None:
    """A run killed while writing the state (the local store renames a finished temp file, so the
    document is never torn) leaves a readable document; a plain rerun completes."""
    for name, n in FILES.items():
        ws.add(name, event_lines(n, start=hash(name) % 1000 * 10))
    killed = ws.run("load", env=fault_env("state_write:2"))
    assert killed.returncode < 0
    assert ws.cli("cursor", "show").exit_code == 0
    assert not list(ws.state.glob(".cursor.json.*.tmp")) or ws.cli("load").exit_code == 0
    assert ws.cli("load").exit_code == 0
    _all_loaded(ws)
