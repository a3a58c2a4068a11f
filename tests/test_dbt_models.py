"""The dbt project on real built data (DuckDB), against outputs worked out by hand.

One module-scoped flow runs dbt five times and the tests assert on what it captured:
  load 1 -> build -> snapshot -> load 2 -> build (incremental) -> snapshot -> build --full-refresh.
Fixture: tests/fixtures/dbt/ (hand-written) plus a generated file of two long sessions.

Load 1 (latest event date D = 2020-01-31). Purchasers, with their purchases:
  user  purchases (date: amount)                               last  days  status
  301   01-01: 20                                               D-30  30    active
  302   12-31: 30                                               D-31  31    declining
  303   09-17: 20, 10-20: 20, 12-17: 30                         D-45  45    declining
  304   12-16: 40                                               D-46  46    at_risk
  305   09-03: 10, 10-01: 10, 11-01: 15, 12-02: 15              D-60  60    at_risk
  306   10-01, 10-15, 11-01, 11-15, 12-01: 18 each              D-61  61    churned
  307   11-22: 10 (and a view on 01-21: active 10 days ago)     D-70  70    at_risk
  308   10-03, 11-03, 12-03, 01-03: 15; 01-20: 20; 01-31: 20    D     0     active
  309   09-25: 40, 01-26: 40                                    D-5   5     active
  310   11-02: 60                                               D-90  90    churned
Statuses (estore-analytics' rule): churned when BOTH days since the last purchase and since the
last activity exceed 60; else at_risk / declining when days since the last purchase exceed 45 / 30.
307 bought 70 days ago but was active 10 days ago: not churned, at_risk.
RFM (10 purchasers, two per quintile; ties by user_id):
  recency order (oldest first) 310 307 | 306 305 | 304 303 | 302 301 | 309 308 -> R 1..5
  purchase counts 1,1,1,1,1 (301 302 304 307 310), 2 (309), 3 (303), 4 (305), 5 (306), 6 (308);
  percent_rank = (rank-1)/9 -> 0 | 5/9 | 6/9 | 7/9 | 8/9 | 1 -> F 1 | 3 | 4 | 4 | 5 | 5 (buckets [0,.2) .. [.8,1])
  revenue 10 (307) 20 (301) | 30 (302) 40 (304) | 50 (305) 60 (310) | 70 (303) 80 (309) | 90 (306) 100 (308)
Churn (metrics_churn): last first-purchase date 2020-01-01 (301); eligible first purchases <= 2019-10-03:
  303 (09-17 -> 12-17 = 91 days: kept), 305 (09-03 -> 12-02 = 90: churned), 309 (kept),
  306 (10-01, churned), 308 (10-03, exactly 90 days before: eligible; kept).
Load 2: 304 buys 40 on 2020-01-20 (late file for an existing day), 401 views on 2020-02-02 (new
latest day D' = 2020-02-02), and a late exact duplicate of 308's 01-31 purchase.
Prospect 407's file is reloaded without 407's only 2020-01-13 event (that day becomes empty) and
without 409's 01-14 event (409 has no row in the new version: only the count shows the change);
product 1006 (one of 407's events) gets a second brand from user 408: both its events vanish.
"""

from __future__ import annotations

import math
import shutil
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from estore_ops.backends.stores.local import LocalFolderStore
from estore_ops.analytics.transform import (
    DbtRunResult,
    default_project_dir,
    keep_artifacts,
    run_dbt,
    write_profile,
)
from estore_ops.backends.warehouses.duckdb import DuckDBWarehouse
from tests.helpers import csv_bytes, load_into_duckdb

FIXTURES = Path(__file__).parent / "fixtures" / "dbt"
PROJECT = default_project_dir()
MARTS = ["fct_events", "fct_sessions", "dim_users", "dim_categories", "dim_products", "dim_user_rfm", "metrics_churn"]
MODELS = {"stg_events", "int_change_log", "int_events__deduplicated", "int_events__brand_resolved", "int_product_facts",
          "int_users__activity", "int_users__purchases", "int_users__sessions", *MARTS}


# -- helpers ------------------------------------------------------------------------------------
def _outlier_csv() -> bytes:
    """User 405: 201 views one minute apart in one session; user 406: 200 (the ratio limit)."""
    lines = []
    for user, day, count in ((405, date(2020, 1, 5), 201), (406, date(2020, 1, 6), 200)):
        start = datetime(day.year, day.month, day.day)
        for i in range(count):
            t = (start + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{t} UTC,view,1003,2003,computers.peripherals.mouse.wireless,logitech,25.0,{user},s{user}a")
    return csv_bytes(lines)


def _query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _table(db: Path, name: str, schema: str = "marts") -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        cur = con.execute(f"SELECT * FROM {schema}.{name}")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]
    finally:
        con.close()


def _normalised(rows: list[dict]) -> list[tuple]:
    """Order-independent, float-tolerant form of a table for equality checks."""
    def norm(v):
        return round(v, 6) if isinstance(v, float) and not math.isnan(v) else v
    return sorted((tuple((k, norm(v)) for k, v in sorted(r.items())) for r in rows), key=repr)


def _by(rows: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows}


def _ok(result: DbtRunResult) -> DbtRunResult:
    assert result.ok, f"{result.error}\n" + "\n".join(
        f"{n.unique_id}: {n.status}: {n.message}" for n in result.failed_nodes
    )
    return result


# -- the flow -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dbt_flow")
    landing, work, db = root / "landing", root / "work", root / "warehouse.duckdb"
    landing.mkdir()
    shutil.copy(FIXTURES / "events_load1.csv", landing / "events_load1.csv")
    shutil.copy(FIXTURES / "events_load1_reload.csv", landing / "events_reload.csv")
    (landing / "events_outliers.csv").write_bytes(_outlier_csv())
    target = DuckDBWarehouse(f"duckdb:///{db}").dbt_target(None)

    def dbt(command: str, **kw) -> DbtRunResult:
        return _ok(run_dbt(project_dir=PROJECT, target=target, work_dir=work, command=command, quiet=True, **kw))

    out: dict = {"db": db, "work": work, "target": target}
    load_into_duckdb(db, landing, ["events_load1.csv", "events_outliers.csv", "events_reload.csv"])
    out["build1"] = dbt("build")
    out["p1"] = {m: _table(db, m) for m in MARTS}
    out["p1_stg_count"] = _query(db, "SELECT count(*) FROM staging.int_events__brand_resolved")[0][0]
    out["snap1"] = dbt("snapshot")
    out["p1_snap_rfm"] = _table(db, "snap_user_rfm", "snapshots")

    load2 = ["events_load2_late_2020-01-20.csv", "events_load2_2020-02-02.csv", "events_load2_conflict.csv"]
    for name in load2:
        shutil.copy(FIXTURES / name, landing / name)
    (landing / "events_reload.csv").write_bytes((FIXTURES / "events_load2_reload.csv").read_bytes())
    load_into_duckdb(db, landing, [*load2, "events_reload.csv"])
    out["build2"] = dbt("build")
    out["p2"] = {m: _table(db, m) for m in MARTS}
    run_sql = work / "dbt" / "target" / "run" / "estore_ops" / "models" / "marts"
    out["p2_run_sql"] = {m: (run_sql / f"{m}.sql").read_text() for m in ("fct_events", "fct_sessions")}
    out["snap2"] = dbt("snapshot")
    out["p2_snap_rfm"] = _table(db, "snap_user_rfm", "snapshots")
    out["p2_snap_status"] = _table(db, "snap_user_status", "snapshots")

    out["build3"] = dbt("build", full_refresh=True)
    out["p3"] = {m: _table(db, m) for m in MARTS}
    return out


# -- build results ------------------------------------------------------------------------------
def test_build_runs_models_and_tests_but_not_snapshots(flow):
    build = flow["build1"]
    kinds = {n.kind for n in build.nodes}
    assert kinds == {"model", "test", "unit_test"}
    assert {n.name for n in build.nodes if n.kind == "model"} == MODELS
    assert sum(n.kind == "test" for n in build.nodes) > 50
    assert {n.name for n in build.nodes if n.kind == "unit_test"} == {  # dbt's own unit tests (models/marts/_unit_tests.yml)
        "dim_users_activity_status_follows_the_original_thresholds", "dim_user_rfm_scores_and_segments",
        "fct_sessions_split_at_gaps_above_the_timeout"}
    assert all(n.status in ("success", "pass") for n in build.nodes)
    assert set(build.artifacts) == {"run_results", "manifest"}
    assert all(p.is_file() and flow["work"] in p.parents for p in build.artifacts.values())
    snap = flow["snap1"]
    assert {n.name for n in snap.nodes} == {"snap_user_rfm", "snap_user_status"}


# -- staging ------------------------------------------------------------------------------------
def test_cleaning_dedup_multibrand_and_missing_ids(flow):
    events = flow["p1"]["fct_events"]
    # 43 hand rows: -2 duplicates, -2 multi-brand (product 9001), -1 without product, -1 without session;
    # 401 generated rows, 4 rows in events_reload.csv.
    assert len(events) == 37 + 401 + 4 == flow["p1_stg_count"]
    assert len({e["event_id"] for e in events}) == len(events)
    assert not any(e["product_id"] == "9001" for e in events)
    users = {e["user_id"] for e in events}
    assert "403" not in users and "404" not in users  # only had dropped rows
    u402 = sorted((e["event_time"], e["event_type"]) for e in events if e["user_id"] == "402")
    assert [t for _, t in u402] == ["view", "cart", "remove_from_cart"]
    # ids are strings, brand and category lower-cased, both brands of 1001 are one brand
    assert {e["brand"] for e in events if e["product_id"] == "1001"} == {"samsung"}
    assert {e["brand"] for e in events if e["product_id"] == "1002"} == {"lg"}
    assert all(isinstance(e["user_id"], str) and isinstance(e["product_id"], str) for e in events)
    purchase = next(e for e in events if e["user_id"] == "301")
    assert (purchase["is_purchase"], purchase["is_cart_add"], purchase["is_view"]) == (1, 0, 0)
    assert purchase["revenue"] == Decimal("20.00") == purchase["price"]
    assert purchase["quantity"] == 1 and purchase["event_date"] == date(2020, 1, 1)
    view = next(e for e in events if e["user_id"] == "307" and e["event_type"] == "view")
    assert view["revenue"] is None and view["is_view"] == 1 and view["category_code"] == "sport.ski"


# -- sessions -----------------------------------------------------------------------------------
def test_sessions_split_strictly_above_the_timeout(flow):
    sessions = _by(flow["p1"]["fct_sessions"], "session_id")
    gap = {k: v for k, v in sessions.items() if v["user_session"] == "sess-gap"}
    # 10:00 -> 11:00 is exactly 3600 s (together); 11:00 -> 12:00:01 is 3601 s (split); 12:30 ->
    # 13:30:01 splits again.
    assert set(gap) == {"sess-gap", "sess-gap_timeout_1", "sess-gap_timeout_2"}
    first, second, third = gap["sess-gap"], gap["sess-gap_timeout_1"], gap["sess-gap_timeout_2"]
    assert (first["event_count"], first["session_length"], first["unique_product_count"]) == (2, 3600, 2)
    assert (second["event_count"], second["session_length"], second["unique_product_count"]) == (2, 1799, 1)
    assert (third["event_count"], third["session_length"]) == (1, 0)
    assert first["funnel_stage"] == "view" and second["funnel_stage"] == "cart" and third["funnel_stage"] == "view"
    assert (second["reached_view"], second["reached_cart"], second["reached_purchase"]) == (1, 1, 0)
    assert first["session_start_time"] == datetime(2020, 1, 10, 10, 0, tzinfo=first["session_start_time"].tzinfo)
    assert first["session_start_date"] == date(2020, 1, 10) and first["user_id"] == "401"
    assert first["total_revenue"] is None  # no purchase: NULL revenue, as in estore-analytics

    checkout = sessions["s308f"]
    assert (checkout["view_count"], checkout["cart_additions"], checkout["purchase_count"]) == (1, 1, 1)
    assert checkout["total_revenue"] == Decimal("20.00") and checkout["funnel_stage"] == "purchase"
    assert (checkout["reached_view"], checkout["reached_cart"], checkout["reached_purchase"]) == (1, 1, 1)
    assert sessions["s402a"]["event_count"] == 2  # duplicates and dropped rows gone
    assert sessions["s402b"]["funnel_stage"] == "no_activity"
    assert sessions["s405a"]["event_count"] == 201 and sessions["s405a"]["session_length"] == 200 * 60
    assert len(sessions) == 37


# -- users --------------------------------------------------------------------------------------
def test_activity_status_thresholds(flow):
    users = _by(flow["p1"]["dim_users"], "user_id")
    expected = {
        "301": (30, 30, "active"), "302": (31, 31, "declining"), "303": (45, 45, "declining"),
        "304": (46, 46, "at_risk"), "305": (60, 60, "at_risk"), "306": (61, 61, "churned"),
        "307": (10, 70, "at_risk"),  # purchase 70 days ago, but active 10 days ago: not churned
        "308": (0, 0, "active"), "309": (5, 5, "active"), "310": (90, 90, "churned"),
        "401": (21, None, "prospect"), "402": (15, None, "prospect"),
        "405": (26, None, "prospect"), "406": (25, None, "prospect"), "407": (18, None, "prospect"),
        "409": (17, None, "prospect"),
    }
    got = {u: (r["days_since_last_activity"], r["days_since_last_purchase"], r["activity_status"]) for u, r in users.items()}
    assert got == expected
    assert {u for u, r in users.items() if r["is_churned"] == 1} == {"306", "310"}
    assert {r["is_churned"] for r in users.values()} == {0, 1}
    assert {u for u, r in users.items() if r["has_purchase_history"]} == {str(u) for u in range(301, 311)}


def test_user_metrics(flow):
    users = _by(flow["p1"]["dim_users"], "user_id")
    u = users["308"]
    assert (u["session_count"], u["event_count"], u["purchase_count"]) == (6, 8, 6)
    assert u["total_revenue"] == Decimal("100.00") == u["customer_ltv"]
    assert u["avg_order_value"] == Decimal("16.67")  # 100 / 6 = 16.666..., to the cent
    assert (u["first_purchase_date"], u["last_purchase_date"]) == (date(2019, 10, 3), date(2020, 1, 31))
    assert u["customer_lifespan_days"] == 120
    assert (u["first_event_date"], u["last_event_date"]) == (date(2019, 10, 3), date(2020, 1, 31))
    assert users["301"]["customer_lifespan_days"] == 1  # one purchase: at least 1 day
    assert users["309"]["customer_lifespan_days"] == 123
    p = users["401"]  # a prospect: no revenue (NULL, as in estore-analytics), no lifespan
    assert (p["session_count"], p["event_count"], p["purchase_count"], p["total_revenue"]) == (3, 5, 0, None)
    assert p["avg_order_value"] is None and p["customer_lifespan_days"] is None and p["first_purchase_date"] is None
    assert p["customer_ltv"] is None and p["has_purchase_history"] is False
    flags = {k: r["data_quality_flag"] for k, r in users.items()}
    assert flags["405"] == "anomalous_session_ratio"  # 201 events in 1 session > 200
    assert flags["406"] is None  # exactly 200
    assert set(flags.values()) == {None, "anomalous_session_ratio"}
    assert len(users) == 16


# -- RFM ----------------------------------------------------------------------------------------
RFM_P1 = {
    "308": (5, 5, 5, 15, "Champions"),
    "309": (5, 3, 4, 12, "Loyal Customers"),
    "301": (4, 1, 1, 6, "Recent Customers"),
    "302": (4, 1, 2, 7, "Recent Customers"),
    "303": (3, 4, 4, 11, "Potential Loyalists"),
    "304": (3, 1, 2, 6, "Promising"),
    "305": (2, 4, 3, 9, "About To Sleep"),
    "306": (2, 5, 5, 12, "At Risk"),
    "307": (1, 1, 1, 3, "Lost"),
    "310": (1, 1, 3, 5, "Needs Attention"),
}
# After load 2 (D' = 2020-02-02; 304 now has 2 purchases, 80 revenue, last 13 days ago):
#   recency 310 307 | 306 305 | 303 302 | 301 304 | 309 308; counts 1 x4, 2 x2 (304, 309) -> rank 5,
#   percent_rank 4/9 -> F3; revenue 10 20 | 30 50 | 60 70 | 80 (304) 80 (309) | 90 100.
RFM_P2 = {
    "308": (5, 5, 5, 15, "Champions"),
    "309": (5, 3, 4, 12, "Loyal Customers"),
    "304": (4, 3, 4, 11, "Loyal Customers"),
    "301": (4, 1, 1, 6, "Recent Customers"),
    "303": (3, 4, 3, 10, "Potential Loyalists"),
    "302": (3, 1, 2, 6, "Promising"),
    "306": (2, 5, 5, 12, "At Risk"),
    "305": (2, 4, 2, 8, "About To Sleep"),
    "310": (1, 1, 3, 5, "Needs Attention"),
    "307": (1, 1, 1, 3, "Lost"),
}


def _rfm(rows: list[dict]) -> dict:
    return {
        r["user_id"]: (r["recency_score"], r["frequency_score"], r["monetary_score"], r["rfm_score"], r["rfm_segment"])
        for r in rows
    }


def test_rfm_scores_and_segments(flow):
    assert _rfm(flow["p1"]["dim_user_rfm"]) == RFM_P1
    assert len({seg for *_, seg in RFM_P1.values()}) == 9
    assert _rfm(flow["p2"]["dim_user_rfm"]) == RFM_P2


# -- churn --------------------------------------------------------------------------------------
def test_churn_cohorts(flow):
    rows = flow["p1"]["metrics_churn"]
    got = {
        (r["metric_level"], r["time_period"]): (r["cohort_start"], r["cohort_end"], r["total_customers"], r["churned_customers"])
        for r in rows
    }
    assert got == {
        ("cohort_overall", "all_eligible_cohorts"): (date(2019, 9, 3), date(2019, 10, 3), 5, 2),
        ("by_cohort_month", "2019-09-01"): (date(2019, 9, 3), date(2019, 9, 25), 3, 1),
        ("by_cohort_month", "2019-10-01"): (date(2019, 10, 1), date(2019, 10, 3), 2, 1),
    }
    rates = {r["time_period"]: r["churn_rate"] for r in rows}
    assert rates == {"all_eligible_cohorts": 0.4, "2019-09-01": 0.3333, "2019-10-01": 0.5}


# -- categories and products --------------------------------------------------------------------
def test_categories_and_products(flow):
    # one row per category id (estore-analytics' grain), with or without a code
    cats = _by(flow["p1"]["dim_categories"], "raw_category_id")
    assert {k: c["category_code"] for k, c in cats.items()} == {
        "2001": "electronics.smartphone", "2002": "appliances.kitchen.refrigerators",
        "2003": "computers.peripherals.mouse.wireless", "2004": None, "2005": "sport.bicycle",
        "2006": "sport.ski", "2007": None,
    }
    c = cats["2003"]
    assert (c["category_lvl_1"], c["category_lvl_2"], c["category_lvl_3"], c["category_lvl_4"]) == (
        "computers", "peripherals", "mouse", "wireless")
    s = cats["2006"]
    assert (s["category_lvl_1"], s["category_lvl_2"], s["category_lvl_3"], s["category_lvl_4"]) == (
        "sport", "ski", None, None)
    assert cats["2004"]["category_lvl_1"] is None
    products = _by(flow["p1"]["dim_products"], "product_id")
    assert set(products) == {"1001", "1002", "1003", "1004", "1005", "1006"}
    bike = products["1005"]  # (stels, 2005) twice, (stels, 2006) once: the most frequent pair wins
    assert (bike["brand"], bike["category_code"], bike["category_id"]) == ("stels", "sport.bicycle", "2005")
    assert (bike["category_lvl_1"], bike["category_lvl_2"]) == ("sport", "bicycle")
    assert products["1001"]["brand"] == "samsung"
    assert products["1004"]["brand"] is None and products["1004"]["category_code"] is None
    assert (products["1002"]["min_price"], products["1002"]["max_price"]) == (Decimal("15.00"), Decimal("40.00"))


# -- second load, incremental ------------------------------------------------------------------
def test_incremental_build_picks_up_late_and_new_days_without_duplicates(flow):
    events = flow["p2"]["fct_events"]
    # +1 purchase of 304, +1 view of 401; the duplicate of 308's purchase is not added; 407 loses
    # the 01-13 row (file reloaded without it) and the 01-12 view of 1006 (now a brand conflict);
    # 409 loses the 01-14 row of the reloaded file.
    assert len(events) == len(flow["p1"]["fct_events"]) + 2 - 3
    assert len({e["event_id"] for e in events}) == len(events)
    assert sum(1 for e in events if e["user_id"] == "308" and e["event_type"] == "purchase") == 6
    users = _by(flow["p2"]["dim_users"], "user_id")
    u = users["304"]
    assert (u["purchase_count"], u["total_revenue"], u["last_purchase_date"], u["activity_status"]) == (
        2, Decimal("80.00"), date(2020, 1, 20), "active")
    # the new latest day moves everybody's day counts, touched by load 2 or not
    assert users["301"]["days_since_last_activity"] == 32 and users["301"]["activity_status"] == "declining"
    assert users["305"]["activity_status"] == "churned" and users["303"]["activity_status"] == "at_risk"
    assert users["401"]["session_count"] == 4 and users["401"]["days_since_last_activity"] == 0
    u = users["407"]
    assert (u["event_count"], u["session_count"], u["last_event_date"], u["days_since_last_activity"]) == (
        1, 1, date(2020, 1, 12), 21)
    assert "408" not in users
    u = users["409"]
    assert (u["event_count"], u["session_count"], u["days_since_last_activity"]) == (1, 1, 19)
    assert not any(e["event_date"] in (date(2020, 1, 13), date(2020, 2, 1)) for e in events)
    assert not any(e["product_id"] == "1006" for e in events)
    assert "1006" not in _by(flow["p2"]["dim_products"], "product_id")
    # the incremental path was taken: fct_events replaced the changed days (the late 01-20 file,
    # the new 02-02, the duplicate's 01-31, the reloaded file's 01-12..01-14, the conflict's 02-01),
    # fct_sessions the user_sessions on them
    fct_sql, sessions_sql = flow["p2_run_sql"]["fct_events"].lower(), flow["p2_run_sql"]["fct_sessions"].lower()
    replaced = "event_date in (date '2020-01-12', date '2020-01-13', date '2020-01-14', date '2020-01-20', " \
               "date '2020-01-31', date '2020-02-01', date '2020-02-02')"
    assert f"where {replaced}" in " ".join(fct_sql.split())
    assert "delete from" in fct_sql and "insert into" in fct_sql
    assert "delete from" in sessions_sql and "user_session in" in sessions_sql


def test_incremental_equals_full_refresh(flow):
    for model in MARTS:
        assert _normalised(flow["p2"][model]) == _normalised(flow["p3"][model]), model


def shared_session_reload(root: Path, project: Path = PROJECT) -> tuple[dict, dict, dict]:
    """The case the issue reported: user_session 'shared' starts with user 701's view (file a.csv),
    then user 702 goes on in it (file b.csv). a.csv is reloaded without that first view (701 keeps
    one event, in a session of its own): the session now belongs to 702. Returns dim_users
    (user -> (session_count, data_quality_flag)) before the reload, after the incremental run and
    after a full refresh."""
    landing, db = root / "landing", root / "warehouse.duckdb"
    landing.mkdir(parents=True)
    row = "2020-03-0{day} {time} UTC,view,1001,2001,electronics.smartphone,samsung,10.00,{user},{session}"
    (landing / "a.csv").write_bytes(csv_bytes([row.format(day=2, time="10:00:00", user=701, session="shared"),
                                               row.format(day=3, time="09:00:00", user=701, session="own701")]))
    (landing / "b.csv").write_bytes(csv_bytes([row.format(day=2, time="10:05:00", user=702, session="shared"),
                                               row.format(day=2, time="10:10:00", user=702, session="shared")]))
    target = {"type": "duckdb", "path": str(db), "threads": 2, "schema": "main"}

    def users() -> dict:
        rows = _query(db, "SELECT user_id, session_count, data_quality_flag FROM marts.dim_users WHERE user_id IN ('701', '702')")
        return {u: (count, flag) for u, count, flag in rows}

    load_into_duckdb(db, landing, ["a.csv", "b.csv"])
    _ok(run_dbt(project_dir=project, target=target, work_dir=root / "work", command="build", no_test=True, quiet=True))
    before = users()
    (landing / "a.csv").write_bytes(csv_bytes([row.format(day=3, time="09:00:00", user=701, session="own701")]))
    load_into_duckdb(db, landing, ["a.csv"])
    _ok(run_dbt(project_dir=project, target=target, work_dir=root / "work", command="build", no_test=True, quiet=True))
    incremental = users()
    _ok(run_dbt(project_dir=project, target=target, work_dir=root / "work", command="build", no_test=True, quiet=True,
                full_refresh=True))
    return before, incremental, users()


def test_reload_removing_the_first_event_of_a_shared_session_moves_its_owner(tmp_path):
    """Regression (issue 14): dim_users.session_count of the new owner stayed 0 after such a reload
    until a --full-refresh, because neither of 702's days nor 702's rows had changed."""
    before, incremental, full_refresh = shared_session_reload(tmp_path)
    assert before == {"701": (2, None), "702": (0, "missing_sessions")}  # 701 started 'shared': it is 701's
    assert incremental == full_refresh == {"701": (1, None), "702": (1, None)}


# -- snapshots ----------------------------------------------------------------------------------
def test_snapshot_history(flow):
    first = flow["p1_snap_rfm"]
    assert len(first) == 10 and all(r["dbt_valid_to"] is None for r in first)
    rows = flow["p2_snap_rfm"]
    changed = {"302", "303", "304", "305"}  # 302 and 304 change segment, 303 and 305 a score
    closed = {r["user_id"]: r for r in rows if r["dbt_valid_to"] is not None}
    current = {r["user_id"]: r for r in rows if r["dbt_valid_to"] is None}
    assert set(closed) == changed
    assert set(current) == set(RFM_P2)
    assert len(rows) == 14
    assert closed["304"]["rfm_segment"] == "Promising" and current["304"]["rfm_segment"] == "Loyal Customers"
    assert closed["302"]["rfm_segment"] == "Recent Customers" and current["302"]["rfm_segment"] == "Promising"
    assert closed["304"]["dbt_valid_to"] == current["304"]["dbt_valid_from"]
    status = flow["p2_snap_status"]
    u304 = sorted((r for r in status if r["user_id"] == "304"), key=lambda r: r["dbt_valid_from"])
    assert [(r["activity_status"], r["dbt_valid_to"] is None) for r in u304] == [("at_risk", False), ("active", True)]


# -- errors -------------------------------------------------------------------------------------
def _project_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(PROJECT, dest, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    return dest


def test_broken_models_give_readable_errors(tmp_path):
    project = _project_copy(tmp_path)
    target = {"type": "duckdb", "path": str(tmp_path / "w.duckdb"), "threads": 1, "schema": "main"}

    (project / "models" / "marts" / "broken_sql.sql").write_text("select no_such_column from {{ ref('stg_events') }}\n")
    res = run_dbt(project_dir=project, target=target, work_dir=tmp_path / "work", command="build",
                  select=["broken_sql"], quiet=True)
    assert not res.ok
    assert [n.name for n in res.failed_nodes] == ["broken_sql"]
    assert res.failed_nodes[0].message and "Traceback" not in res.error
    assert "broken_sql" in res.error

    (project / "models" / "marts" / "broken_jinja.sql").write_text("select * from {{ ref('stg_events' }}\n")
    res = run_dbt(project_dir=project, target=target, work_dir=tmp_path / "work", command="parse", quiet=True)
    assert not res.ok and res.nodes == []
    assert "broken_jinja" in res.error and "Traceback" not in res.error
    assert "run_results" not in res.artifacts


def test_parse_with_a_bigquery_target(tmp_path):
    target = {
        "type": "bigquery", "method": "oauth-secrets", "token": "dummy-token",
        "project": "test-project", "dataset": "raw", "location": "US", "threads": 1,
    }
    res = run_dbt(project_dir=PROJECT, target=target, work_dir=tmp_path / "work", command="parse", quiet=True)
    assert res.ok, res.error
    import json

    manifest = json.loads(res.artifacts["manifest"].read_text())
    nodes = manifest["nodes"]
    assert nodes["model.estore_ops.fct_events"]["config"]["partition_by"]["field"] == "event_date"
    assert {n["schema"] for k, n in nodes.items() if k.startswith("model.")} == {"staging", "marts"}
    assert {n["schema"] for k, n in nodes.items() if k.startswith("snapshot.")} == {"snapshots"}
    assert manifest["sources"]["source.estore_ops.raw.events"]["relation_name"] == "`test-project`.`raw`.`events`"


# -- profile and artifacts ----------------------------------------------------------------------
def test_write_profile_is_private_yaml(tmp_path):
    path = write_profile({"type": "duckdb", "path": "/x.duckdb", "threads": 2, "schema": "main"}, tmp_path / "p")
    import json

    assert json.loads(path.read_text()) == {
        "estore_ops": {"target": "main", "outputs": {"main": {"type": "duckdb", "path": "/x.duckdb", "threads": 2, "schema": "main"}}}
    }
    assert path.stat().st_mode & 0o077 == 0


def test_keep_artifacts_prunes_old_runs(tmp_path):
    store = LocalFolderStore(tmp_path / "state")
    (tmp_path / "run_results.json").write_text("{}")
    (tmp_path / "manifest.json").write_text("{}")
    artifacts = {"run_results": tmp_path / "run_results.json", "manifest": tmp_path / "manifest.json"}
    deleted = []
    for i in range(4):
        deleted += keep_artifacts(store, f"run-{i}", artifacts, keep=2)
    names = sorted(o.name for o in store.list("dbt-artifacts/"))
    assert names == [
        "dbt-artifacts/run-2/manifest.json", "dbt-artifacts/run-2/run_results.json",
        "dbt-artifacts/run-3/manifest.json", "dbt-artifacts/run-3/run_results.json",
    ]
    assert deleted == ["run-0", "run-1"]


# -- reports ------------------------------------------------------------------------------------
def test_headline_report_reads_the_marts(flow):
    from estore_ops.analytics.reports import headline

    wh = DuckDBWarehouse(f"duckdb:///{flow['db']}", read_only=True)
    try:
        report = headline(wh)
    finally:
        wh.close()
    rfm = [(r["segment"], r["customers"], r["revenue"]) for r in report["rfm_segments"]]
    assert rfm == [  # after load 2, ordered by revenue (total 590 over 10 purchasers)
        ("Loyal Customers", 2, Decimal("160.00")), ("Champions", 1, Decimal("100.00")), ("At Risk", 1, Decimal("90.00")),
        ("Potential Loyalists", 1, Decimal("70.00")), ("Needs Attention", 1, Decimal("60.00")),
        ("About To Sleep", 1, Decimal("50.00")), ("Promising", 1, Decimal("30.00")),
        ("Recent Customers", 1, Decimal("20.00")), ("Lost", 1, Decimal("10.00")),
    ]
    assert all(isinstance(r["revenue"], Decimal) for r in report["rfm_segments"])
    top = report["rfm_segments"][0]
    assert top["customer_share"] == 0.2 and top["revenue_share"] == pytest.approx(160 / 590, abs=1e-4)

    sessions = flow["p3"]["fct_sessions"]
    (f,) = report["funnel"]
    assert f["sessions"] == len(sessions) == 37
    assert f["viewed"] == sum(s["reached_view"] for s in sessions)
    assert f["carted"] == sum(s["reached_cart"] for s in sessions) == 3
    assert f["purchased"] == sum(s["reached_purchase"] for s in sessions) == 26  # 1+1+3+2+4+5+1+6+2+1
    assert f["purchase_rate"] == round(26 / 37, 4)

    churn = report["churn"]
    assert [(r["metric_level"], r["time_period"], r["customers"], r["churned"], r["churn_rate"]) for r in churn] == [
        ("cohort_overall", "all_eligible_cohorts", 5, 2, 0.4),
        ("by_cohort_month", "2019-09-01", 3, 1, 0.3333), ("by_cohort_month", "2019-10-01", 2, 1, 0.5),
    ]
    assert churn[0]["cohort_start"] == "2019-09-03"
