"""The bad-input corpus (tests/corpus): every kind of bad or odd landing file, loaded in one run.

Each file either loads with exactly the expected rows (the data is fine: CRLF, BOM, reordered
columns, another time zone, duplicated rows, quoted newlines, ...) or fails *that file alone*
with a message that names the file, the line (and the column where there is one) and says what
to do, leaving nothing of it in the warehouse while the other files load. The table of outcomes
is tests/corpus/EXPECTED.md; `test_expected_md_matches_the_cases` keeps it in step with CASES.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import make_corpus
from tests.helpers import Workspace, event_lines

CORPUS = Path(__file__).resolve().parent / "corpus"
AGAIN = "upload"  # every failure message says to upload the fixed file again (or what else to do)

# name -> ("loads", rows) or ("fails", [fragments the error must contain])
CASES: dict[str, tuple[str, Any]] = {
    # data that is fine
    "crlf.csv": ("loads", 5),
    "bom.csv": ("loads", 5),
    "reordered_columns.csv": ("loads", 5),
    "other_timezone.csv": ("loads", 3),
    "duplicated_rows.csv": ("loads", 8),
    "quoted_newline.csv": ("loads", 3),
    "header_only.csv": ("loads", 0),
    "no_final_newline.csv": ("loads", 5),
    "empty_optional_fields.csv": ("loads", 2),
    "multi_member.csv.gz": ("loads", 5),
    "nul_bytes.csv": ("loads", 3),
    "huge_field_1mb.csv": ("loads", 1),
    "blank_lines.csv": ("loads", 2),
    "spaces_around_ids.csv": ("loads", 1),
    "id_notations.csv": ("loads", 1),
    # bad files: that file fails alone
    "empty.csv": ("fails", ["empty.csv is empty (0 bytes)"]),
    "empty.csv.gz": ("fails", ["empty.csv.gz is empty (0 bytes)"]),
    "missing_column.csv": ("fails", ["missing_column.csv, line 1: header has missing column(s) brand"]),
    "renamed_column.csv": ("fails", ["renamed_column.csv, line 1: header has missing column(s) user_session; unexpected column(s) session_id"]),
    "extra_column.csv": ("fails", ["extra_column.csv, line 1: header has unexpected column(s) coupon"]),
    "semicolon_delimited.csv": ("fails", ["semicolon_delimited.csv, line 1: the file looks ';'-delimited", "Export it with ','"]),
    "tab_delimited.csv": ("fails", ["tab_delimited.csv, line 1: the file looks '\\t'-delimited"]),
    "blank_header.csv": ("fails", ["blank_header.csv, line 1: the header line is empty"]),
    "unterminated_quote.csv": ("fails", ["unterminated_quote.csv, line 4: a quoted value is never closed"]),
    "bad_timestamp.csv": ("fails", ['bad_timestamp.csv, line 4, column event_time: Could not convert string "10/01/2019 00:00:02"']),
    "text_in_price.csv": ("fails", ['text_in_price.csv, line 5, column price: Could not convert string "twelve" to \'DOUBLE\'']),
    "negative_price.csv": ("fails", ["negative_price.csv, line 4, column price: negative price -12.5", "refused"]),
    "id_overflow.csv": ("fails", ['id_overflow.csv, line 3, column product_id: "99999999999999999999" is too large for an id']),
    "too_few_fields.csv": ("fails", ["too_few_fields.csv, line 3: the line has 7 fields, 9 expected"]),
    "too_many_fields.csv": ("fails", ["too_many_fields.csv, line 3: the line has 10 fields, 9 expected"]),
    "zero_filled_tail.csv": ("fails", ["zero_filled_tail.csv, line 7: the line is made of NUL (zero) bytes"]),
    "nul_header.csv": ("fails", ["nul_header.csv, line 1: the header contains NUL bytes"]),
    "invalid_utf8.csv": ("fails", ["invalid_utf8.csv, line 4: the line is not valid UTF-8 text", "Export the file as UTF-8"]),
    "utf16.csv": ("fails", ["utf16.csv, line 1: the file is UTF-16 text", "Export it as UTF-8"]),
    "truncated.csv.gz": ("fails", ["truncated.csv.gz is not a readable gzip file", "Upload it again"]),
    "truncated_late.csv.gz": ("fails", ["truncated_late.csv.gz: the gzip data is damaged or cut short", "Upload the complete file again"]),
    "not_gzip.csv.gz": ("fails", ["not_gzip.csv.gz is not a readable gzip file", "rename it to .csv"]),
    "not_csv.csv": ("fails", ["not_csv.csv, line 1: the header is not UTF-8 text, so this is a binary file (not a CSV file)"]),
    "json_not_csv.csv": ("fails", ["json_not_csv.csv, line 1: header has missing column(s) event_time",
                                   "this is not an event CSV file (it starts like JSON)"]),
    "single_line_1mb.csv": ("fails", ["single_line_1mb.csv, line 1: no line break in the first 64 KiB"]),
    # values out of their domain
    "nan_price.csv": ("fails", ['nan_price.csv, line 3, column price: "NaN" is not a finite number', "refused"]),
    "infinite_price.csv": ("fails", ['infinite_price.csv, line 4, column price: "inf" is not a finite number']),
    "overflow_price.csv": ("fails", ['overflow_price.csv, line 3, column price: "1e400" is not a finite number']),
    "fractional_id.csv": ("fails", ['fractional_id.csv, line 3, column product_id: "1.5" has a fraction', "refused"]),
    "exponent_id.csv": ("fails", ['exponent_id.csv, line 3, column user_id: "15e-1" has a fraction']),
    "negative_id.csv": ("fails", ['negative_id.csv, line 2, column category_id: "-2053013552326770905" is negative']),
    "empty_event_time.csv": ("fails", ["empty_event_time.csv, line 4, column event_time: the time is empty"]),
    "infinite_event_time.csv": ("fails", ['infinite_event_time.csv, line 3, column event_time: "infinity" is not a point in time']),
    "all_empty_row.csv": ("fails", ["all_empty_row.csv, line 3: the row is empty (all 9 fields are empty)"]),
    # line endings and garbage at the end
    "cr_line_endings.csv": ("fails", ["cr_line_endings.csv, line 1: the line ends with a CR alone"]),
    "mixed_line_endings.csv": ("fails", ["mixed_line_endings.csv, line 3: the line ends with LF (\\n, Unix) but line 1 ends with CRLF"]),
    "stray_cr.csv": ("fails", ["stray_cr.csv, line 4: the line ends with CR alone (\\r, classic Mac OS) but line 1 ends with LF"]),
    "nul_tail_no_newline.csv": ("fails", ["nul_tail_no_newline.csv, line 6: the line ends in NUL (zero) bytes, 4,096 of them"]),
    "nul_tail_64mb.csv": ("fails", ["nul_tail_64mb.csv, line 7: the line is made of NUL (zero) bytes, 67,108,864 of them"]),
}
LARGE = set(make_corpus.large_files())
GOOD = "control.csv"  # a plain good file loaded in the same run: bad neighbours never stop it


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ESTORE_", "SLACK_"))} | {"DO_NOT_TRACK": "1"}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every corpus file plus one good file in a landing folder, loaded by one real `load` run."""
    root = tmp_path_factory.mktemp("corpus")
    ws = Workspace(root)
    ws.landing.mkdir(parents=True)
    for path in (CORPUS / "files").iterdir():
        shutil.copyfile(path, ws.landing / path.name)
    make_corpus.write(make_corpus.large_files(), ws.landing)
    ws.add(GOOD, event_lines(7, start=90_000))
    proc = subprocess.run([sys.executable, "-m", "estore_ops", "load", "--json"], cwd=root, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout)
    return {"ws": ws, "proc": proc, "files": {f["name"]: f for f in result["files"]}, "rows": ws.rows_by_file()}


def test_the_run_fails_with_exit_1_and_loads_the_good_files(corpus_run: dict[str, Any]) -> None:
    assert corpus_run["proc"].returncode == 1, corpus_run["proc"].stderr
    assert corpus_run["rows"][GOOD] == 7
    assert set(corpus_run["files"]) == set(CASES) | {GOOD}


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_file_outcome(corpus_run: dict[str, Any], name: str) -> None:
    kind, expected = CASES[name]
    outcome = corpus_run["files"][name]
    if kind == "loads":
        assert outcome["status"] == "loaded", outcome["error"]
        assert outcome["rows"] == expected
        assert corpus_run["rows"].get(name, 0) == expected
        return
    assert outcome["status"] == "failed"
    assert name not in corpus_run["rows"], "nothing of a failed file may stay in the warehouse"
    error = outcome["error"]
    for fragment in expected:
        assert fragment in error, error
    assert error.startswith(name) and AGAIN in error.lower() or "move this file" in error, error
    assert len(error) < 700 and "Possible fixes" not in error and "strict_mode" not in error


def _values(ws: Workspace, name: str, cols: str) -> list[tuple[Any, ...]]:
    return ws.query(f"SELECT {cols} FROM raw.events WHERE _source_file = '{name}' ORDER BY product_id")


def test_odd_but_valid_files_load_the_same_values(corpus_run: dict[str, Any]) -> None:
    ws = corpus_run["ws"]
    cols = "event_time, event_type, product_id, category_id, category_code, brand, price, user_id, user_session"
    reference = _values(ws, "no_final_newline.csv", cols)
    for name in ("crlf.csv", "bom.csv", "reordered_columns.csv", "multi_member.csv.gz"):
        assert _values(ws, name, cols) == reference, name
    assert _values(ws, "duplicated_rows.csv", cols) == sorted(reference + reference[:3], key=lambda r: r[2])


def test_other_time_zones_are_converted_to_utc(corpus_run: dict[str, Any]) -> None:
    times = [r[0] for r in _values(corpus_run["ws"], "other_timezone.csv", "epoch_us(event_time)")]
    base = datetime(2019, 10, 1, tzinfo=timezone.utc).timestamp() * 1_000_000
    assert times == [base, base + 1_000_000, base + 2_000_000]


def test_integer_notations_load_their_exact_value(corpus_run: dict[str, Any]) -> None:
    ws = corpus_run["ws"]
    assert _values(ws, "id_notations.csv", "product_id, category_id, user_id") == [(500_000_000, 31, 1000)]
    assert _values(ws, "spaces_around_ids.csv", "product_id, user_id") == [(1000, 500_000_000)]


def test_quoted_newline_and_nul_stay_inside_their_value(corpus_run: dict[str, Any]) -> None:
    ws = corpus_run["ws"]
    assert [r[0] for r in _values(ws, "quoted_newline.csv", "brand")] == ["samsung", "sam\nsung, inc.", "samsung"]
    assert [r[0] for r in _values(ws, "nul_bytes.csv", "brand")] == ["samsung", "sam\x00sung", "samsung"]
    assert [r[0] for r in _values(ws, "empty_optional_fields.csv", "brand")] == [None, None]


def test_the_kept_corpus_matches_its_generator() -> None:
    on_disk = {p.name: p.read_bytes() for p in (CORPUS / "files").iterdir()}
    assert on_disk == make_corpus.small_files(), "run: python tests/corpus/make_corpus.py"
    assert set(CASES) == set(on_disk) | LARGE


def test_expected_md_matches_the_cases() -> None:
    table = {}
    for line in (CORPUS / "EXPECTED.md").read_text().splitlines():
        m = re.match(r"\|\s*`([^`]+)`[^|]*\|[^|]*\|\s*(loads|fails)\b([^|]*)\|", line)
        if m:
            table[m.group(1)] = (m.group(2), m.group(3))
    assert set(table) == set(CASES)
    for name, (kind, expected) in CASES.items():
        assert table[name][0] == kind, name
        if kind == "loads":
            assert f"{expected} row" in table[name][1], name


# -- a file renamed while it loads ---------------------------------------------------------------


def test_file_renamed_after_the_scan_fails_alone(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import estore_ops.ingest.pipeline as ingest

    ws.add("a.csv", event_lines(4))
    ws.add("b.csv", event_lines(5, start=100))
    ws.add("c.csv", event_lines(6, start=200))
    check = ingest.check_header

    def renaming_check(store: Any, info: Any) -> Any:
        if info.name == "b.csv":
            os.rename(ws.landing / "b.csv", ws.landing / "b-renamed.csv")
        return check(store, info)

    monkeypatch.setattr(ingest, "check_header", renaming_check)
    result = ws.cli("load", "--json")
    assert result.exit_code == 1
    files = {f["name"]: f for f in json.loads(result.stdout)["files"]}
    assert "b.csv disappeared from the landing area after the scan" in files["b.csv"]["error"]
    assert ws.rows_by_file() == {"a.csv": 4, "c.csv": 6}
    monkeypatch.setattr(ingest, "check_header", check)
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"a.csv": 4, "c.csv": 6, "b-renamed.csv": 5}


def test_file_renamed_during_its_load_fails_alone(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import estore_ops.backends.warehouses.duckdb as wd

    ws.add("a.csv", event_lines(4))
    ws.add("b.csv", event_lines(5, start=100))
    ws.add("c.csv", event_lines(6, start=200))
    hits = {"n": 0}
    point = wd.fault_point

    def rename_in_second_transaction(name: str, subject: str = "") -> None:
        if name == "inside_transaction":
            hits["n"] += 1
            if hits["n"] == 2:  # b.csv's rows are read, not committed yet
                os.rename(ws.landing / "b.csv", ws.landing / "b-renamed.csv")
        point(name, subject)

    monkeypatch.setattr(wd, "fault_point", rename_in_second_transaction)
    result = ws.cli("load", "--json")
    assert result.exit_code in (0, 1), result.stderr
    assert ws.rows_by_file() == {"a.csv": 4, "c.csv": 6}
    monkeypatch.setattr(wd, "fault_point", point)
    assert ws.cli("load").exit_code == 0
    assert ws.rows_by_file() == {"a.csv": 4, "c.csv": 6, "b-renamed.csv": 5}


def test_file_deleted_before_duckdb_reads_it_is_described(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import estore_ops.backends.warehouses.duckdb as wd

    monkeypatch.setenv("ESTORE_LOAD_BATCH_MB", "0")  # one transaction per file: a.csv commits before b.csv is read
    ws.add("a.csv", event_lines(4))
    ws.add("b.csv", event_lines(5, start=100))
    point = wd.fault_point

    def delete_next(name: str, subject: str = "") -> None:
        if name == "after_commit" and (ws.landing / "b.csv").exists():
            (ws.landing / "b.csv").unlink()  # after a.csv committed, before b.csv is read
        point(name, subject)

    monkeypatch.setattr(wd, "fault_point", delete_next)
    result = ws.cli("load", "--json")
    files = {f["name"]: f for f in json.loads(result.stdout)["files"]}
    assert "b.csv disappeared from the landing area while it was loading" in files["b.csv"]["error"]
    assert ws.rows_by_file() == {"a.csv": 4}


def test_file_deleted_before_its_batch_is_read_fails_alone(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's read fails as a whole; the files then load one by one and only b.csv fails."""
    import estore_ops.ingest.pipeline as ingest

    ws.add("a.csv", event_lines(4))
    ws.add("b.csv", event_lines(5, start=100))
    ws.add("c.csv", event_lines(6, start=200))
    check = ingest._check_entry

    def delete_b_after_its_checks(landing: Any, info: Any) -> Any:
        result = check(landing, info)
        if info.name == "b.csv":
            (ws.landing / "b.csv").unlink()
        return result

    monkeypatch.setattr(ingest, "_check_entry", delete_b_after_its_checks)
    result = ws.cli("load", "--json")
    files = {f["name"]: f for f in json.loads(result.stdout)["files"]}
    assert "b.csv disappeared from the landing area while it was loading" in files["b.csv"]["error"]
    assert files["a.csv"]["batch_files"] == files["c.csv"]["batch_files"] == 1  # loaded alone after the fallback
    assert ws.rows_by_file() == {"a.csv": 4, "c.csv": 6}
