"""The real services' failure answers, through the fault proxy (tests/fault_proxy.py).

`load`, `cursor`, the lock and `transform` run through the CLI against fake-gcs-server and
bqemulator, with a FaultProxy in front of each that answers scripted requests the way Google
documents them:

- BigQuery rate and quota limits are HTTP 403 with `errors[].reason` rateLimitExceeded /
  quotaExceeded (https://cloud.google.com/bigquery/docs/troubleshoot-quotas); access denied is
  403 accessDenied (https://cloud.google.com/bigquery/docs/error-messages);
- a job insert can answer 409 and the first jobs.get of that id 404
  (googleapis/python-bigquery#2134; google.cloud.bigquery.retry._should_retry_get_job_conflict);
- a job can end with `status.errorResult.reason = backendError`: "the job failed. You can safely
  retry the job" (https://cloud.google.com/bigquery/docs/error-messages, backendError);
- Cloud Storage answers 408, 429, 500 and 503, to be retried
  (https://cloud.google.com/storage/docs/retry-strategy,
  https://cloud.google.com/storage/docs/json_api/v1/status-codes);
- any request can be applied and its answer lost (a reset connection).

Every test checks what the user relies on: rows per file exact, no duplicate job, no quarantine for
transient faults, quarantine after repeated job failures, and clear messages.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from estore_ops.backends import retry
from estore_ops.errors import ExitCode
from estore_ops.ingest.state import TRANSIENT_FAILURES_PER_ATTEMPT
from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse
from tests.fault_proxy import (
    BQ_ACCESS_DENIED,
    BQ_QUOTA,
    BQ_RATE_LIMIT,
    GCS_INTERNAL,
    GCS_RATE_LIMIT,
    GCS_TIMEOUT,
    GCS_UNAVAILABLE,
    FaultProxy,
    Seen,
    gcp_through_proxies,
    failed_job,
    google_error,
    job_already_exists,
    job_not_found,
    running_job,
    wait_for,
)
from tests.gcp_emulators import PROJECT, bq_dataset, bq_emulator, fake_gcs, gcs_bucket  # noqa: F401 - fixtures
from tests.helpers import HEADER, Workspace, event_lines
from tests.slack_server import slack  # noqa: F401 - fixture

pytestmark = pytest.mark.gcp

JOBS = r"/bigquery/v2/projects/[^/]+/jobs$"
JOB = r"/bigquery/v2/projects/[^/]+/jobs/([^/]+)$"


def _csv(lines: list[str], gz: bool = False) -> bytes:
    data = ("\n".join([HEADER, *lines]) + "\n").encode()
    return gzip.compress(data, mtime=0) if gz else data


def _job_id(seen: Seen) -> str:
    if isinstance(seen.body, dict) and "jobReference" in seen.body:
        return str(seen.body["jobReference"]["jobId"])
    return seen.path.rsplit("/", 1)[-1]


def _kind(seen: Seen) -> str:
    config = (seen.body or {}).get("configuration", {}) if isinstance(seen.body, dict) else {}
    return "load" if "load" in config else "query" if "query" in config else ""


def _for_file(name: str):  # type: ignore[no-untyped-def]
    """A request predicate: a load job insert reading this landing file."""
    def match(seen: Seen) -> bool:
        uris = ((seen.body or {}).get("configuration", {}).get("load", {}) or {}).get("sourceUris", []) if isinstance(seen.body, dict) else []
        return any(u.endswith("/" + name) for u in uris)
    return match


@dataclass
class Cloud:
    ws: Workspace
    gcs: FaultProxy
    bq: FaultProxy
    landing: Any  # a store straight to the emulator (test setup)
    warehouse: BigQueryWarehouse  # straight to the emulator (assertions)
    dataset: str

    def put(self, name: str, lines: list[str]) -> None:
        self.landing.write(name, _csv(lines, gz=name.endswith(".gz")))

    def load(self, *args: str) -> Any:
        return self.ws.cli("load", "--json", *args)

    def cursor(self) -> dict[str, Any]:
        result = self.ws.cli("cursor", "show", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def inserted_jobs(self, prefix: str = "estore_") -> list[str]:
        return [_job_id(s) for s in self.bq.requests("POST", JOBS) if _job_id(s).startswith(prefix)]


@pytest.fixture
def fast_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "POLICY", retry.RetryPolicy(attempts=6, max_seconds=30, initial_wait=0.01, max_wait=0.05))


@pytest.fixture
def cloud(ws: Workspace, fake_gcs, bq_emulator, gcs_bucket, bq_dataset, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
          fast_policy: None) -> Iterator[Cloud]:
    with gcp_through_proxies(monkeypatch, fake_gcs, bq_emulator, gcs_bucket, bq_dataset) as (gcs, bq):
        landing = fake_gcs.store(f"gs://{gcs_bucket}/landing")
        warehouse = BigQueryWarehouse.from_url(bq_emulator.url(bq_dataset), client=bq_emulator.client())
        yield Cloud(ws, gcs, bq, landing, warehouse, bq_dataset)


# -- BigQuery: classify by reason, not by status ---------------------------------------------------


def test_bigquery_rate_limit_403_is_retried_not_reported_as_a_missing_role(cloud: Cloud) -> None:
    cloud.put("a.csv", event_lines(10))
    cloud.bq.error("POST", JOBS, BQ_RATE_LIMIT, times=2, when=lambda s: _kind(s) == "load")
    result = cloud.load()
    assert result.exit_code == 0, result.output
    assert cloud.warehouse.rows_by_file() == {"a.csv": 10}
    refused = [s for s in cloud.bq.requests("POST", JOBS) if s.answered == "error 403"]
    assert len(refused) == 2 and len(set(map(_job_id, refused))) == 1  # the same id, retried
    assert "roles/" not in result.output
    assert len(cloud.inserted_jobs("estore_load_")) == 3  # two refused attempts, then the job


def test_bigquery_quota_exceeded_waits_for_the_next_run_and_never_quarantines(cloud: Cloud) -> None:
    cloud.put("a.csv", event_lines(10))
    cloud.bq.error("POST", JOBS, BQ_QUOTA, times=None, when=lambda s: _kind(s) == "load")
    for _ in range(4):  # more runs than max_attempts
        result = cloud.load()
        assert result.exit_code == 1, result.output
        out = json.loads(result.stdout)
        assert "quotaExceeded" in out["files"][0]["error"] or "Quota exceeded" in out["files"][0]["error"]
        assert "roles/" not in out["files"][0]["error"]
    assert cloud.cursor()["counts"] == {"loaded": 0, "failed": 0, "quarantined": 0}  # never counted
    # A quota is a longer-term limit: not retried within a run (one insert per run).
    assert len(cloud.inserted_jobs("estore_load_")) == 4
    cloud.bq.clear()
    assert cloud.load().exit_code == 0
    assert cloud.warehouse.rows_by_file() == {"a.csv": 10}


def test_bigquery_access_denied_stops_the_run_naming_the_roles_and_counts_nothing(cloud: Cloud) -> None:
    cloud.put("a.csv", event_lines(10))
    cloud.bq.error("POST", JOBS, BQ_ACCESS_DENIED, times=None, when=lambda s: _kind(s) == "load")
    for _ in range(4):
        result = cloud.load()
        assert result.exit_code == ExitCode.BACKEND, result.output
        assert "roles/bigquery.dataEditor" in result.stderr and "roles/bigquery.jobUser" in result.stderr
    # Permissions are a fault of the setup, never of a file: nothing counted, nothing quarantined.
    assert cloud.cursor()["counts"] == {"loaded": 0, "failed": 0, "quarantined": 0}
    assert len([s for s in cloud.bq.requests("POST", JOBS) if s.answered == "error 403"]) == 4  # not retried


# -- BigQuery: job ids, lost answers, job-level failures -------------------------------------------


def test_a_409_on_job_insert_then_a_404_reattaches_to_the_same_job(cloud: Cloud) -> None:
    """Our insert went through but its answer was lost: the retried insert answers 409, and the
    first jobs.get of that id answers 404. The load must use that job, with the job's location."""
    cloud.put("a.csv", event_lines(12))
    inserted: list[str] = []

    def created_but_conflict(seen: Seen, status: int, body: Any) -> tuple[int, Any]:
        inserted.append(_job_id(seen))
        return job_already_exists(PROJECT, "US", _job_id(seen))

    cloud.bq.rewrite("POST", JOBS, created_but_conflict, when=lambda s: _kind(s) == "load")
    cloud.bq.answer("GET", JOB, lambda s: job_not_found(PROJECT, "US", _job_id(s)), when=lambda s: bool(inserted) and _job_id(s) == inserted[0])
    result = cloud.load()
    assert result.exit_code == 0, result.output
    assert cloud.warehouse.rows_by_file() == {"a.csv": 12}
    assert cloud.inserted_jobs("estore_load_") == inserted  # one insert: no second load job
    lookups = [s for s in cloud.bq.requests("GET", JOB) if _job_id(s) == inserted[0]]
    assert [s.answered for s in lookups][-2:] == ["answered", "forwarded"]  # the 404, then found
    assert all(s.param("location") == "US" for s in lookups)
    assert len(cloud.inserted_jobs("estore_commit_")) == 1


def test_a_job_that_ends_in_backend_error_is_deferred_retried_under_a_fresh_id_and_quarantined_once(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch, slack  # noqa: ANN001 - fixture
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token-value")
    monkeypatch.setenv("ESTORE_SLACK_CHANNEL", "#alerts")
    monkeypatch.setenv("ESTORE_SLACK_API_URL", slack.api_url)
    cloud.put("good.csv", event_lines(7))
    cloud.put("flaky.csv", event_lines(5, start=100))
    failing: set[str] = set()

    def backend_error(seen: Seen, status: int, body: Any) -> tuple[int, Any]:
        failing.add(_job_id(seen))
        return status, failed_job(body)

    cloud.bq.rewrite("POST", JOBS, backend_error, times=None, when=_for_file("flaky.csv"))
    cloud.bq.rewrite("GET", JOB, lambda s, st, b: (st, failed_job(b)), times=None, when=lambda s: _job_id(s) in failing)

    runs_before_quarantine = TRANSIENT_FAILURES_PER_ATTEMPT * 3 - 1  # max_attempts = 3
    for run in range(runs_before_quarantine):
        result = cloud.load()
        assert result.exit_code == 0, result.output  # deferred: not a failure of the run, no alert
        flaky = next(f for f in json.loads(result.stdout)["files"] if f["name"] == "flaky.csv")
        assert flaky["status"] == "deferred" and "backendError" in flaky["error"]
    assert cloud.warehouse.rows_by_file() == {"good.csv": 7}
    assert cloud.cursor()["counts"]["quarantined"] == 0  # transient faults alone do not quarantine early
    assert not [m for m in slack.messages if "flaky.csv" in m]

    last = cloud.load()
    assert last.exit_code == 1  # the failure that quarantines it is reported and alerted, once
    assert cloud.cursor()["counts"]["quarantined"] == 1
    assert len([m for m in slack.messages if "flaky.csv" in m]) == 1
    again = cloud.load()
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["skipped"] == [{"name": "flaky.csv", "why": "quarantined (use cursor reset --file to retry)"}]
    assert len([m for m in slack.messages if "flaky.csv" in m]) == 1

    ids = cloud.inserted_jobs("estore_load_")
    flaky_ids = sorted(failing)
    assert len(flaky_ids) == runs_before_quarantine + 1  # a fresh job id every run
    assert len(ids) == len(set(ids))  # no job id was inserted twice
    assert cloud.warehouse.rows_by_file() == {"good.csv": 7}

    # Once BigQuery is healthy again, `cursor reset --file` brings it back.
    cloud.bq.clear()
    assert cloud.ws.cli("cursor", "reset", "--file", "flaky.csv", "--yes").exit_code == 0
    assert cloud.load().exit_code == 0
    assert cloud.warehouse.rows_by_file() == {"good.csv": 7, "flaky.csv": 5}


def test_a_commit_whose_staging_table_expired_is_transient(cloud: Cloud) -> None:
    """BigQuery answers a statement over an expired staging table with a job-level notFound: the
    files are staged again under new ids on the next run, not counted as bad files."""
    cloud.put("a.csv", event_lines(6))
    commit_ids: list[str] = []

    def staging_table_gone(seen: Seen, status: int, body: Any) -> tuple[int, Any]:
        commit_ids.append(_job_id(seen))
        table = f"{PROJECT}:{cloud.dataset}._estore_stage_x"
        return status, failed_job(body, "notFound", f"Not found: Table {table} was not found in location US")

    cloud.bq.rewrite("POST", JOBS, staging_table_gone, when=lambda s: _job_id(s).startswith("estore_commit_"))
    first = cloud.load()
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["files"][0]["status"] == "deferred"
    second = cloud.load()
    assert second.exit_code == 0, second.output
    assert cloud.warehouse.rows_by_file() == {"a.csv": 6}  # no duplicate: the emulator did apply the first one
    assert cloud.cursor()["counts"] == {"loaded": 1, "failed": 0, "quarantined": 0}
    assert len(set(cloud.inserted_jobs("estore_commit_"))) == 2


def test_a_job_still_running_at_the_timeout_is_reported_and_reattached_next_run(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESTORE_JOB_TIMEOUT_SECONDS", "2")
    cloud.put("slow.csv", event_lines(9))
    held: set[str] = set()

    def hold(seen: Seen, status: int, body: Any) -> tuple[int, Any]:
        held.add(_job_id(seen))
        return status, running_job(body)

    cloud.bq.rewrite("POST", JOBS, hold, when=lambda s: _kind(s) == "load")
    cloud.bq.rewrite("GET", JOB, lambda s, st, b: (st, running_job(b)), times=None, when=lambda s: _job_id(s) in held)
    first = cloud.load()
    assert first.exit_code == 1, first.output
    error = json.loads(first.stdout)["files"][0]["error"]
    assert "still running after 2s" in error and "re-attaches" in error  # a classified error, no traceback
    assert cloud.cursor()["counts"]["failed"] == 0  # not counted against the file

    cloud.bq.clear()  # the job finishes
    second = cloud.load()
    assert second.exit_code == 0, second.output
    assert cloud.inserted_jobs("estore_load_") == sorted(held)  # re-attached: no second load job
    assert cloud.warehouse.rows_by_file() == {"slow.csv": 9}


# -- Cloud Storage: 408/429/5xx, lost answers; the lock and the cursor ---------------------------


def test_gcs_408_429_500_503_are_retried_for_listing_reads_state_and_the_lock(cloud: Cloud) -> None:
    cloud.put("a.csv", event_lines(8))
    cloud.put("b.csv.gz", event_lines(4, start=50))
    o = r"/storage/v1/b/[^/]+/o"
    cloud.gcs.error("GET", o + "$", GCS_TIMEOUT)  # the listing
    cloud.gcs.error("GET", o + r"/landing%2Fa\.csv$", GCS_RATE_LIMIT)  # a stat
    cloud.gcs.error("GET", r"/download/storage/v1/b/[^/]+/o/landing%2Fb\.csv\.gz$", GCS_UNAVAILABLE)  # a read
    cloud.gcs.error("POST", r"/upload/storage/v1/b/[^/]+/o$", GCS_INTERNAL, when=lambda s: s.mentions("state/run.lock"))  # the lock
    cloud.gcs.error("POST", r"/upload/storage/v1/b/[^/]+/o$", GCS_UNAVAILABLE, when=lambda s: s.mentions("state/cursor.json"))  # the state
    result = cloud.load()
    assert result.exit_code == 0, result.output
    assert cloud.warehouse.rows_by_file() == {"a.csv": 8, "b.csv.gz": 4}
    answered = [s.answered for s in cloud.gcs.seen if s.answered.startswith("error")]
    assert {"error 408", "error 429", "error 503"} <= set(answered), answered
    assert cloud.cursor()["counts"] == {"loaded": 2, "failed": 0, "quarantined": 0}
    cloud.gcs.error("GET", r"/storage/v1/b/[^/]+/o/state%2Fcursor\.json$", GCS_TIMEOUT)
    cloud.gcs.error("GET", r"/download/storage/v1/b/[^/]+/o/state%2Fcursor\.json$", GCS_RATE_LIMIT)
    assert cloud.cursor()["counts"]["loaded"] == 2  # `cursor show` through the same faults


def test_lost_answers_of_state_writes_the_lock_and_deletes_are_harmless(cloud: Cloud) -> None:
    """Each request below is applied by Cloud Storage and its answer lost: the retry must
    recognise its own effect (412 on a conditional write, 404 on a delete)."""
    cloud.put("a.csv", event_lines(5))
    upload = r"/upload/storage/v1/b/[^/]+/o$"
    cloud.gcs.drop_after_forwarding("POST", upload, when=lambda s: s.mentions("state/run.lock"))
    cloud.gcs.drop_after_forwarding("POST", upload, when=lambda s: s.mentions("state/cursor.json"))
    cloud.gcs.drop_after_forwarding("DELETE", r"/o/state%2Frun\.lock$")
    result = cloud.load()
    assert result.exit_code == 0, result.output
    assert [s.answered for s in cloud.gcs.seen].count("dropped") == 3
    assert cloud.warehouse.rows_by_file() == {"a.csv": 5}
    assert cloud.cursor()["counts"]["loaded"] == 1
    from estore_ops.backends.stores.gcs import GCSStore

    state = GCSStore.from_url(os.environ["ESTORE_STATE"])
    assert not state.exists("run.lock")  # released although the delete's answer was lost
    # An unconditional delete whose answer is lost (the store is asked again and finds it gone).
    state.write("scratch.txt", b"x")
    cloud.gcs.drop_after_forwarding("DELETE", r"/o/state%2Fscratch\.txt$")
    state.delete("scratch.txt")
    assert not state.exists("scratch.txt")
    assert cloud.load().exit_code == 0  # and the lock is free for the next run


# -- cost: what each tick's statements bill -------------------------------------------------------


def test_new_files_commit_with_an_insert_reloads_delete_only_their_partitions_and_every_query_is_capped(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESTORE_MAX_BYTES_BILLED", "5GB")
    cloud.put("a.csv", event_lines(6, day=1))
    cloud.put("b.csv", event_lines(4, start=200, day=3))
    assert cloud.load().exit_code == 0
    queries = [s for s in cloud.bq.requests("POST", JOBS) if _kind(s) == "query"]
    assert queries and all(s.body["configuration"]["query"].get("maximumBytesBilled") == str(5 * 10**9) for s in queries)
    commit = next(s for s in queries if _job_id(s).startswith("estore_commit_"))
    sql = commit.body["configuration"]["query"]["query"]
    assert sql.startswith("INSERT INTO") and "MERGE" not in sql and "DELETE" not in sql  # new files: no target scan
    labels = commit.body["configuration"]["labels"]
    assert labels["estore_step"] == "commit" and labels["estore_run_id"]
    staging = [s for s in cloud.bq.requests("DELETE", r"/tables/_estore_stage_")]
    assert len(staging) == 2  # dropped once committed
    tables = {t.table_id for t in cloud.warehouse.client.list_tables(f"{PROJECT}.{cloud.dataset}")}
    assert not [t for t in tables if t.startswith("_estore_stage_")]

    cloud.put("a.csv", event_lines(3, start=500, day=2))  # a new version on another day
    assert cloud.load().exit_code == 0
    reload = [s for s in cloud.bq.requests("POST", JOBS) if _job_id(s).startswith("estore_commit_")][-1]
    sql = reload.body["configuration"]["query"]["query"]
    assert sql.startswith("MERGE") and "T._source_file IN ('a.csv')" in sql
    # The delete is limited by constants on the partitioning column to the day a.csv's rows were on.
    assert "T.event_time >= TIMESTAMP '2019-10-01 00:00:00+00' AND T.event_time < TIMESTAMP '2019-10-02 00:00:00+00'" in sql
    assert "2019-10-03" not in sql  # b.csv's day is not touched
    assert cloud.warehouse.rows_by_file() == {"a.csv": 3, "b.csv": 4}


# -- transform: dbt's jobs are bounded, labelled and cancelled when the run is stopped -------------


def test_transform_through_the_proxies_bounds_and_labels_every_dbt_job(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTORE_DBT_ARTIFACTS_KEEP", "1")
    fixture = Path(__file__).resolve().parent / "fixtures" / "dbt" / "events_load1.csv"
    cloud.landing.write("events_load1.csv", fixture.read_bytes())
    assert cloud.load().exit_code == 0
    first = cloud.ws.cli("transform", "--json")
    assert first.exit_code == 0, first.output
    dbt_jobs = [s for s in cloud.bq.requests("POST", JOBS) if not _job_id(s).startswith("estore_")]
    assert dbt_jobs
    for seen in dbt_jobs:
        config = seen.body["configuration"]
        assert config["query"]["maximumBytesBilled"] == str(100 * 10**9)
        assert config["jobTimeoutMs"] == str(1800 * 1000)
        assert config["labels"]["estore_run_id"] == json.loads(first.stdout)["run_id"].lower()
    # The second transform deletes the first one's artifacts; that delete's answer is lost.
    cloud.gcs.drop_after_forwarding("DELETE", r"/o/state%2Fdbt-artifacts%2F")
    second = cloud.ws.cli("transform", "--json")
    assert second.exit_code == 0, second.output
    assert "dropped" in [s.answered for s in cloud.gcs.seen]


def test_sigterm_during_a_transform_cancels_this_runs_bigquery_jobs(
    cloud: Cloud, bq_emulator, tmp_path: Path  # noqa: F811
) -> None:
    """systemd's TimeoutStartSec sends SIGTERM: the jobs this run started must not go on running
    (and billing). The proxy holds dbt's queries RUNNING; after SIGTERM every one of them is
    cancelled (jobs.cancel), found by this run's label."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "dbt" / "events_load1.csv"
    cloud.landing.write("events_load1.csv", fixture.read_bytes())
    assert cloud.load().exit_code == 0
    held: dict[str, dict[str, Any]] = {}

    def hold(seen: Seen, status: int, body: Any) -> tuple[int, Any]:
        held[_job_id(seen)] = body
        return status, running_job(body)

    def is_dbt_query(seen: Seen) -> bool:
        return _kind(seen) == "query" and not _job_id(seen).startswith("estore_") and "estore_run_id" in str(seen.body)

    cancelled: list[str] = []
    stopped = "Job execution was cancelled: User requested cancellation"

    def job_state(seen: Seen, status: int, body: Any) -> tuple[int, Any]:
        return status, failed_job(body, "stopped", stopped) if _job_id(seen) in cancelled else running_job(body)

    cloud.bq.rewrite("POST", JOBS, hold, times=None, when=is_dbt_query)
    cloud.bq.rewrite("GET", JOB, job_state, times=None, when=lambda s: _job_id(s) in held)

    def not_complete(seen: Seen) -> tuple[int, Any]:
        job_id = seen.path.rsplit("/", 1)[-1]
        if job_id in cancelled:
            return 400, google_error(400, "stopped", stopped)
        time.sleep(0.3)  # what `timeoutMs` does on the real service
        return 200, {"kind": "bigquery#getQueryResultsResponse", "jobReference": held[job_id]["jobReference"], "jobComplete": False}

    cloud.bq.answer("GET", r"/queries/([^/]+)$", not_complete, times=None, when=lambda s: s.path.rsplit("/", 1)[-1] in held)

    def running_list(seen: Seen) -> tuple[int, Any]:
        if seen.param("stateFilter") != "running":
            return 200, {"kind": "bigquery#jobList", "jobs": []}
        jobs = [{"id": f"{PROJECT}:US.{j}", "jobReference": b["jobReference"], "state": "RUNNING",
                 "configuration": b["configuration"], "status": {"state": "RUNNING"}} for j, b in held.items() if j not in cancelled]
        return 200, {"kind": "bigquery#jobList", "jobs": jobs}

    cloud.bq.answer("GET", JOBS, running_list, times=None)

    def cancel(seen: Seen) -> tuple[int, Any]:
        job_id = seen.path.split("/")[-2]
        cancelled.append(job_id)
        return 200, {"kind": "bigquery#jobCancelResponse", "job": failed_job(held.get(job_id, {}), "stopped", stopped)}

    cloud.bq.answer("POST", r"/jobs/([^/]+)/cancel$", cancel, times=None)
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.Popen([sys.executable, "-m", "estore_ops", "transform"], cwd=cloud.ws.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(held) >= 1, timeout=240), "dbt never started a query"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, err[-2000:]
    assert set(held) <= set(cancelled), (held.keys(), cancelled)  # every job it started, cancelled
    assert "cancelled" in err and "SIGTERM" in err
    run = json.loads(cloud.ws.cli("runs", "--json").stdout)
    assert run[0]["job"] == "transform" and run[0]["status"] == "failed"
