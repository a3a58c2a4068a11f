"""End to end on real files and a real DuckDB file, through the CLI."""

from __future__ import annotations

import json
import os

from tests.helpers import HEADER, Workspace, event_lines


def test_first_load_then_rerun_loads_nothing_and_duplicates_nothing(ws: Workspace) -> None:
    ws.add("2019-Oct.csv", event_lines(50))
    ws.add("2019-Nov.csv", event_lines(30, start=100))

    first = ws.cli("load")
    assert first.exit_code == 0, first.output
    assert ws.rows_by_file() == {"2019-Oct.csv": 50, "2019-Nov.csv": 30}

    scan = ws.cli("scan")
    assert scan.exit_code == 0
    assert "Nothing new: 2 file(s) listed, all loaded." in scan.output
    again = ws.cli("load")
    assert again.exit_code == 0
    assert "Nothing new to load." in again.output
    assert ws.rows_by_file() == {"2019-Oct.csv": 50, "2019-Nov.csv": 30}


def test_rows_are_typed_with_lineage(ws: Workspace) -> None:
    ws.add("2019-Oct.csv", ["2019-10-01 00:00:05 UTC,purchase,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde"])
    assert ws.cli("load").exit_code == 0
    row = ws.query(
        "SELECT strftime(event_time AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S'), category_id, category_code, price, "
        "_source_file, _source_generation > 0, _loaded_at IS NOT NULL, typeof(event_time) FROM raw.events"
    )[0]
    assert row == ("2019-10-01 00:00:05", 2103807459595387724, None, 35.79, "2019-Oct.csv", True, True, "TIMESTAMP WITH TIME ZONE")


def test_file_whose_name_sorts_before_loaded_ones_is_still_found(ws: Workspace) -> None:
    ws.add("2019-Oct.csv", event_lines(10))
    assert ws.cli("load").exit_code == 0
    # "2019-Nov" < "2019-Oct" by name, but it arrives later: a name cursor would skip it forever.
    ws.add("2019-Nov.csv", event_lines(7, start=500))
    scan = ws.cli("scan", "--json")
    assert [p["name"] for p in json.loads(scan.stdout)["pending"]] == ["2019-Nov.csv"]
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"2019-Oct.csv": 10, "2019-Nov.csv": 7}


def test_pending_files_are_listed_in_arrival_order_with_reasons(ws: Workspace) -> None:
    for name in ("c.csv", "a.csv", "b.csv"):
        ws.add(name, event_lines(2))
    data = json.loads(ws.cli("scan", "--json").stdout)
    assert [p["name"] for p in data["pending"]] == ["c.csv", "a.csv", "b.csv"]
    assert {p["why"] for p in data["pending"]} == {"new"}


def test_rewritten_file_is_reloaded_and_its_old_rows_replaced(ws: Workspace) -> None:
    ws.add("2019-Oct.csv", event_lines(20))
    assert ws.cli("load").exit_code == 0
    ws.add("2019-Oct.csv", event_lines(12, start=1000))  # rewritten in place with new content
    scan = json.loads(ws.cli("scan", "--json").stdout)
    assert [(p["name"], p["why"]) for p in scan["pending"]] == [("2019-Oct.csv", "changed")]
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"2019-Oct.csv": 12}
    assert ws.query("SELECT min(product_id) FROM raw.events") == [(2000,)]


def test_bad_header_fails_only_that_file(ws: Workspace) -> None:
    ws.add("good.csv", event_lines(5))
    ws.add("renamed.csv", event_lines(5), header=HEADER.replace("price", "unit_price"))
    ws.add("missing.csv", [",".join(line.split(",")[:-1]) for line in event_lines(3)], header=HEADER.rsplit(",", 1)[0])
    result = ws.cli("load")
    assert result.exit_code == 1
    assert ws.rows_by_file() == {"good.csv": 5}
    assert "renamed.csv, line 1: header has missing column(s) price; unexpected column(s) unit_price." in result.output
    assert "missing.csv, line 1: header has missing column(s) user_session." in result.output
    show = json.loads(ws.cli("cursor", "show", "--json").stdout)
    assert show["counts"] == {"loaded": 1, "failed": 2, "quarantined": 0}


def test_bad_value_fails_the_file_with_line_and_column_and_leaves_nothing(ws: Workspace) -> None:
    lines = event_lines(6)
    lines[3] = lines[3].replace(",13.5,", ",abc,")
    ws.add("bad.csv", lines)
    ws.add("ok.csv", event_lines(4, start=50))
    result = ws.cli("load")
    assert result.exit_code == 1
    assert 'bad.csv, line 5, column price: Could not convert string "abc" to \'DOUBLE\'' in result.output
    assert "upload the file again" in result.output
    assert ws.rows_by_file() == {"ok.csv": 4}


def test_reload_of_a_file_that_became_bad_keeps_its_previous_rows(ws: Workspace) -> None:
    ws.add("f.csv", event_lines(8))
    assert ws.cli("load").exit_code == 0
    lines = event_lines(8)
    lines[0] = lines[0].replace("UTC,view", "UTC,view,extra")
    ws.add("f.csv", lines)
    assert ws.cli("load").exit_code == 1
    assert ws.rows_by_file() == {"f.csv": 8}  # the failed reload rolled back, old rows still there


def test_gzip_file_loads(ws: Workspace) -> None:
    ws.add("2019-Dec.csv.gz", event_lines(25))
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"2019-Dec.csv.gz": 25}


def test_force_reloads_without_duplicates(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(9))
    ws.add("b.csv.gz", event_lines(4, start=20))
    assert ws.cli("load").exit_code == 0
    forced = ws.cli("load", "--force", "--json")
    assert forced.exit_code == 0
    assert json.loads(forced.stdout)["files_loaded"] == 2
    assert ws.rows_by_file() == {"a.csv": 9, "b.csv.gz": 4}


def test_file_option_loads_only_that_file_and_skips_loaded_without_force(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(3))
    ws.add("b.csv", event_lines(3, start=10))
    assert ws.cli("load", "--file", "b.csv").exit_code == 0
    assert ws.rows_by_file() == {"b.csv": 3}
    again = ws.cli("load", "--file", "b.csv")
    assert "skipped b.csv: already loaded (use --force to load it again)" in again.output
    missing = ws.cli("load", "--file", "nope.csv")
    assert missing.exit_code == 2
    assert "--file nope.csv: no such file in the landing area" in missing.output


def test_prefix_backfill_and_non_csv_files_are_ignored(ws: Workspace) -> None:
    ws.add("2019/10/a.csv", event_lines(2))
    ws.add("2020/01/b.csv", event_lines(3, start=5))
    (ws.landing / "notes.txt").write_text("not a csv")
    result = ws.cli("load", "--prefix", "2020/")
    assert result.exit_code == 0
    assert ws.rows_by_file() == {"2020/01/b.csv": 3}
    assert [p["name"] for p in json.loads(ws.cli("scan", "--json").stdout)["pending"]] == ["2019/10/a.csv"]


def test_dry_run_changes_nothing(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(3))
    result = ws.cli("load", "--dry-run", "--json")
    assert result.exit_code == 0
    assert [p["name"] for p in json.loads(result.stdout)["planned"]] == ["a.csv"]
    assert not ws.db.exists() or ws.rows_by_file() == {}
    assert json.loads(ws.cli("scan", "--json").stdout)["pending"][0]["name"] == "a.csv"


def test_failed_file_is_retried_then_quarantined_and_reset_brings_it_back(ws: Workspace) -> None:
    os.environ["ESTORE_MAX_ATTEMPTS"] = "2"
    try:
        ws.add("bad.csv", event_lines(2), header="a,b,c")
        assert ws.cli("load").exit_code == 1
        scan = json.loads(ws.cli("scan", "--json").stdout)
        assert scan["pending"][0]["why"] == "retry 2 of 2"
        assert ws.cli("load").exit_code == 1
        scan = json.loads(ws.cli("scan", "--json").stdout)
        assert scan["pending"] == [] and scan["quarantined"] == ["bad.csv"]
        assert ws.cli("load").exit_code == 0  # quarantined: not retried, not failing every tick
        show = ws.cli("cursor", "show")
        assert "quarantined" in show.output and "bad.csv" in show.output

        refused = ws.cli("cursor", "reset", "--file", "bad.csv")
        assert refused.exit_code == 2
        assert "Refusing to ask without a terminal: pass --yes to confirm." in refused.output
        assert ws.cli("cursor", "reset", "--file", "bad.csv", "--yes").exit_code == 0
        assert json.loads(ws.cli("scan", "--json").stdout)["pending"][0]["name"] == "bad.csv"
    finally:
        del os.environ["ESTORE_MAX_ATTEMPTS"]


def test_fixed_file_loads_after_failure(ws: Workspace) -> None:
    ws.add("f.csv", event_lines(2), header="x,y")
    assert ws.cli("load").exit_code == 1
    ws.add("f.csv", event_lines(2))
    scan = json.loads(ws.cli("scan", "--json").stdout)
    assert scan["pending"][0]["why"] == "changed"
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"f.csv": 2}


def test_cursor_reset_all_and_restore(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(3))
    assert ws.cli("load").exit_code == 0
    assert ws.cli("cursor", "reset", "--all", "--yes").exit_code == 0
    assert [p["name"] for p in json.loads(ws.cli("scan", "--json").stdout)["pending"]] == ["a.csv"]
    assert ws.cli("cursor", "restore", "--yes").exit_code == 0
    assert json.loads(ws.cli("scan", "--json").stdout)["pending"] == []
    # After a reset the reload replaces rows: still no duplicates.
    assert ws.cli("cursor", "reset", "--all", "--yes").exit_code == 0
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"a.csv": 3}


def test_corrupt_state_is_refused_with_the_recovery_command(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(3))
    assert ws.cli("load").exit_code == 0
    ws.add("b.csv", event_lines(2, start=9))
    assert ws.cli("load").exit_code == 0
    (ws.state / "cursor.json").write_text('{"format_version": 1, "files": {')
    for args in (("scan",), ("load",), ("cursor", "show")):
        result = ws.cli(*args)
        assert result.exit_code == 3, args
        assert "is not valid JSON" in result.output
        assert "estore-ops cursor restore --yes" in result.output
    assert ws.cli("cursor", "restore", "--yes").exit_code == 0
    # The previous version knew a.csv; b.csv loads again and replaces its rows.
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"a.csv": 3, "b.csv": 2}


def test_state_from_a_newer_version_is_refused(ws: Workspace) -> None:
    ws.state.mkdir(parents=True)
    (ws.state / "cursor.json").write_text('{"format_version": 99, "files": {}}')
    result = ws.cli("scan")
    assert result.exit_code == 3
    assert "was written by a newer estore-ops (format 99, this one reads 1): upgrade estore-ops" in result.output


def test_json_output_is_machine_readable(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(4))
    data = json.loads(ws.cli("load", "--json").stdout)
    assert data["ok"] is True and data["rows"] == 4
    assert data["files"][0]["name"] == "a.csv" and data["files"][0]["status"] == "loaded"
    show = json.loads(ws.cli("cursor", "show", "--json").stdout)
    assert show["newest_loaded"]["name"] == "a.csv" and show["counts"]["loaded"] == 1


def test_crlf_and_bom_files_load(ws: Workspace) -> None:
    path = ws.landing / "win.csv"
    ws.add("win.csv", event_lines(3), newline="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = ws.cli("load")
    assert result.exit_code == 0, result.output
    assert ws.rows_by_file() == {"win.csv": 3}
    assert ws.query("SELECT count(*) FROM raw.events WHERE user_session LIKE '%\r%'") == [(0,)]


def test_a_large_first_backfill_writes_the_state_a_bounded_number_of_times(ws: Workspace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Thousands of files must not make every write slow: writes are batched, not one per file."""
    from estore_ops.ingest.state import StateStore

    for i in range(300):
        ws.add(f"f{i:04d}.csv", event_lines(1, start=i))
    saves = {"n": 0}
    real_save = StateStore.save

    def counting_save(self, base, state):  # type: ignore[no-untyped-def]
        saves["n"] += 1
        return real_save(self, base, state)

    monkeypatch.setattr(StateStore, "save", counting_save)
    started = __import__("time").monotonic()
    result = ws.cli("load", "--json")
    elapsed = __import__("time").monotonic() - started
    assert result.exit_code == 0
    assert len(ws.rows_by_file()) == 300
    # At most one save per checkpoint interval (1 s) plus the last one; never one per file.
    assert saves["n"] <= elapsed / 1.0 + 2, (saves["n"], elapsed)
    assert json.loads(ws.cli("cursor", "show", "--json").stdout)["counts"]["loaded"] == 300


def test_checkpoint_zero_records_every_file_as_it_commits(ws: Workspace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from estore_ops.ingest.state import StateStore

    monkeypatch.setenv("ESTORE_STATE_CHECKPOINT_SECONDS", "0")
    for i in range(5):
        ws.add(f"f{i}.csv", event_lines(2, start=10 * i))
    saves = {"n": 0}
    real_save = StateStore.save
    monkeypatch.setattr(StateStore, "save", lambda self, b, s: (saves.__setitem__("n", saves["n"] + 1), real_save(self, b, s))[1])
    assert ws.cli("load").exit_code == 0
    assert saves["n"] == 5


def test_a_folder_moved_in_with_old_timestamps_is_loaded_even_after_compaction(ws: Workspace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`mv` of a folder keeps its files' ctime: arrival order alone must never mean 'loaded'."""
    import estore_ops.ingest.pipeline as ingest

    monkeypatch.setattr(ingest, "KEEP_RECORDS", 1)  # fold almost everything, as after thousands of files
    outside = ws.root / "incoming" / "2020"
    from tests.helpers import write_csv

    write_csv(outside / "2020-Jan.csv", event_lines(4, start=700))  # written BEFORE the others arrive
    for name in ("a.csv", "b.csv", "c.csv"):
        ws.add(name, event_lines(2, start=10 * ord(name[0])))
    assert ws.cli("load").exit_code == 0
    assert json.loads(ws.cli("cursor", "show", "--json").stdout)["folded"] == 2
    (outside).rename(ws.landing / "2020")  # the files inside keep their old ctime
    scan = json.loads(ws.cli("scan", "--json").stdout)
    assert [p["name"] for p in scan["pending"]] == ["2020/2020-Jan.csv"]
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file()["2020/2020-Jan.csv"] == 4


def test_a_file_with_an_impossible_name_fails_alone_and_the_others_load(ws: Workspace) -> None:
    ws.add("good.csv", event_lines(3))
    ws.add("odd\\name.csv", event_lines(2))
    result = ws.cli("load", "--json")
    assert result.exit_code == 1, result.output
    files = {f["name"]: f for f in json.loads(result.stdout)["files"]}
    assert "its name contains a backslash" in files["odd\\name.csv"]["error"] and "Rename the file" in files["odd\\name.csv"]["error"]
    assert ws.rows_by_file() == {"good.csv": 3}
    problems = json.loads(ws.cli("cursor", "show", "--json").stdout)["problems"]
    assert [p["name"] for p in problems] == ["odd\\name.csv"]  # recorded: retried, then quarantined
