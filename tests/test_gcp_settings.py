"""The GCP settings and bookkeeping that need no emulator: bigquery:// URL checks, one keyfile for
every Google backend and dbt, cost bounds in the dbt profile, the partition predicates of a reload,
and the job-attempt bookkeeping in the state (readable from documents written before it existed)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from estore_ops.config import load_settings, parse_size
from estore_ops.errors import ConfigError, ExitCode
from estore_ops.runtime import Runtime
from estore_ops.ingest.state import FAILED, LOADED, QUARANTINED, TRANSIENT_FAILURES_PER_ATTEMPT, IngestState
from tests.helpers import Workspace

GOOD = "bigquery://acme-estore-prod/raw?location=EU"


# -- bigquery:// URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("bigquery://acme-estore-prod/raw", r"has no location: add \?location="),
        ("bigquery://Acme-Prod/raw?location=EU", "is not a Google Cloud project ID"),
        ("bigquery://acme-/raw?location=EU", "is not a Google Cloud project ID"),
        ("bigquery://acme/raw?location=EU", "is not a Google Cloud project ID"),  # 4 characters: too short
        ("bigquery://acme_prod/raw?location=EU", "is not a Google Cloud project ID"),
        ("bigquery://acme-estore-prod/raw-events?location=EU", "is not a BigQuery dataset ID"),
        ("bigquery://acme-estore-prod/raw.events?location=EU", "is not a BigQuery dataset ID"),
        ("bigquery://acme-estore-prod/raw?location=Europe%20West", "is not a BigQuery location"),
    ],
)
def test_bigquery_urls_that_bigquery_would_refuse_are_refused_at_start_up(ws: Workspace, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"warehouse": url}, env={}, cwd=ws.root)


def test_a_bigquery_url_without_location_exits_2_with_the_fix(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTORE_WAREHOUSE", "bigquery://acme-estore-prod/raw")
    result = ws.cli("load")
    assert result.exit_code == ExitCode.USAGE
    assert "has no location: add ?location=" in result.stderr and "bq show" in result.stderr


@pytest.mark.parametrize(
    "url",
    [GOOD, "bigquery://acme-estore-prod/Raw_2019?location=US", "bigquery://my-project-123456/raw?location=europe-west10",
     "bigquery://example.com:acme-prod/raw?location=us"],
)
def test_valid_bigquery_urls_are_accepted(tmp_path: Path, url: str) -> None:
    assert load_settings({"warehouse": url}, env={}, cwd=tmp_path).warehouse == url


# -- one keyfile for Cloud Storage, BigQuery and dbt -----------------------------------------------


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "key-project-123", "private_key_id": "abc",
        "private_key": pem.decode(), "client_email": "estore@key-project-123.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


@pytest.fixture
def no_adc(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Application Default Credentials on this machine: only the keyfile can authenticate."""
    import google.auth
    from google.auth import exceptions as auth_exc

    def default(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise auth_exc.DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", default)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


def test_without_credentials_every_google_backend_says_how_to_log_in(tmp_path: Path, no_adc: None) -> None:
    from estore_ops.errors import BackendError

    rt = Runtime(load_settings({"landing": "gs://bkt/landing", "warehouse": GOOD}, env={}, cwd=tmp_path))
    with pytest.raises(BackendError, match="gcloud auth application-default login.*keyfile setting"):
        rt.landing.client  # noqa: B018 - builds the client
    with pytest.raises(BackendError, match="gcloud auth application-default login"):
        rt.warehouse().client  # noqa: B018


def test_one_keyfile_setting_serves_cloud_storage_bigquery_and_dbt(tmp_path: Path, keyfile: Path, no_adc: None) -> None:
    settings = load_settings(
        {"landing": "gs://bkt/landing", "state": "gs://bkt/state", "warehouse": GOOD}, env={"ESTORE_KEYFILE": str(keyfile)}, cwd=tmp_path
    )
    rt = Runtime(settings)
    assert rt.landing.client.project == "key-project-123"  # built from the key file, not from ADC
    assert rt.state_backend.client.project == "key-project-123"
    warehouse = rt.warehouse()
    assert warehouse.client.project == "acme-estore-prod"  # the URL's project, with the key's identity
    target = warehouse.dbt_target(settings)
    assert target["method"] == "service-account" and target["keyfile"] == str(keyfile)


def test_keyfile_in_the_warehouse_url_is_the_same_setting(tmp_path: Path, keyfile: Path, no_adc: None) -> None:
    url = f"{GOOD}&keyfile={keyfile}"
    settings = load_settings({"landing": "gs://bkt/landing", "warehouse": url}, env={}, cwd=tmp_path)
    assert settings.keyfile == str(keyfile) and "keyfile= in the warehouse URL" in settings.sources["keyfile"]
    assert Runtime(settings).landing.client.project == "key-project-123"  # Cloud Storage uses it too
    with pytest.raises(ConfigError, match="differs from keyfile= in the warehouse URL"):
        load_settings({"warehouse": url, "keyfile": str(tmp_path / "other.json")}, env={}, cwd=tmp_path)


def test_a_missing_keyfile_is_a_clear_error(tmp_path: Path, no_adc: None) -> None:
    from estore_ops.errors import BackendError

    settings = load_settings({"landing": "gs://bkt/landing", "keyfile": str(tmp_path / "nope.json")}, env={}, cwd=tmp_path)
    with pytest.raises(BackendError, match=r"nope\.json \(keyfile setting\) does not exist"):
        Runtime(settings).landing.client  # noqa: B018


# -- cost and time bounds ----------------------------------------------------------------------------


def test_the_dbt_profile_bounds_cost_and_time(tmp_path: Path) -> None:
    settings = load_settings({"warehouse": GOOD}, env={"ESTORE_MAX_BYTES_BILLED": "2TB", "ESTORE_JOB_TIMEOUT_SECONDS": "900"}, cwd=tmp_path)
    target = Runtime(settings).warehouse().dbt_target(settings)
    assert target["maximum_bytes_billed"] == 2 * 10**12
    assert target["job_execution_timeout_seconds"] == 900
    assert target["job_retries"] == 1 and target["job_retry_deadline_seconds"] >= 900
    assert target["location"] == "EU"
    uncapped = load_settings({"warehouse": GOOD, "max_bytes_billed": "0"}, env={}, cwd=tmp_path)
    assert "maximum_bytes_billed" not in Runtime(uncapped).warehouse().dbt_target(uncapped)
    default = load_settings({"warehouse": GOOD}, env={}, cwd=tmp_path)
    assert Runtime(default).warehouse().dbt_target(default)["maximum_bytes_billed"] == 100 * 10**9


@pytest.mark.parametrize("text, size", [("100GB", 100 * 10**9), ("1.5TB", 15 * 10**11), ("512MiB", 512 * 2**20), ("0", 0), ("2048", 2048)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_max_bytes_billed_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_bytes_billed from env ESTORE_MAX_BYTES_BILLED must be a size like 100GB"):
        load_settings(env={"ESTORE_MAX_BYTES_BILLED": "lots"}, cwd=tmp_path)


def test_reload_deletes_are_limited_by_constant_ranges_of_the_partitioning_column() -> None:
    from estore_ops.backends.warehouses.bigquery import days_predicate

    days = {dt.date(2019, 10, 1), dt.date(2019, 10, 2), dt.date(2019, 10, 3), dt.date(2019, 11, 5), None}
    assert days_predicate("T.event_time", days) == (
        "((T.event_time >= TIMESTAMP '2019-10-01 00:00:00+00' AND T.event_time < TIMESTAMP '2019-10-04 00:00:00+00')"
        " OR (T.event_time >= TIMESTAMP '2019-11-05 00:00:00+00' AND T.event_time < TIMESTAMP '2019-11-06 00:00:00+00')"
        " OR T.event_time IS NULL)"
    )
    assert days_predicate("event_time", set()) == "FALSE"


# -- job attempts in the state -------------------------------------------------------------------------


def test_a_state_document_written_before_job_attempts_existed_still_reads() -> None:
    """The exact shape today's main writes (format_version 1, no job_attempt/transient_failures)."""
    old = {
        "format_version": 1, "updated_at": "2026-11-27T17:45:44+00:00", "folded": {"old.csv": 7},
        "files": {
            "a.csv": {"generation": 11, "size": 100, "status": "loaded", "attempts": 1, "rows": 5, "loaded_at": "2026-11-27T17:45:44+00:00",
                      "last_error": None, "run_id": "r1", "updated_at": "2026-11-27T17:45:44+00:00"},
            "b.csv": {"generation": 12, "size": 10, "status": "failed", "attempts": 2, "rows": None, "loaded_at": None,
                      "last_error": "bad", "run_id": "r2", "updated_at": "2026-11-27T17:45:44+00:00"},
        },
    }
    state = IngestState.from_bytes(json.dumps(old).encode(), "cursor.json")
    assert state.files["b.csv"].job_attempt == 0 and state.files["b.csv"].transient_failures == 0
    assert state.job_attempt("b.csv", 12) == 0 and state.job_attempt("b.csv", 13) == 0
    again = IngestState.from_bytes(state.to_bytes(), "cursor.json")
    assert again.files == state.files and again.folded == {"old.csv": 7}


def test_transient_job_failures_count_every_few_and_quarantine_once() -> None:
    state = IngestState()
    counted = []
    for n in range(TRANSIENT_FAILURES_PER_ATTEMPT * 3):
        rec, was_counted = state.record_transient_failure("f.csv", 5, 10, "backendError", f"run-{n}", 3, job_attempt=n)
        counted.append(was_counted)
        assert rec.job_attempt == n + 1  # the next run uses a fresh job id
    assert counted.count(True) == 3
    assert state.files["f.csv"].status == QUARANTINED and state.files["f.csv"].attempts == 3
    # The same run recording the same failure again (a retried state write) changes nothing.
    before = state.files["f.csv"]
    state.record_transient_failure("f.csv", 5, 10, "backendError", f"run-{TRANSIENT_FAILURES_PER_ATTEMPT * 3 - 1}", 3,
                                   job_attempt=TRANSIENT_FAILURES_PER_ATTEMPT * 3 - 1)
    assert state.files["f.csv"] == before


def test_a_failed_job_moves_the_next_attempt_and_a_success_moves_past_it() -> None:
    state = IngestState()
    rec = state.record_failure("g.csv", 9, 10, "rejected", "run-1", 3, job_attempt=0)
    assert rec.status == FAILED and rec.job_attempt == 1 and state.job_attempt("g.csv", 9) == 1
    state.record_success("g.csv", 9, 10, 4, "run-2", job_attempt=1)
    assert state.files["g.csv"].status == LOADED and state.job_attempt("g.csv", 9) == 2  # a --force reload starts afresh
    state.record_failure("h.csv", 1, 10, "header", "run-3", 3)  # no job ran: no attempt spent
    assert state.job_attempt("h.csv", 1) == 0
