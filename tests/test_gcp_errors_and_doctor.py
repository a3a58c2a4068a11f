"""Error translation and retries of the Google Cloud backends (no network: fake clients), and the doctor."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from estore_ops.backends import retry
from estore_ops.config import load_settings
from estore_ops.ops.doctor import run_doctor
from estore_ops.errors import BackendError, ObjectNotFoundError, PreconditionFailedError, TransientBackendError
from estore_ops.backends.stores.gcs import GCSStore
from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse
from tests.gcp_emulators import bq_dataset, bq_emulator, fake_gcs, gcs_bucket  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "POLICY", retry.RetryPolicy(attempts=6, initial_wait=0.001, max_wait=0.001))


def _store_with(reload_effect) -> tuple[GCSStore, mock.Mock]:
    client = mock.MagicMock()
    blob = client.bucket.return_value.blob.return_value
    blob.reload.side_effect = reload_effect
    store = GCSStore.from_url("gs://bkt/land", client=client)
    return store, blob


def test_gcs_transient_errors_are_retried_then_succeed() -> None:
    calls = []

    def flaky(**kw):
        calls.append(1)
        if len(calls) < 4:
            raise [gexc.ServiceUnavailable("x"), gexc.TooManyRequests("x"), requests.exceptions.ConnectionError("reset")][len(calls) - 1]

    store, blob = _store_with(flaky)
    blob.size, blob.generation, blob.md5_hash, blob.crc32c = 3, 7, None, None
    assert store.stat("a.csv").generation == 7 and len(calls) == 4


def test_gcs_transient_errors_are_bounded() -> None:
    store, _ = _store_with(gexc.InternalServerError("boom"))
    with pytest.raises(TransientBackendError, match="gave up after 6 attempts"):
        store.stat("a.csv")


def test_gcs_forbidden_names_bucket_and_role() -> None:
    store, _ = _store_with(gexc.Forbidden("denied"))
    with pytest.raises(BackendError, match=r"gs://bkt.*roles/storage\.objectViewer"):
        store.stat("a.csv")
    store._client.bucket.return_value.blob.return_value.upload_from_string.side_effect = gexc.Forbidden("denied")
    with pytest.raises(BackendError, match=r"roles/storage\.objectUser") as denied:
        store.write("a.csv", b"x")
    # Writes are granted on the store's prefix only: the suggested command carries the condition.
    assert 'expression=resource.name.startsWith("projects/_/buckets/bkt/objects/land/")' in str(denied.value)


def test_gcs_missing_bucket_vs_missing_object() -> None:
    store, _ = _store_with(gexc.NotFound("nope"))
    store._client.list_blobs.side_effect = gexc.NotFound("no bucket")
    with pytest.raises(BackendError, match=r"bucket gs://bkt does not exist.*terraform"):
        store.stat("a.csv")
    store, _ = _store_with(gexc.NotFound("nope"))
    store._client.list_blobs.return_value.pages = iter([[]])
    with pytest.raises(ObjectNotFoundError):
        store.stat("a.csv")


def test_gcs_credentials_errors_say_how_to_log_in() -> None:
    store, _ = _store_with(auth_exc.RefreshError("invalid_grant"))
    with pytest.raises(BackendError, match="gcloud auth application-default login"):
        store.stat("a.csv")


def test_gcs_precondition_failure() -> None:
    store, blob = _store_with(None)
    blob.upload_from_string.side_effect = gexc.PreconditionFailed("412")
    with pytest.raises(PreconditionFailedError):
        store.write("cursor.json", b"{}", if_generation_match=5)


def test_bigquery_forbidden_and_missing_dataset_are_explained() -> None:
    client = mock.MagicMock()
    wh = BigQueryWarehouse.from_url("bigquery://proj-1234/ds?location=EU", client=client)
    client.get_dataset.side_effect = gexc.Forbidden("Access Denied")
    with pytest.raises(BackendError, match=r"proj-1234\.ds.*roles/bigquery\.dataEditor.*roles/bigquery\.jobUser"):
        wh.ensure_raw_table()
    client.get_dataset.side_effect = gexc.NotFound("Not found: Dataset proj:ds")
    with pytest.raises(BackendError, match=r"proj-1234\.ds does not exist.*terraform"):
        wh.ensure_raw_table()


# -- doctor ---------------------------------------------------------------------------------------
def test_doctor_on_the_embedded_default(tmp_path: Path) -> None:
    checks = run_doctor(load_settings(env={}, cwd=tmp_path))
    assert [c.name for c in checks] == ["landing", "state", "warehouse", "dbt"]
    assert all(c.ok for c in checks), checks
    assert not [p for p in (tmp_path / "data" / "state").iterdir() if "probe" in p.name]  # probe removed


@pytest.mark.gcp
def test_doctor_on_the_emulators(tmp_path: Path, fake_gcs, bq_emulator, gcs_bucket, bq_dataset, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    env = {
        "ESTORE_LANDING": f"gs://{gcs_bucket}/landing",
        "ESTORE_STATE": f"gs://{gcs_bucket}/state",
        "ESTORE_WAREHOUSE": bq_emulator.url(bq_dataset),
    }
    checks = {c.name: c for c in run_doctor(load_settings(env=env, cwd=tmp_path))}
    assert all(c.ok for c in checks.values()), checks
    assert "dry-run" in checks["warehouse"].detail

    monkeypatch.setattr("estore_ops.ops.doctor.check_dbt", lambda settings: "not checked here")  # parsed above already
    bad = {**env, "ESTORE_LANDING": "gs://no-such-bucket-xyz/landing", "ESTORE_WAREHOUSE": bq_emulator.url("no_such_dataset")}
    checks = {c.name: c for c in run_doctor(load_settings(env=bad, cwd=tmp_path))}
    assert not checks["landing"].ok and "no-such-bucket-xyz does not exist" in checks["landing"].detail
    assert not checks["warehouse"].ok and "no_such_dataset does not exist" in checks["warehouse"].detail
    assert checks["state"].ok
