"""The marts contract (tests/marts_contract.yml): every column estore-analytics' marts and snapshots
produce, with its type, on DuckDB (a real dbt build) and on BigQuery (the same project built by
dbt-bigquery on the emulator), plus exact money and the BigQuery daily path's partition filters.

Money fixture: purchases whose revenue adds up to 1,234,567.89 exactly (1,000 x 1,234.56 + 1.00 +
1.01 + 5.00 + 0.88): in floating point that sum is off by fractions of a cent (in a 32-bit float by
whole dollars). User m2's average order is (1.00 + 1.01) / 2 = 1.005 -> 1.01; m3 has a purchase
without a price (NULL revenue, counted as a purchase, skipped by the average); m4 only has one.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from estore_ops.analytics.transform import DbtRunResult, default_project_dir, run_dbt
from estore_ops.backends.warehouses.duckdb import DuckDBWarehouse
from tests.gcp_emulators import bq_dataset, bq_emulator, fake_gcs, gcs_bucket  # noqa: F401 - fixtures
from tests.helpers import csv_bytes, load_into_duckdb

CONTRACT = yaml.safe_load((Path(__file__).parent / "marts_contract.yml").read_text())["tables"]
FIXTURES = Path(__file__).parent / "fixtures" / "dbt"
PROJECT = default_project_dir()
TOTAL = Decimal("1234567.89")
# BigQuery's API reports legacy type names for some standard SQL types.
BQ_LEGACY = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def money_csv() -> bytes:
    lines = []
    start = datetime(2020, 3, 1)
    for i in range(1000):
        t = (start + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{t} UTC,purchase,5001,2001,electronics.smartphone,apple,1234.56,901,m1-{i // 10}")
    lines += [
        "2020-03-02 10:00:00 UTC,purchase,5002,2001,electronics.smartphone,apple,1.00,902,m2-a",
        "2020-03-02 11:00:00 UTC,purchase,5002,2001,electronics.smartphone,apple,1.01,902,m2-b",
        "2020-03-02 12:00:00 UTC,purchase,5003,2001,electronics.smartphone,apple,,903,m3-a",
        "2020-03-02 12:05:00 UTC,purchase,5003,2001,electronics.smartphone,apple,5.00,903,m3-a",
        "2020-03-02 13:00:00 UTC,purchase,5003,2001,electronics.smartphone,apple,,904,m4-a",
        "2020-03-02 14:00:00 UTC,purchase,5004,2001,electronics.smartphone,apple,0.88,905,m5-a",
    ]
    return csv_bytes(lines)


def _ok(result: DbtRunResult) -> DbtRunResult:
    assert result.ok, f"{result.error}\n" + "\n".join(f"{n.unique_id}: {n.status}: {n.message}" for n in result.failed_nodes)
    return result


def _expected(table: str, engine: str) -> dict[str, str]:
    spec = CONTRACT[table]
    return {name: col[engine] for name, col in {**spec["columns"], **spec.get("added", {})}.items()}


# -- the contract file itself -------------------------------------------------------------------
def test_contract_lists_the_original_marts_and_their_125_columns():
    assert set(CONTRACT) == {"stg_events", "fct_events", "fct_sessions", "dim_users", "dim_user_rfm", "dim_products",
                             "dim_categories", "metrics_churn", "snap_user_rfm", "snap_user_status"}
    assert sum(len(t["columns"]) for t in CONTRACT.values()) == 125
    assert {"category_lvl_1", "category_lvl_4"} <= set(CONTRACT["dim_products"]["columns"])
    assert {"metric_level", "time_period"} <= set(CONTRACT["metrics_churn"]["columns"])
    assert list(CONTRACT["dim_categories"]["columns"])[0] == "raw_category_id"


def test_columns_bi_sums_are_numbers_and_money_is_exact():
    money = {"price", "revenue", "total_revenue", "customer_ltv", "avg_order_value", "min_price", "max_price"}
    for table, spec in CONTRACT.items():
        for name, col in {**spec["columns"], **spec.get("added", {})}.items():
            if col.get("bi_sum"):
                assert col["bigquery"] in ("INT64", "NUMERIC"), (table, name)
                assert col["duckdb"] in ("INTEGER", "BIGINT", "DECIMAL(18,2)"), (table, name)
            if name in money:
                assert (col["duckdb"], col["bigquery"]) == ("DECIMAL(18,2)", "NUMERIC"), (table, name)
            if name.startswith(("is_", "reached_")):
                assert (col["duckdb"], col["bigquery"]) == ("INTEGER", "INT64"), (table, name)


# -- DuckDB: a real build ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def duck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract_duckdb")
    landing, db = root / "landing", root / "warehouse.duckdb"
    landing.mkdir()
    shutil.copy(FIXTURES / "events_load1.csv", landing / "events_load1.csv")
    (landing / "money.csv").write_bytes(money_csv())
    load_into_duckdb(db, landing, ["events_load1.csv", "money.csv"])
    target = {"type": "duckdb", "path": str(db), "threads": 2, "schema": "main"}
    for command in ("build", "snapshot"):
        _ok(run_dbt(project_dir=PROJECT, target=target, work_dir=root / "work", command=command, quiet=True))
    return db


def _duck_query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("table", sorted(CONTRACT))
def test_every_contract_column_and_type_on_duckdb(duck: Path, table: str):
    rows = _duck_query(duck, "SELECT column_name, data_type FROM information_schema.columns "
                             f"WHERE table_schema = '{CONTRACT[table]['schema']}' AND table_name = '{table}'")
    assert dict(rows) == _expected(table, "duckdb")


def test_money_sums_are_exact_to_the_cent(duck: Path):
    revenue = {
        "fct_events.revenue": "SELECT sum(revenue) FROM marts.fct_events WHERE user_id LIKE '90%'",
        "fct_sessions.total_revenue": "SELECT sum(total_revenue) FROM marts.fct_sessions WHERE user_id LIKE '90%'",
        "dim_users.total_revenue": "SELECT sum(total_revenue) FROM marts.dim_users WHERE user_id LIKE '90%'",
        "dim_users.customer_ltv": "SELECT sum(customer_ltv) FROM marts.dim_users WHERE user_id LIKE '90%'",
        "dim_user_rfm.total_revenue": "SELECT sum(total_revenue) FROM marts.dim_user_rfm WHERE user_id LIKE '90%'",
    }
    for what, sql in revenue.items():
        (total,), = _duck_query(duck, sql)
        assert total == TOTAL and isinstance(total, Decimal), what
    users = {r[0]: r[1:] for r in _duck_query(
        duck, "SELECT user_id, total_revenue, avg_order_value, purchase_count FROM marts.dim_users WHERE user_id LIKE '90%'")}
    assert users["901"] == (Decimal("1234560.00"), Decimal("1234.56"), 1000)
    assert users["902"] == (Decimal("2.01"), Decimal("1.01"), 2)  # 1.005 rounds half away from zero
    assert users["903"] == (Decimal("5.00"), Decimal("5.00"), 2)  # the unpriced purchase counts, is not averaged
    assert users["904"] == (None, None, 1)  # NULL revenue, not 0
    (price, revenue), = _duck_query(duck, "SELECT price, revenue FROM marts.fct_events WHERE user_id = '904'")
    assert price is None and revenue is None


def test_report_prints_exact_money(duck: Path):
    from estore_ops.analytics.reports import headline

    wh = DuckDBWarehouse(f"duckdb:///{duck}", read_only=True)
    try:
        report = headline(wh)
    finally:
        wh.close()
    total = sum((r["revenue"] for r in report["rfm_segments"]), Decimal(0))
    (expected,), = _duck_query(duck, "SELECT sum(total_revenue) FROM marts.dim_users")
    assert total == expected and total - TOTAL == Decimal("550.00")  # plus the hand-worked buyers' 550.00


# -- BigQuery: the same project through dbt-bigquery, on the emulator ----------------------------
@pytest.fixture
def bigquery(ws, fake_gcs, bq_emulator, gcs_bucket, bq_dataset, monkeypatch: pytest.MonkeyPatch):  # noqa: F811 - fixtures
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    monkeypatch.setenv("ESTORE_LANDING", f"gs://{gcs_bucket}/landing")
    monkeypatch.setenv("ESTORE_STATE", f"gs://{gcs_bucket}/state")
    monkeypatch.setenv("ESTORE_WAREHOUSE", bq_emulator.url(bq_dataset))
    landing = fake_gcs.store(f"gs://{gcs_bucket}/landing")
    warehouse = BigQueryWarehouse.from_url(bq_emulator.url(bq_dataset), client=bq_emulator.client())
    return ws, landing, warehouse


def _bq_type(field) -> str:
    return BQ_LEGACY.get(field.field_type, field.field_type)


def _sql(work: Path, stage: str, model: str) -> str:
    """What dbt wrote for a model: 'compiled' (its SELECT) or 'run' (the statement that wrote it)."""
    path = next((work / "dbt" / "target" / stage).rglob(f"{model}.sql"))
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", " ".join(path.read_text().split()).lower()))


@pytest.mark.gcp
def test_contract_and_daily_partition_filters_on_bigquery(bigquery, tmp_path: Path):
    ws, landing, warehouse = bigquery
    landing.write("events_load1.csv", (FIXTURES / "events_load1.csv").read_bytes())
    landing.write("money.csv", money_csv())
    assert ws.cli("load").exit_code == 0
    target = warehouse.dbt_target(None)
    work = tmp_path / "work"

    def dbt(command: str, vars: dict | None = None, **kw) -> DbtRunResult:  # noqa: A002 - dbt's name
        return _ok(run_dbt(project_dir=PROJECT, target=target, work_dir=work, command=command, quiet=True,
                           vars={"raw_schema": warehouse.raw_schema, **(vars or {})}, **kw))

    dbt("build", no_test=True)
    dbt("snapshot")
    client = warehouse.client
    for table, spec in CONTRACT.items():
        schema = warehouse.dataset if spec["schema"] == "raw" else spec["schema"]
        fields = client.get_table(f"{warehouse.project}.{schema}.{table}").schema
        assert {f.name: _bq_type(f) for f in fields} == _expected(table, "bigquery"), table
    (total,), = warehouse.query(f"SELECT sum(revenue) FROM `{warehouse.project}.marts.fct_events` WHERE user_id LIKE '90%'")
    assert Decimal(total) == TOTAL

    # The daily path: a new file, an incremental build. int_events__deduplicated reads raw.events only
    # through stg_events (a view that passes event_time through unchanged) and constant ranges of the
    # changed days, which BigQuery pushes down to raw.events' partitions; fct_events overwrites exactly
    # those event_date partitions in one MERGE.
    landing.write("events_load2.csv", (FIXTURES / "events_load2_2020-02-02.csv").read_bytes())
    assert ws.cli("load").exit_code == 0
    dbt("build", no_test=True)
    raw_ref = f"`{warehouse.project}`.`{warehouse.dataset}`.`events`"
    stg_ref = f"`{warehouse.project}`.`staging`.`stg_events`"
    deduped = _sql(work, "compiled", "int_events__deduplicated")
    assert f"from {stg_ref} where ((event_time >= timestamp '2020-01-31 00:00:00+00:00' and event_time < timestamp " \
           "'2020-02-01 00:00:00+00:00') or (event_time >= timestamp '2020-02-02 00:00:00+00:00' and event_time < " \
           "timestamp '2020-02-03 00:00:00+00:00'))" in deduped
    assert deduped.count(stg_ref) == 1 and raw_ref not in deduped
    staged = _sql(work, "compiled", "stg_events")
    assert re.search(r"^select event_time, .* from " + re.escape(raw_ref) + "$", staged)  # event_time as is: pushed down
    partitions = "when not matched by source and date(dbt_internal_dest.event_date) in (date '2020-01-31', date '2020-02-02') then delete"
    for model in ("int_events__deduplicated", "fct_events"):
        merge = _sql(work, "run", model)
        assert merge.startswith(f"-- 1. run the merge statement merge into `{warehouse.project}`") and partitions in merge, model
        assert re.search(r"declare|dbt_partitions_for_replacement", merge) is None, model  # static: no script
    assert "where event_date in (date '2020-01-31', date '2020-02-02')" in _sql(work, "compiled", "fct_events")
    for path in (work / "dbt" / "target" / "compiled").rglob("*.sql"):  # no other model reads raw.events
        text = " ".join(path.read_text().split()).lower()
        assert raw_ref not in text or path.stem in ("stg_events", "int_change_log"), path.name
    count, distinct = warehouse.query(f"SELECT count(*), count(DISTINCT event_id) FROM `{warehouse.project}.marts.fct_events`")[0]
    assert count == distinct == 37 + 1006 + 1  # hand-worked + money fixture + the 02-02 view (the 01-31 row is a duplicate)

    # In production the change log finds those days in partition metadata, never in raw.events.
    result = dbt("compile", select=["int_change_log"], vars={"raw_changes_from": "partitions"})
    compiled = next((work / "dbt" / "target" / "compiled").rglob("int_change_log.sql")).read_text()
    assert "INFORMATION_SCHEMA.PARTITIONS" in compiled
    assert raw_ref not in compiled.lower() and "_source_file" not in compiled
    assert result.ok and warehouse.query(compiled) is not None  # valid SQL for the emulator's BigQuery dialect
    # The emulator keeps one modification time per table and no DML moves it, so only the logic of
    # a first run can be checked here: with no int_events__deduplicated yet, every day of raw.events.
    first_run = compiled.replace("'int_events__deduplicated'", "'no_such_table'")
    days = {row[2] for row in warehouse.query(first_run)}  # (batch, kind, event_date, ...)
    assert days == {d for (d,) in warehouse.query(f"SELECT DISTINCT DATE(event_time) FROM {raw_ref}")} and len(days) > 20
