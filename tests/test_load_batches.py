"""Small files that arrive together load in one DuckDB transaction, without giving up what the
per-file load guarantees: exact rows, per-file failures, crash isolation, stops between commits."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from estore_ops.ingest import pipeline as ingest
from estore_ops.ingest.pipeline import InFlight
from estore_ops.ingest.state import StateStore
from estore_ops.backends.stores.local import LocalFolderStore
from estore_ops.backends.warehouses.duckdb import DuckDBWarehouse
from tests.helpers import Workspace, event_lines


def _files(result: Any) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in json.loads(result.stdout)["files"]}


def test_small_files_share_one_transaction_and_keep_exact_rows(ws: Workspace) -> None:
    names = ["2019-Oct.csv", "2019-Nov.csv", "odd name, with 'quotes'.csv", "sub/2019-Dec.csv", "empty.csv"]
    for i, name in enumerate(names):
        ws.add(name, event_lines(0 if name == "empty.csv" else 10 + i, start=100 * i))
    result = ws.cli("load", "--json")
    assert result.exit_code == 0, result.output
    files = _files(result)
    assert {n: f["batch_files"] for n, f in files.items()} == {n: 5 for n in names}
    expected = {n: 0 if n == "empty.csv" else 10 + i for i, n in enumerate(names)}
    assert {n: f["rows"] for n, f in files.items()} == expected
    assert ws.rows_by_file() == {n: r for n, r in expected.items() if r}

    text = ws.cli("load", "--force")  # the table says the time is the batch's
    assert text.exit_code == 0 and "(batch of 5)" in text.output
    assert ws.rows_by_file() == {n: r for n, r in expected.items() if r}


def test_batch_size_setting_bounds_a_batch_and_zero_loads_each_file_alone(ws: Workspace, monkeypatch: Any) -> None:
    for i in range(3):
        ws.add(f"f{i}.csv", event_lines(5, start=10 * i))
    monkeypatch.setenv("ESTORE_LOAD_BATCH_MB", "0")
    files = _files(ws.cli("load", "--json"))
    assert [f["batch_files"] for f in files.values()] == [1, 1, 1]
    assert ws.rows_by_file() == {"f0.csv": 5, "f1.csv": 5, "f2.csv": 5}


def test_a_bad_file_in_a_batch_fails_alone_with_its_own_error(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(4))
    bad = event_lines(5, start=100)
    bad[3] = bad[3].replace(",view,", ",view,x")  # product_id becomes "x1103"
    ws.add("b.csv", bad)
    ws.add("c.csv", event_lines(6, start=200))
    result = ws.cli("load", "--json")
    assert result.exit_code != 0
    files = _files(result)
    assert files["a.csv"]["status"] == files["c.csv"]["status"] == "loaded"
    assert files["b.csv"]["status"] == "failed"
    assert "b.csv, line 5, column product_id" in files["b.csv"]["error"]
    assert ws.rows_by_file() == {"a.csv": 4, "c.csv": 6}
    # The failed file's retry loads alone; the others are not read again.
    ws.add("b.csv", event_lines(5, start=100))
    again = _files(ws.cli("load", "--json"))
    assert list(again) == ["b.csv"] and again["b.csv"]["batch_files"] == 1
    assert ws.rows_by_file() == {"a.csv": 4, "b.csv": 5, "c.csv": 6}


def test_a_file_that_kills_a_batch_is_isolated_then_quarantined(ws: Workspace) -> None:
    for i, name in enumerate(("a.csv", "b.csv", "c.csv")):
        ws.add(name, event_lines(4 + i, start=100 * i))
    env = {"ESTORE_FAULT_POINT": "inside_transaction@b.csv", "ESTORE_MAX_ATTEMPTS": "2"}
    assert ws.run("load", env=env).returncode == -signal.SIGKILL  # inside the batch of three
    marker = json.loads((ws.state / "inflight.json").read_text())
    assert sorted(f["name"] for f in marker["files"]) == ["a.csv", "b.csv", "c.csv"]

    second = ws.run("load", env=env)  # nobody is blamed yet; one at a time, b dies alone
    assert second.returncode == -signal.SIGKILL
    assert "died while loading a batch of 3 files" in second.stderr
    assert [f["name"] for f in json.loads((ws.state / "inflight.json").read_text())["files"]] == ["b.csv"]
    show = json.loads(ws.run("cursor", "show", "--json").stdout)
    assert show["counts"]["failed"] == 0 and show["counts"]["quarantined"] == 0

    assert ws.run("load", env=env).returncode == -signal.SIGKILL  # counted once, retried, dies again
    last = ws.run("load", env=env)  # counted twice: quarantined, the rest load
    assert last.returncode == 0, last.stderr
    assert ws.rows_by_file() == {"a.csv": 4, "c.csv": 6}
    show = json.loads(ws.run("cursor", "show", "--json").stdout)
    assert show["counts"] == {"loaded": 2, "failed": 0, "quarantined": 1}
    assert "died while loading this file" in show["problems"][0]["error"]
    assert not (ws.state / "inflight.json").exists()


def test_a_stop_request_takes_effect_between_batches_after_recording_the_committed_ones(tmp_path: Path) -> None:
    from tests.helpers import write_csv

    landing = tmp_path / "landing"
    write_csv(landing / "a.csv", event_lines(3))
    write_csv(landing / "b.csv", event_lines(4, start=10))
    write_csv(landing / "c.csv.gz", event_lines(5, start=20))  # another compression: the next batch
    store, state_store = LocalFolderStore(landing), StateStore(LocalFolderStore(tmp_path / "state"))
    warehouse = DuckDBWarehouse(f"duckdb:///{tmp_path}/w.duckdb", batch_mb=256)
    seen: list[str] = []
    try:
        result = ingest.load_files(
            run_id="r1", landing=store, state_store=state_store, warehouse=warehouse, max_attempts=3,
            on_file=lambda o: seen.append(o.name), should_stop=lambda: bool(seen),
        )
    finally:
        warehouse.close()
    assert sorted(o.name for o in result.outcomes) == ["a.csv", "b.csv"]  # the whole first batch, then the stop
    assert {n: r.status for n, r in state_store.read().state.files.items()} == {"a.csv": "loaded", "b.csv": "loaded"}
    assert not (tmp_path / "state" / "inflight.json").exists()


def test_an_in_flight_marker_of_an_older_version_still_counts_its_file(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    store.write(InFlight.NAME, json.dumps({"run_id": "old", "name": "x.csv", "generation": 7, "size": 9}).encode())
    died_on, suspects = InFlight(store, "new").take_dead()
    assert died_on is not None and (died_on.name, died_on.generation, died_on.ok) == ("x.csv", 7, False)
    assert suspects == set() and not (tmp_path / InFlight.NAME).exists()


def test_times_in_other_spellings_take_the_general_parser_and_keep_their_instants(ws: Workspace) -> None:
    """The exact-format fast read of '... UTC' times falls back, per file, when a later line differs."""
    lines = event_lines(3)
    lines.append(lines[0].replace("2019-10-01 00:00:00 UTC", "2019-10-01 05:00:00+02:00"))  # 03:00 UTC
    lines.append(lines[1].replace("2019-10-01 00:00:01 UTC", "2019-10-01 00:00:01.5 UTC"))
    ws.add("mixed.csv", lines)
    ws.add("plain.csv", event_lines(2, start=500))
    bad = event_lines(4, start=900)
    bad[2] = bad[2].replace(" UTC,", " UTC+99,", 1)
    ws.add("bad.csv", bad)
    files = _files(ws.cli("load", "--json"))
    assert files["mixed.csv"]["rows"] == 5 and files["plain.csv"]["rows"] == 2
    assert "bad.csv, line 4, column event_time" in files["bad.csv"]["error"]
    times = ws.query(
        "SELECT strftime(event_time AT TIME ZONE 'UTC', '%H:%M:%S.%f') FROM raw.events WHERE _source_file = 'mixed.csv' ORDER BY 1"
    )
    assert [t for (t,) in times] == ["00:00:00.000000", "00:00:01.000000", "00:00:01.500000", "00:00:02.000000", "03:00:00.000000"]


def test_names_with_glob_characters_read_their_own_file(ws: Workspace, monkeypatch: Any) -> None:
    """DuckDB's reader takes * ? [ ] as a pattern: `data[1].csv` must not read `data1.csv`."""
    names = {"data[1].csv": 3, "data1.csv": 5, "x*.csv": 2, "xa.csv": 4, "date=2019-10-01/q?.csv": 6}
    for i, (name, n) in enumerate(names.items()):
        ws.add(name, event_lines(n, start=100 * i))
    files = _files(ws.cli("load", "--json"))
    assert {n: f["rows"] for n, f in files.items()} == names
    assert max(f["batch_files"] for f in files.values()) > 1
    assert ws.rows_by_file() == names
    monkeypatch.setenv("ESTORE_LOAD_BATCH_MB", "0")  # and one transaction per file
    again = _files(ws.cli("load", "--force", "--json"))
    assert {n: f["rows"] for n, f in again.items()} == names and ws.rows_by_file() == names
    assert not list((ws.root / "data" / "work").glob("tmp*"))  # the links are gone


def test_batch_suspects_the_run_did_not_reach_stay_suspects(tmp_path: Path) -> None:
    from tests.helpers import write_csv

    landing = tmp_path / "landing"
    for name in ("a.csv", "b.csv"):
        write_csv(landing / name, event_lines(3, start=ord(name[0]) * 10))
    store, state_store = LocalFolderStore(landing), StateStore(LocalFolderStore(tmp_path / "state"))
    marker = {"run_id": "dead", "files": [{"name": "a.csv", "generation": 1, "size": 1},
                                          {"name": "b.csv", "generation": 1, "size": 1}], "batch": True}
    (tmp_path / "state" / InFlight.NAME).write_text(json.dumps(marker))

    def run(stop: bool) -> Any:
        warehouse = DuckDBWarehouse(f"duckdb:///{tmp_path}/w.duckdb", batch_mb=256)
        try:
            return ingest.load_files(run_id=f"r-{stop}", landing=store, state_store=state_store, warehouse=warehouse,
                                     max_attempts=3, should_stop=lambda: stop)
        finally:
            warehouse.close()

    assert run(stop=True).outcomes == []  # stopped before anything: both stay suspects
    kept = json.loads((tmp_path / "state" / InFlight.NAME).read_text())
    assert kept["batch"] and sorted(f["name"] for f in kept["files"]) == ["a.csv", "b.csv"]
    done = run(stop=False)
    assert sorted((o.name, o.batch_files) for o in done.outcomes) == [("a.csv", 1), ("b.csv", 1)]  # alone
    assert not (tmp_path / "state" / InFlight.NAME).exists()
