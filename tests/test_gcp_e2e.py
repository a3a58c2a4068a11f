"""End to end through the CLI on the emulators: landing and state in fake GCS, warehouse in bqemulator."""

from __future__ import annotations

import gzip
import json

import pytest

from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse
from tests.gcp_emulators import bq_dataset, bq_emulator, fake_gcs, gcs_bucket  # noqa: F401 - fixtures
from tests.helpers import HEADER, Workspace, event_lines

pytestmark = pytest.mark.gcp


def _csv(lines: list[str], gz: bool = False) -> bytes:
    data = ("\n".join([HEADER, *lines]) + "\n").encode()
    return gzip.compress(data, mtime=0) if gz else data


@pytest.fixture
def cloud(ws: Workspace, fake_gcs, bq_emulator, gcs_bucket, bq_dataset, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    monkeypatch.setenv("ESTORE_LANDING", f"gs://{gcs_bucket}/landing")
    monkeypatch.setenv("ESTORE_STATE", f"gs://{gcs_bucket}/state")
    monkeypatch.setenv("ESTORE_WAREHOUSE", bq_emulator.url(bq_dataset))
    landing = fake_gcs.store(f"gs://{gcs_bucket}/landing")
    state = fake_gcs.store(f"gs://{gcs_bucket}/state")
    warehouse = BigQueryWarehouse.from_url(bq_emulator.url(bq_dataset), client=bq_emulator.client())
    return landing, state, warehouse


def test_scan_load_reload_and_cursor_on_the_emulators(ws: Workspace, cloud) -> None:
    landing, state, warehouse = cloud
    landing.write("2019-Oct.csv", _csv(event_lines(40)))
    landing.write("2019-Nov.csv.gz", _csv(event_lines(25, start=1000), gz=True))

    scan = ws.cli("scan", "--json")
    assert scan.exit_code == 0, scan.output
    assert [p["name"] for p in json.loads(scan.stdout)["pending"]] == ["2019-Oct.csv", "2019-Nov.csv.gz"]

    first = ws.cli("load")
    assert first.exit_code == 0, first.output
    assert warehouse.rows_by_file() == {"2019-Oct.csv": 40, "2019-Nov.csv.gz": 25}
    assert state.exists("cursor.json")

    again = ws.cli("load")
    assert again.exit_code == 0 and "Nothing new to load." in again.output
    assert warehouse.rows_by_file() == {"2019-Oct.csv": 40, "2019-Nov.csv.gz": 25}

    landing.write("2019-Oct.csv", _csv(event_lines(15, start=5000)))  # rewritten: a new generation
    pending = json.loads(ws.cli("scan", "--json").stdout)["pending"]
    assert [(p["name"], p["reason"]) for p in pending] == [("2019-Oct.csv", "changed")]
    assert ws.cli("load").exit_code == 0
    assert warehouse.rows_by_file() == {"2019-Oct.csv": 15, "2019-Nov.csv.gz": 25}
    generation = landing.stat("2019-Oct.csv").generation
    assert warehouse.query(f"SELECT DISTINCT _source_generation FROM `{warehouse.table_id}` WHERE _source_file = '2019-Oct.csv'") == [(generation,)]

    show = ws.cli("cursor", "show", "--json")
    assert show.exit_code == 0, show.output
    assert json.loads(show.stdout)["counts"]["loaded"] == 2

    reset = ws.cli("cursor", "reset", "--all", "--yes")
    assert reset.exit_code == 0, reset.output
    assert len(json.loads(ws.cli("scan", "--json").stdout)["pending"]) == 2
    reload = ws.cli("load")
    assert reload.exit_code == 0, reload.output
    assert warehouse.rows_by_file() == {"2019-Oct.csv": 15, "2019-Nov.csv.gz": 25}  # replaced, not duplicated
    assert json.loads(ws.cli("cursor", "show", "--json").stdout)["counts"]["loaded"] == 2


def test_bad_file_fails_alone_and_is_reported(ws: Workspace, cloud) -> None:
    landing, _, warehouse = cloud
    landing.write("good.csv", _csv(event_lines(3)))
    bad = event_lines(3)
    bad[2] = bad[2].replace(",view,1002,", ",view,oops,")
    landing.write("bad.csv", _csv(bad))
    result = ws.cli("load")
    assert result.exit_code == 1
    assert "bad.csv" in result.output
    assert warehouse.rows_by_file() == {"good.csv": 3}
    show = json.loads(ws.cli("cursor", "show", "--json").stdout)
    assert show["counts"]["loaded"] == 1 and show["counts"]["failed"] == 1


FIXTURES = __import__("pathlib").Path(__file__).resolve().parent / "fixtures" / "dbt"


def test_transform_and_snapshot_through_dbt_bigquery(ws: Workspace, cloud) -> None:
    """The same dbt project, through the CLI, on the BigQuery target generated from the URL."""
    landing, _, warehouse = cloud
    landing.write("events_load1.csv", (FIXTURES / "events_load1.csv").read_bytes())
    assert ws.cli("load").exit_code == 0

    built = ws.cli("transform", "--json")
    assert built.exit_code == 0, built.output
    report = json.loads(built.stdout)
    assert report["ok"] and report["counts"].get("error", 0) == 0 and report["counts"].get("fail", 0) == 0
    assert {n["name"] for n in report["nodes"] if n["kind"] == "model"} >= {"stg_events", "fct_events", "fct_sessions", "dim_users", "dim_user_rfm", "metrics_churn"}
    events = warehouse.query(f"SELECT count(*) FROM `{warehouse.project}.marts.fct_events`")[0][0]
    assert events > 0

    snap = ws.cli("snapshot", "--json")
    assert snap.exit_code == 0, snap.output
    rfm_rows = warehouse.query(f"SELECT count(*) FROM `{warehouse.project}.snapshots.snap_user_rfm` WHERE dbt_valid_to IS NULL")[0][0]
    assert rfm_rows == warehouse.query(f"SELECT count(*) FROM `{warehouse.project}.marts.dim_user_rfm`")[0][0] > 0

    # A second load, then an incremental build: new events arrive without duplicates.
    landing.write("events_load2.csv", (FIXTURES / "events_load2_2020-02-02.csv").read_bytes())
    assert ws.cli("load").exit_code == 0
    assert ws.cli("transform").exit_code == 0
    after = warehouse.query(f"SELECT count(*), count(DISTINCT event_id) FROM `{warehouse.project}.marts.fct_events`")[0]
    assert after[0] == after[1] > events


def test_negative_price_is_refused_like_on_the_embedded_warehouse(ws: Workspace, cloud) -> None:
    landing, _, warehouse = cloud
    landing.write("ok.csv", _csv(event_lines(3)))
    lines = event_lines(3, start=100)
    lines[1] = lines[1].replace(",21.5,", ",-21.5,")
    assert ",-21.5," in lines[1]
    landing.write("neg.csv", _csv(lines))
    result = ws.cli("load")
    assert result.exit_code == 1
    assert "neg.csv, column price: 1 row(s) with a negative price" in result.output
    assert warehouse.rows_by_file() == {"ok.csv": 3}
