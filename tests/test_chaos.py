"""Transient and permanent backend faults: the chaos+ backends, the retry policy, alerts that hang.

`chaos+<url>?fail=..&permanent=..&lost=..&seed=..` wraps a store or a warehouse and fails a share
of its calls (estore_ops/testing/chaos_store.py, estore_ops/testing/chaos_warehouse.py). Like the real backends,
the chaos backends run each call under the one retry policy (estore_ops/backends/retry.py): callers never
retry.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from estore_ops.backends import retry
from estore_ops.errors import BackendError, ConfigError, ExitCode, TransientBackendError
from estore_ops.backends.stores import open_store
from estore_ops.testing.chaos_store import ChaosStore
from estore_ops.backends.warehouses import open_warehouse
from estore_ops.testing.chaos_warehouse import ChaosWarehouse
from tests.helpers import HEADER, Workspace, event_lines

FILES = {"a.csv": 30, "b.csv.gz": 20, "c.csv": 25, "d.csv": 15, "e.csv.gz": 10}


def _add_files(ws: Workspace) -> None:
    for i, (name, n) in enumerate(FILES.items()):
        ws.add(name, event_lines(n, start=i * 1000))


def _chaos_env(ws: Workspace, monkeypatch: pytest.MonkeyPatch, store: str = "", warehouse: str = "") -> None:
    if store:
        monkeypatch.setenv("ESTORE_LANDING", f"chaos+file://{ws.landing}?{store}")
        monkeypatch.setenv("ESTORE_STATE", f"chaos+file://{ws.state}?{store}")
    if warehouse:
        monkeypatch.setenv("ESTORE_WAREHOUSE", f"chaos+duckdb:///{ws.db}?{warehouse}")


def _exact(ws: Workspace) -> None:
    assert ws.rows_by_file() == FILES
    assert ws.query("SELECT count(*) FROM (SELECT DISTINCT * EXCLUDE (_loaded_at) FROM raw.events)") == [(sum(FILES.values()),)]


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "POLICY", retry.RetryPolicy(attempts=8, initial_wait=0.001, max_wait=0.01))


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every injected fault surfaces: to measure the chaos backends' own fault rates."""
    monkeypatch.setattr(retry, "POLICY", retry.RetryPolicy(attempts=1))


# -- the chaos backends themselves ----------------------------------------------------------------


def test_chaos_urls_wrap_the_inner_backend(tmp_path: Path) -> None:
    store = open_store(f"chaos+file://{tmp_path}/landing?fail=0.25&permanent=0.05&seed=3", "landing")
    assert isinstance(store, ChaosStore) and store.uri() == str(tmp_path / "landing")
    assert store.local_path("x.csv") is None  # reads go through open(), where faults can happen
    assert open_store(f"chaos+file://{tmp_path}/l?local=1").local_path("x.csv") == tmp_path / "l" / "x.csv"
    wh = open_warehouse(f"chaos+duckdb:///{tmp_path}/w.duckdb?fail=0.1")
    assert isinstance(wh, ChaosWarehouse) and wh.inner.url == f"duckdb:///{tmp_path}/w.duckdb"


@pytest.mark.parametrize(
    "query, message",
    [("fail=1.5", "fail=1.5 is not between 0 and 1"), ("fail=x", "fail='x' is not a number"),
     ("fail=0.7&permanent=0.5", "fail + permanent is more than 1"), ("ops=stat,rename", "unknown ops ['rename']")],
)
def test_bad_chaos_parameters_are_configuration_errors(ws: Workspace, monkeypatch: pytest.MonkeyPatch, query: str, message: str) -> None:
    monkeypatch.setenv("ESTORE_LANDING", f"chaos+file://{ws.landing}?{query}")
    result = ws.cli("scan")
    assert result.exit_code == ExitCode.USAGE
    assert message in result.output


def test_fault_rates_and_kinds(tmp_path: Path, no_retries: None) -> None:
    store = open_store(f"chaos+file://{tmp_path}?fail=0.3&permanent=0.1&seed=11")
    store.inner.write("x", b"data")
    outcomes = {"ok": 0, "transient": 0, "permanent": 0}
    messages = set()
    for _ in range(2000):
        try:
            store.stat("x")
            outcomes["ok"] += 1
        except TransientBackendError as exc:
            outcomes["transient"] += 1
            messages.add(str(exc.__cause__).split(": ", 1)[1].split(" (")[0])  # the injected fault
        except BackendError as exc:
            outcomes["permanent"] += 1
            assert "HTTP 403 Forbidden" in str(exc) and "permanent" in str(exc)
    assert 0.26 < outcomes["transient"] / 2000 < 0.34
    assert 0.07 < outcomes["permanent"] / 2000 < 0.13
    assert messages == {"HTTP 429 Too Many Requests", "HTTP 503 Service Unavailable", "connection reset by peer"}


def test_same_seed_same_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_retries: None) -> None:
    from estore_ops.testing import chaos_store as chaos

    def sequence() -> list[bool]:
        monkeypatch.setattr(chaos, "_OPENED", {})  # as in a new process
        store = open_store(f"chaos+file://{tmp_path}?fail=0.5&seed=5")
        out = []
        for _ in range(50):
            try:
                store.exists("nothing")
                out.append(True)
            except TransientBackendError:
                out.append(False)
        return out

    first = sequence()
    assert first == sequence()
    assert 10 < first.count(False) < 40


def test_a_stream_that_breaks_in_the_middle_resumes_where_it_stopped(tmp_path: Path, fast_retries: None) -> None:
    store = open_store(f"chaos+file://{tmp_path}?fail=0.6&ops=stream&seed=9")
    data = bytes(range(256)) * 400  # 102,400 bytes, every offset distinguishable
    store.inner.write("big.csv", data)
    with store.open("big.csv") as fh:
        got = b""
        while chunk := fh.read(7000):
            got += chunk
    assert got == data  # the reader saw every byte once, in order, and no error
    assert store.plan.injected["transient"] >= 3  # it did break (and resume) on the way (seed 9: 6 breaks)


def test_a_permanent_stream_error_is_not_retried(tmp_path: Path, fast_retries: None) -> None:
    store = open_store(f"chaos+file://{tmp_path}?permanent=1&ops=stream&seed=2")
    store.inner.write("big.csv", b"x" * 100_000)
    with store.open("big.csv") as fh, pytest.raises(BackendError, match="HTTP 403") as raised:
        while fh.read(7000):
            pass
    assert not isinstance(raised.value, TransientBackendError)
    assert store.plan.injected["permanent"] == 1


# -- the retry policy ----------------------------------------------------------------------------


def test_the_policy_retries_transient_errors_then_succeeds(fast_retries: None) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise TransientBackendError("HTTP 503")
        return "ok"

    assert retry.POLICY.call(flaky, what="flaky") == "ok"
    assert len(calls) == 4


def test_the_policy_is_bounded_and_says_it_gave_up(fast_retries: None) -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise TransientBackendError("stat gs://b/x: HTTP 503")

    started = time.monotonic()
    with pytest.raises(TransientBackendError, match=rf"stat x: stat gs://b/x: HTTP 503 \(gave up after {retry.POLICY.attempts} attempts") as raised:
        retry.POLICY.call(down, what="stat x")
    assert raised.value.exhausted  # an outer layer must not retry it again
    assert len(calls) == retry.POLICY.attempts
    assert time.monotonic() - started < 2


def test_the_policy_total_time_is_bounded() -> None:
    policy = retry.RetryPolicy(attempts=100, max_seconds=0.3, initial_wait=0.1, max_wait=0.2)

    def slow_and_down() -> None:
        time.sleep(0.1)
        raise TransientBackendError("HTTP 429")

    started = time.monotonic()
    with pytest.raises(TransientBackendError):
        policy.call(slow_and_down, what="slow")
    assert time.monotonic() - started < 0.3 + policy.max_wait + 0.2


def test_the_policy_does_not_retry_permanent_errors() -> None:
    calls = []

    def forbidden() -> None:
        calls.append(1)
        raise BackendError("HTTP 403")

    with pytest.raises(BackendError, match="HTTP 403"):
        retry.POLICY.call(forbidden, what="forbidden")
    assert calls == [1]


def test_an_exhausted_transient_error_is_not_retried_again(fast_retries: None) -> None:
    """A backend wrapped in another (chaos+gs://) never multiplies the inner one's retries."""
    calls = []

    def inner_gave_up() -> None:
        calls.append(1)
        raise TransientBackendError("gave up after 6 attempts", exhausted=True)

    with pytest.raises(TransientBackendError, match="gave up after 6 attempts"):
        retry.POLICY.call(inner_gave_up, what="outer")
    assert calls == [1]


# -- loads under faults --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "store, warehouse, what",
    [
        ("permanent=1&ops=list", "", "list"),
        ("permanent=1&ops=read", "", "read"),
        ("", "permanent=1&ops=load", "load a.csv into"),
        ("", "permanent=1&ops=ensure", "create the raw table"),
    ],
)
def test_permanent_errors_fail_fast_with_a_clear_message(ws: Workspace, monkeypatch: pytest.MonkeyPatch,
                                                         store: str, warehouse: str, what: str) -> None:
    _add_files(ws)
    _chaos_env(ws, monkeypatch, store, warehouse)
    started = time.monotonic()
    result = ws.cli("load")
    assert time.monotonic() - started < 5
    assert result.exit_code == ExitCode.BACKEND, result.output
    assert f"error: {what}" in result.stderr and "HTTP 403 Forbidden: permission denied" in result.stderr
    assert "Grant the service account access" in result.stderr
    assert not ws.rows_by_file()


def _converge(ws: Workspace, max_runs: int) -> list[int]:
    codes = []
    for _ in range(max_runs):
        result = ws.cli("load", "--json")
        codes.append(result.exit_code)
        assert result.exit_code in (0, 1, ExitCode.BACKEND, ExitCode.STATE, ExitCode.LOCKED), result.output
        if result.exit_code == 0 and json.loads(result.stdout)["files_loaded"] == 0 and ws.rows_by_file() == FILES:
            break
    return codes


def test_repeated_runs_converge_to_exact_rows_under_transient_and_lost_answer_faults(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    """Without counting on retries: every run that dies on a fault leaves a consistent state, so
    plain reruns end with exactly the right rows, even when writes and commits happened but their
    answer was lost (lost=0.5)."""
    _add_files(ws)
    _chaos_env(ws, monkeypatch, "fail=0.08&lost=0.5&seed=4", "fail=0.3&lost=0.5&seed=9")
    codes = _converge(ws, 80)
    monkeypatch.delenv("ESTORE_LANDING")
    monkeypatch.delenv("ESTORE_STATE")
    monkeypatch.delenv("ESTORE_WAREHOUSE")
    assert ws.cli("load").exit_code == 0, codes
    _exact(ws)
    show = json.loads(ws.cli("cursor", "show", "--json").stdout)
    assert show["counts"] == {"loaded": len(FILES), "failed": 0, "quarantined": 0}, codes


def test_lost_commit_answers_never_duplicate_rows(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _add_files(ws)
    _chaos_env(ws, monkeypatch, warehouse="fail=0.5&lost=1&ops=load&seed=1")
    codes = _converge(ws, 30)
    assert codes[-1] == 0, codes
    _exact(ws)


def test_one_run_completes_at_a_30_percent_transient_failure_rate(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    _add_files(ws)
    _chaos_env(ws, monkeypatch, "fail=0.3&seed=1", "fail=0.3&seed=2")
    started = time.monotonic()
    result = ws.cli("load", "--json")
    assert time.monotonic() - started < 30
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files_loaded"] == len(FILES)
    _exact(ws)
    assert retry.stats["retries"] > 0


# -- alerting under faults: Slack that never answers ---------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers (a hung Slack, a black-holing proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        server.close()


def test_slack_that_never_answers_keeps_the_original_failure_and_exit_code(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, silent_server: int
) -> None:
    from estore_ops.ops.notify import slack

    # TIMEOUT is 10 s per attempt in production (4 attempts, 30 s overall); 1 s keeps this test short.
    monkeypatch.setattr(slack, "TIMEOUT", 1)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1234567890-TESTTOKENVALUE")
    monkeypatch.setenv("ESTORE_SLACK_CHANNEL", "#x")
    monkeypatch.setenv("ESTORE_SLACK_API_URL", f"http://127.0.0.1:{silent_server}/api/")
    ws.add("good.csv", event_lines(3))
    ws.add("bad.csv", event_lines(2), header=HEADER.replace("brand", "brand_name"))
    started = time.monotonic()
    result = ws.cli("load")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert "bad.csv, line 1: header has missing column(s) brand" in result.output
    assert "alert not delivered: Slack could not be reached" in result.stderr
    assert "xoxb-1234567890-TESTTOKENVALUE" not in result.output
    assert elapsed < slack.MAX_SECONDS
    assert ws.rows_by_file() == {"good.csv": 3}


def test_slack_that_never_answers_does_not_fail_a_good_run(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, silent_server: int
) -> None:
    from estore_ops.ops.notify import slack

    monkeypatch.setattr(slack, "TIMEOUT", 1)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{silent_server}/services/T0/B0/x")
    ws.add("bad.csv", event_lines(2), header="x,y")
    assert ws.cli("load").exit_code == 1  # a failure alert that hangs
    ws.add("bad.csv", event_lines(2))  # fixed: the recovery alert hangs too
    result = ws.cli("load")
    assert result.exit_code == 0, result.output
    assert ws.rows_by_file() == {"bad.csv": 2}
