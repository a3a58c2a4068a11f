"""The smaller reliability fixes of issue 13, each with the behaviour a user relies on.

(Two more live with their topic: a link to another landing file loading its rows twice is in
test_landing_entries.py, key=value output quoting tabs in test_terminal_output.py.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest

from estore_ops.errors import ExitCode
from tests.helpers import Workspace, event_lines
from tests.slack_server import FakeSlack, slack  # noqa: F401 - fixture


def test_runs_limit_0_is_a_usage_error(ws: Workspace) -> None:
    result = ws.run("runs", "--limit", "0")
    assert result.returncode == ExitCode.USAGE
    assert "Invalid value for '--limit'" in result.stderr and "unexpected" not in result.stderr


def test_report_before_any_transform_says_to_run_transform(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(5))
    assert ws.cli("load").exit_code == 0
    result = ws.run("report")
    assert result.returncode == ExitCode.FAILED
    assert "The marts are not built yet" in result.stderr and "run `estore-ops transform` first" in result.stderr
    assert "unexpected" not in result.stderr and "CatalogException" not in result.stderr


def _marts_with_nan(db: Path) -> None:
    """Marts as a transform over NaN prices (loaded before the domain checks existed) left them:
    DOUBLE money (exact decimals came later), with the contract's column names."""
    con = duckdb.connect(str(db))
    try:
        con.execute("CREATE SCHEMA IF NOT EXISTS marts")
        con.execute("CREATE TABLE marts.dim_user_rfm AS SELECT * FROM (VALUES ('champions', 'nan'::DOUBLE), "
                    "('loyal', 10.0), ('lost', 'inf'::DOUBLE)) AS t(rfm_segment, total_revenue)")
        con.execute("CREATE TABLE marts.fct_sessions AS SELECT 1 AS reached_view, 0 AS reached_cart, "
                    "0 AS reached_purchase")
        con.execute("CREATE TABLE marts.metrics_churn AS SELECT 'cohort_overall' AS metric_level, "
                    "'all_eligible_cohorts' AS time_period, "
                    "DATE '2019-10-01' AS cohort_start, DATE '2019-10-31' AS cohort_end, 'nan'::DOUBLE AS total_customers, "
                    "1 AS churned_customers")
    finally:
        con.close()


def test_report_never_prints_nan(ws: Workspace) -> None:
    ws.db.parent.mkdir(parents=True, exist_ok=True)
    _marts_with_nan(ws.db)
    text = ws.run("report")
    assert text.returncode == 0, text.stderr
    assert "nan" not in text.stdout.lower() and "inf" not in text.stdout.lower(), text.stdout
    as_json = ws.run("report", "--json")
    assert as_json.returncode == 0
    data = json.loads(as_json.stdout)  # strict JSON: no NaN literal
    assert "NaN" not in as_json.stdout and "Infinity" not in as_json.stdout
    assert {r["segment"]: r["revenue"] for r in data["rfm_segments"]} == {"champions": None, "loyal": 10.0, "lost": None}


def test_a_corrupt_previous_state_never_recommends_restore_again(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(3))
    assert ws.cli("load").exit_code == 0
    (ws.state / "cursor.json").write_bytes(b"{broken")
    (ws.state / "cursor.prev.json").write_bytes(b"\x89 not json either")
    result = ws.cli("cursor", "restore", "--yes")
    assert result.exit_code == ExitCode.STATE
    assert "cursor.prev.json is not valid JSON" in result.output
    assert "cursor reset --all --yes" in result.output and "cursor restore" not in result.output


def test_a_long_retry_after_never_exceeds_the_alert_time_cap(ws: Workspace, slack: FakeSlack,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import estore_ops.ops.notify.slack as slack_module

    monkeypatch.setattr(slack_module, "MAX_SECONDS", 3)
    monkeypatch.setattr(slack_module, "MAX_RETRY_AFTER", 2)  # Slack asks for 2 s each time: a third try would end past 3 s
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    slack.script = [(429, {"Retry-After": "2"}, {"ok": False, "error": "rate_limited"})] * 10
    started = time.monotonic()
    result = ws.cli("alert", "test")
    elapsed = time.monotonic() - started
    assert result.exit_code != 0 and "429" in result.output
    assert elapsed < 3.0, f"the alert took {elapsed:.1f}s, past its 3 s cap"
    assert len(slack.requests) == 2  # it did honour the first Retry-After


def test_a_usage_error_in_load_file_sends_no_alert_and_records_no_run(ws: Workspace, slack: FakeSlack,  # noqa: F811
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    ws.add("a.csv", event_lines(2))
    for args in (["--file", "notes.txt"], ["--file", "missing.csv"]):
        result = ws.cli("load", *args)
        assert result.exit_code == ExitCode.USAGE, result.output
    assert slack.requests == []
    assert not (ws.state / "runs.json").exists() or json.loads((ws.state / "runs.json").read_text()) == []


@pytest.mark.parametrize("folder", ["/", "/var", "/usr/", "/var/lib/..", "/etc"])
@pytest.mark.parametrize("option", ["--state-dir", "--work-dir"])
def test_systemd_install_refuses_the_root_or_a_system_folder(ws: Workspace, option: str, folder: str) -> None:
    result = ws.run("systemd", "install", "--dry-run", option, folder)
    assert result.returncode != 0
    assert "ReadWritePaths=/" not in result.stdout
    assert "write access to all of it" in result.stderr
