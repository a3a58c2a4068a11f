"""One contract for every warehouse: DuckDB (a temp file; small files batched in one transaction,
the default, and one transaction per file) and BigQuery (on bqemulator, reading gs:// objects that
fake-gcs-server stored). See the docstring of estore_ops.backends.warehouses.base.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pytest

from estore_ops import schema
from estore_ops.backends.stores.base import ObjectStore
from estore_ops.backends.stores.local import LocalFolderStore
from estore_ops.backends.warehouses.base import FileOutcome, LoadItem, Warehouse
from estore_ops.backends.warehouses.duckdb import DuckDBWarehouse
from tests.gcp_emulators import bq_dataset, bq_emulator, fake_gcs, gcs_bucket  # noqa: F401 - fixtures
from tests.helpers import HEADER, event_lines

BIG_CATEGORY = 2053013552326770905


@dataclasses.dataclass
class Rig:
    warehouse: Warehouse
    store: ObjectStore
    table: str  # how SQL names the raw table
    kind: str

    def put(self, name: str, lines: Sequence[str], header: str = HEADER) -> None:
        data = ("\n".join([header, *lines]) + "\n").encode()
        if name.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        self.store.write(name, data)

    def item(self, name: str, header: Sequence[str] = schema.SOURCE_COLUMN_NAMES) -> LoadItem:
        return LoadItem(self.store.stat(name), tuple(header))

    def load(self, *names: str, items: Sequence[LoadItem] = ()) -> dict[str, FileOutcome]:
        items = list(items) or [self.item(n) for n in names]
        begun: list[str] = []
        outcomes = []
        for outcome in self.warehouse.load(items, self.store, lambda group: begun.extend(i.info.name for i in group)):
            assert outcome.name in begun  # announced before its outcome (what a crash is blamed on)
            outcomes.append(outcome)
        assert sorted(o.name for o in outcomes) == sorted(i.info.name for i in items)  # one outcome per file, always
        return {o.name: o for o in outcomes}


@pytest.fixture(params=["duckdb", "duckdb-per-file", pytest.param("bigquery", marks=pytest.mark.gcp)])
def rig(request: pytest.FixtureRequest, tmp_path) -> Rig:
    if request.param.startswith("duckdb"):
        batch_mb = 0 if request.param == "duckdb-per-file" else 256
        wh = DuckDBWarehouse(f"duckdb:///{tmp_path}/warehouse.duckdb", work_dir=tmp_path / "work", batch_mb=batch_mb)
        request.addfinalizer(wh.close)
        return Rig(wh, LocalFolderStore(tmp_path / "landing"), f"{schema.RAW_SCHEMA}.{schema.RAW_TABLE}", "duckdb")
    return _bigquery_rig(request)


def _bigquery_rig(request: pytest.FixtureRequest) -> Rig:
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

    gcs = request.getfixturevalue("fake_gcs")
    bq = request.getfixturevalue("bq_emulator")
    dataset = request.getfixturevalue("bq_dataset")
    store = gcs.store(f"gs://{request.getfixturevalue('gcs_bucket')}/landing")
    wh = BigQueryWarehouse.from_url(bq.url(dataset), client=bq.client())
    return Rig(wh, store, f"`{bq.project}.{dataset}.{schema.RAW_TABLE}`", "bigquery")


@pytest.fixture
def bq_rig(request: pytest.FixtureRequest) -> Rig:
    return _bigquery_rig(request)


def lineage(rig: Rig) -> dict[str, tuple[int, int, Any]]:
    rows = rig.warehouse.query(
        f"SELECT _source_file, MIN(_source_generation), MAX(_source_generation), COUNT(*), MIN(_loaded_at) "
        f"FROM {rig.table} GROUP BY _source_file"
    )
    out = {}
    for name, gmin, gmax, count, loaded_at in rows:
        assert gmin == gmax, f"{name} has rows of two generations"
        out[name] = (int(gmin), int(count), loaded_at)
    return out


def test_ensure_raw_table_is_idempotent(rig: Rig) -> None:
    rig.warehouse.ensure_raw_table()
    rig.warehouse.ensure_raw_table()
    assert rig.warehouse.rows_by_file() == {}


def test_load_two_files_with_lineage_and_utc_times(rig: Rig) -> None:
    rig.warehouse.ensure_raw_table()
    rig.put("2019/a.csv", event_lines(5))
    rig.put("2019/b.csv.gz", event_lines(7, start=100, day=2))
    outcomes = rig.load("2019/a.csv", "2019/b.csv.gz")
    assert all(o.ok for o in outcomes.values()), outcomes
    assert outcomes["2019/a.csv"].rows == 5 and outcomes["2019/b.csv.gz"].rows == 7
    assert rig.warehouse.rows_by_file() == {"2019/a.csv": 5, "2019/b.csv.gz": 7}

    found = lineage(rig)
    assert found["2019/a.csv"][0] == rig.store.stat("2019/a.csv").generation
    assert found["2019/b.csv.gz"][0] == rig.store.stat("2019/b.csv.gz").generation
    assert all(isinstance(v[2], datetime) for v in found.values())  # _loaded_at set

    (first, last, category, price, brand), = rig.warehouse.query(
        f"SELECT MIN(event_time), MAX(event_time), MIN(category_id), MIN(price), MIN(brand) FROM {rig.table} "
        "WHERE _source_file = '2019/a.csv'"
    )
    # '2019-10-01 00:00:00 UTC' is that instant in UTC, whatever the zone of the machine.
    assert first.astimezone(timezone.utc) == datetime(2019, 10, 1, 0, 0, 0, tzinfo=timezone.utc)
    assert last.astimezone(timezone.utc) == datetime(2019, 10, 1, 0, 0, 4, tzinfo=timezone.utc)
    assert category == BIG_CATEGORY and price == 10.5 and brand == "samsung"


def test_reloading_the_same_version_replaces_rows(rig: Rig) -> None:
    rig.put("r/a.csv", event_lines(4))
    assert rig.load("r/a.csv")["r/a.csv"].ok
    again = rig.load("r/a.csv")["r/a.csv"]
    assert again.ok and again.rows == 4
    assert rig.warehouse.rows_by_file() == {"r/a.csv": 4}


def test_rewritten_file_replaces_its_rows(rig: Rig) -> None:
    rig.put("w/a.csv", event_lines(6))
    rig.put("w/other.csv", event_lines(2))
    assert all(o.ok for o in rig.load("w/a.csv", "w/other.csv").values())
    first_generation = rig.store.stat("w/a.csv").generation
    rig.put("w/a.csv", event_lines(3, start=50))  # a new version, fewer rows
    assert rig.store.stat("w/a.csv").generation > first_generation
    outcome = rig.load("w/a.csv")["w/a.csv"]
    assert outcome.ok and outcome.rows == 3
    assert rig.warehouse.rows_by_file() == {"w/a.csv": 3, "w/other.csv": 2}
    assert lineage(rig)["w/a.csv"][0] == rig.store.stat("w/a.csv").generation


def test_bad_value_fails_only_that_file(rig: Rig) -> None:
    rig.put("b/good.csv", event_lines(3))
    bad = event_lines(3)
    bad[1] = bad[1].replace(",view,1001,", ",view,not-a-number,")
    rig.put("b/bad.csv", bad)
    outcomes = rig.load("b/good.csv", "b/bad.csv")
    assert outcomes["b/good.csv"].ok and outcomes["b/good.csv"].rows == 3
    failed = outcomes["b/bad.csv"]
    assert not failed.ok and not failed.retryable and failed.rows == 0
    assert "b/bad.csv" in failed.error and ("not-a-number" in failed.error or "product_id" in failed.error)
    assert rig.warehouse.rows_by_file() == {"b/good.csv": 3}  # nothing of the bad file, not even its good lines


def test_file_changed_while_loading_is_not_committed(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.put("c/a.csv", event_lines(3))
    item = rig.item("c/a.csv")
    real_stat = rig.store.stat
    # The loader's re-check sees a newer generation, as if the object was rewritten mid-load.
    monkeypatch.setattr(rig.store, "stat", lambda name: dataclasses.replace(real_stat(name), generation=real_stat(name).generation + 1))
    (outcome,) = list(rig.warehouse.load([item], rig.store))
    assert not outcome.ok and outcome.retryable and "changed while it was loading" in outcome.error
    assert rig.warehouse.rows_by_file() == {}


def test_columns_in_another_order_load_by_name(rig: Rig) -> None:
    names = list(schema.SOURCE_COLUMN_NAMES)
    names[0], names[1] = names[1], names[0]  # event_type first
    lines = []
    for line in event_lines(2):
        cells = line.split(",")
        cells[0], cells[1] = cells[1], cells[0]
        lines.append(",".join(cells))
    rig.put("o/swapped.csv", lines, header=",".join(names))
    (outcome,) = list(rig.warehouse.load([rig.item("o/swapped.csv", header=names)], rig.store))
    assert outcome.ok, outcome.error
    (event_type, first), = rig.warehouse.query(f"SELECT MIN(event_type), MIN(event_time) FROM {rig.table}")
    assert event_type == "view" and first.astimezone(timezone.utc) == datetime(2019, 10, 1, tzinfo=timezone.utc)


def test_many_files_of_mixed_kinds_load_exactly(rig: Rig) -> None:
    """Plain and gzip files, a header-only file, swapped columns, nested names: each exact."""
    swapped = list(schema.SOURCE_COLUMN_NAMES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    swapped_lines = [",".join([c[1], c[0], *c[2:]]) for c in (ln.split(",") for ln in event_lines(3, start=900))]
    rig.put("m/1.csv", event_lines(5))
    rig.put("m/2.csv", event_lines(7, start=100))
    rig.put("m/empty.csv", [])
    rig.put("m/3.csv.gz", event_lines(4, start=200))
    rig.put("m/4.csv.gz", event_lines(2, start=300))
    rig.put("m/swapped.csv", swapped_lines, header=",".join(swapped))
    rig.put("m/deeper/5.csv", event_lines(6, start=400))
    names = ["m/1.csv", "m/2.csv", "m/empty.csv", "m/3.csv.gz", "m/4.csv.gz", "m/swapped.csv", "m/deeper/5.csv"]
    items = [rig.item(n, header=swapped if n == "m/swapped.csv" else schema.SOURCE_COLUMN_NAMES) for n in names]
    outcomes = rig.load(items=items)
    assert all(o.ok for o in outcomes.values()), [o.error for o in outcomes.values() if not o.ok]
    expected = {"m/1.csv": 5, "m/2.csv": 7, "m/empty.csv": 0, "m/3.csv.gz": 4, "m/4.csv.gz": 2, "m/swapped.csv": 3,
                "m/deeper/5.csv": 6}
    assert {n: o.rows for n, o in outcomes.items()} == expected
    assert rig.warehouse.rows_by_file() == {n: r for n, r in expected.items() if r}
    found = lineage(rig)
    assert {n: found[n][0] for n in found} == {n: rig.store.stat(n).generation for n in found}  # one generation per file
    again = rig.load(items=items)  # the same versions again: rows replaced, never added
    assert {n: o.rows for n, o in again.items()} == expected
    assert rig.warehouse.rows_by_file() == {n: r for n, r in expected.items() if r}


def test_negative_price_fails_only_that_file(rig: Rig) -> None:
    rig.put("p/good.csv", event_lines(3))
    bad = event_lines(4, start=10)
    bad[2] = bad[2].replace(",22.5,", ",-22.5,")
    assert ",-22.5," in bad[2]
    rig.put("p/bad.csv", bad)
    rig.put("p/later.csv", event_lines(2, start=20))
    outcomes = rig.load("p/good.csv", "p/bad.csv", "p/later.csv")
    assert outcomes["p/good.csv"].ok and outcomes["p/later.csv"].ok
    failed = outcomes["p/bad.csv"]
    assert not failed.ok and "negative price" in failed.error and "p/bad.csv" in failed.error
    assert rig.warehouse.rows_by_file() == {"p/good.csv": 3, "p/later.csv": 2}


def test_one_file_changed_while_loading_leaves_the_others_committed(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in ("k/a.csv", "k/b.csv", "k/c.csv"):
        rig.put(n, event_lines(3, start=len(n) * 10))
    items = [rig.item(n) for n in ("k/a.csv", "k/b.csv", "k/c.csv")]
    real_stat = rig.store.stat

    def stat(name: str) -> Any:
        info = real_stat(name)
        return dataclasses.replace(info, generation=info.generation + 1) if name == "k/b.csv" else info

    monkeypatch.setattr(rig.store, "stat", stat)
    outcomes = rig.load(items=items)
    assert outcomes["k/a.csv"].ok and outcomes["k/c.csv"].ok
    assert not outcomes["k/b.csv"].ok and outcomes["k/b.csv"].retryable
    assert rig.warehouse.rows_by_file() == {"k/a.csv": 3, "k/c.csv": 3}


# -- BigQuery only --------------------------------------------------------------------------------
def _estore_jobs(client: Any) -> set[str]:
    return {j.job_id for j in client.list_jobs(max_results=100_000) if j.job_id.startswith("estore_")}


@pytest.mark.gcp
def test_bigquery_same_version_twice_reuses_its_jobs(bq_rig: Rig) -> None:
    rig = bq_rig
    rig.put("j/a.csv", event_lines(4))
    rig.put("j/b.csv", event_lines(2))
    before = _estore_jobs(rig.warehouse.client)
    first = rig.load("j/a.csv", "j/b.csv")
    assert all(o.ok for o in first.values())
    jobs = _estore_jobs(rig.warehouse.client)
    new = jobs - before
    assert sum(j.startswith("estore_load_") for j in new) == 2, new  # one load job per file version
    assert sum(j.startswith("estore_commit_") for j in new) == 1, new  # one statement changes `events` per tick

    second = rig.load("j/a.csv", "j/b.csv")  # e.g. a crash before the state was saved
    assert all(o.ok for o in second.values()) and second["j/a.csv"].rows == 4
    again = {j for j in _estore_jobs(rig.warehouse.client) - jobs if not j.startswith("estore_q_")}
    assert not again, again  # no second load, manifest or commit job: only read-only checks ran
    assert rig.warehouse.rows_by_file() == {"j/a.csv": 4, "j/b.csv": 2}


@pytest.mark.gcp
def test_bigquery_commit_rerun_when_rows_vanished(bq_rig: Rig) -> None:
    """A done commit job whose rows are gone (table truncated, cursor reset) is not reused: the
    files are staged and committed again under new ids (a job id never runs twice)."""
    rig = bq_rig
    rig.put("v/a.csv", event_lines(3))
    assert rig.load("v/a.csv")["v/a.csv"].ok
    before = _estore_jobs(rig.warehouse.client)
    rig.warehouse.query(f"DELETE FROM {rig.table} WHERE TRUE")
    outcome = rig.load("v/a.csv")["v/a.csv"]
    assert outcome.ok and outcome.rows == 3
    assert rig.warehouse.rows_by_file() == {"v/a.csv": 3}
    new = _estore_jobs(rig.warehouse.client) - before
    assert sum(j.startswith("estore_load_") and j.endswith("_w1") for j in new) == 1, new  # the first one's table is gone
    assert sum(j.startswith("estore_commit_") for j in new) == 1, new


@pytest.mark.gcp
def test_bigquery_from_a_local_landing_folder(fake_gcs, bq_emulator, bq_dataset, tmp_path) -> None:  # noqa: F811
    """Mixed configuration: the file is streamed from disk (load_table_from_file)."""
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

    store = LocalFolderStore(tmp_path / "landing")
    wh = BigQueryWarehouse.from_url(bq_emulator.url(bq_dataset), client=bq_emulator.client())
    rig = Rig(wh, store, f"`{bq_emulator.project}.{bq_dataset}.events`", "bigquery")
    rig.put("local/a.csv", event_lines(5))
    outcome = rig.load("local/a.csv")["local/a.csv"]
    assert outcome.ok and outcome.rows == 5
    assert wh.rows_by_file() == {"local/a.csv": 5}


def test_bigquery_dbt_target_shapes() -> None:
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

    emu = BigQueryWarehouse.from_url("bigquery://proj-1/d?api_endpoint=http://127.0.0.1:9050&location=EU").dbt_target(None)
    assert emu["method"] == "oauth-secrets" and emu["token"] and emu["api_endpoint"] == "http://127.0.0.1:9050"
    assert (emu["project"], emu["dataset"], emu["location"], emu["threads"]) == ("proj-1", "d", "EU", 4)
    key = BigQueryWarehouse.from_url("bigquery://proj-1/d?keyfile=/etc/estore/sa.json&location=US").dbt_target(None)
    assert key["method"] == "service-account" and key["keyfile"] == "/etc/estore/sa.json" and key["location"] == "US"
    assert BigQueryWarehouse.from_url("bigquery://proj-1/d?location=US").dbt_target(None)["method"] == "oauth"


@pytest.mark.parametrize("case", ["nan_price", "infinite_price", "empty_event_time", "all_empty_row"])
def test_values_out_of_their_domain_fail_only_that_file(rig: Rig, case: str) -> None:
    """raw.events never holds a value that poisons the models (issue 13): on BigQuery too, where
    the CSV parser accepts NaN and Infinity as FLOAT64 and reads an empty field as NULL
    (https://cloud.google.com/bigquery/docs/reference/rest/v2/Job#JobConfigurationLoad, nullMarker)."""
    rig.put("v/good.csv", event_lines(3))
    bad = event_lines(4, start=10)
    fields = bad[1].split(",")
    if case in ("nan_price", "infinite_price"):
        fields[schema.SOURCE_COLUMN_NAMES.index("price")] = "NaN" if case == "nan_price" else "inf"
        bad[1] = ",".join(fields)
    elif case == "empty_event_time":
        fields[schema.SOURCE_COLUMN_NAMES.index("event_time")] = ""
        bad[1] = ",".join(fields)
    else:
        bad.insert(2, "," * (len(schema.SOURCE_COLUMN_NAMES) - 1))
    assert bad != event_lines(4, start=10)
    rig.put("v/bad.csv", bad)
    outcomes = rig.load("v/good.csv", "v/bad.csv")
    assert outcomes["v/good.csv"].ok
    failed = outcomes["v/bad.csv"]
    assert not failed.ok and "v/bad.csv" in failed.error, failed.error
    named = {"nan_price": "price", "infinite_price": "price", "empty_event_time": "event_time", "all_empty_row": "empty"}[case]
    assert named in failed.error and "upload" in failed.error, failed.error
    assert rig.warehouse.rows_by_file() == {"v/good.csv": 3}
