"""What the HTML report shows, read from the marts (SQL) and the ingest state (freshness).

Every query of the page is in `SQL` below, so a change to the marts contract is one edit here.
They are written for DuckDB and BigQuery alike, against the marts contract
(tests/marts_contract.yml): 0/1 integer flags are summed as they are, money arrives as an exact
Decimal (DECIMAL(18,2) / NUMERIC) and every amount on the page is formatted from that Decimal.

Columns used are those of the original estore-analytics contract where one exists (for RFM revenue,
`dim_users.total_revenue` joined on user_id rather than the column estore-ops adds to
`dim_user_rfm`); `metrics_churn` is read by its metric_level / time_period.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from estore_ops.errors import JobFailedError
from estore_ops.analytics.reports import OVERALL_LEVEL
from estore_ops.analytics.reports import money as exact_money

MARTS = "marts"
TOP_N = 10


def _top_by_revenue(column: str) -> str:
    return f"""
        select {column} as name,
               coalesce(sum(revenue), 0) as revenue,
               count(*) as purchases
        from {MARTS}.fct_events
        where is_purchase = 1 and {column} is not null
        group by {column}
        order by revenue desc, name
        limit {TOP_N}
    """


SQL: dict[str, str] = {
    # headline and per-day numbers: fct_events (one row per event)
    "events": f"""
        select count(*) as events,
               coalesce(sum(revenue), 0) as revenue,
               min(event_date) as first_day,
               max(event_date) as last_day
        from {MARTS}.fct_events
    """,
    "daily": f"""
        select event_date as day,
               count(*) as events,
               sum(is_purchase) as purchases,
               coalesce(sum(revenue), 0) as revenue
        from {MARTS}.fct_events
        group by event_date
        order by event_date
    """,
    "users": f"""
        select count(*) as users,
               coalesce(sum(case when purchase_count > 0 then 1 else 0 end), 0) as buyers
        from {MARTS}.dim_users
    """,
    "rfm": f"""
        select r.rfm_segment as segment,
               count(*) as customers,
               coalesce(sum(u.total_revenue), 0) as revenue
        from {MARTS}.dim_user_rfm as r
        join {MARTS}.dim_users as u on u.user_id = r.user_id
        group by r.rfm_segment
    """,
    "funnel": f"""
        select count(*) as sessions,
               coalesce(sum(reached_view), 0) as viewed,
               coalesce(sum(reached_cart), 0) as carted,
               coalesce(sum(reached_purchase), 0) as purchased
        from {MARTS}.fct_sessions
    """,
    "churn": f"""
        select metric_level, time_period, total_customers, churned_customers, cohort_start, cohort_end
        from {MARTS}.metrics_churn
    """,
    "categories": _top_by_revenue("category_code"),
    "brands": _top_by_revenue("brand"),
}

def money(value: Any) -> Decimal:
    """An amount as an exact Decimal in cents; no amount (NULL) is 0.00 on the page."""
    amount = exact_money(value)
    return Decimal("0.00") if amount is None else amount


def ratio(part: int | Decimal, whole: int | Decimal) -> Decimal | None:
    """part / whole as an exact fraction to 4 places (None when whole is 0)."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)


def _day(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    return value.isoformat() if isinstance(value, date) else str(value)


@dataclass
class Headline:
    events: int
    users: int
    buyers: int
    revenue: Decimal
    sessions: int
    purchasing_sessions: int
    first_day: str | None
    last_day: str | None

    @property
    def session_conversion(self) -> Decimal | None:
        return ratio(self.purchasing_sessions, self.sessions)

    @property
    def buyer_share(self) -> Decimal | None:
        return ratio(self.buyers, self.users)


@dataclass
class Freshness:
    """How current the numbers are: from the ingest state, the landing listing and the heartbeats."""

    newest_file: str | None = None
    newest_loaded_at: str | None = None
    loaded_files: int = 0
    pending: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # name, status, attempts, error
    last_transform: str | None = None
    data_loaded: str | None = None

    @property
    def marts_stale(self) -> bool:
        """Data loaded after the last successful transform: the marts do not show it yet."""
        return bool(self.data_loaded and (not self.last_transform or self.data_loaded > self.last_transform))


@dataclass
class ReportData:
    headline: Headline
    daily: list[dict[str, Any]]
    rfm: list[dict[str, Any]]
    funnel: list[dict[str, Any]]
    churn_overall: dict[str, Any] | None
    churn: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    brands: list[dict[str, Any]]
    freshness: Freshness
    generated_at: str
    warehouse: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (amounts and rates as exact decimal strings): embedded in the page."""
        out = asdict(self)
        out["headline"] |= {"session_conversion": self.headline.session_conversion, "buyer_share": self.headline.buyer_share}
        out["freshness"]["marts_stale"] = self.freshness.marts_stale
        return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


class MartsMissingError(JobFailedError):
    """The marts the page reads have not been built."""


def _query(warehouse: Any, name: str, sql: str) -> list[dict[str, Any]]:
    try:
        return warehouse.query_records(sql)
    except Exception as exc:
        text = str(exc)
        # DuckDB: "Table with name fct_events does not exist"; BigQuery: "404 Not found: Table p:marts.fct_events"
        if "does not exist" in text or "Not found: Table" in text:
            first = text.strip().splitlines()[0][:300]
            raise MartsMissingError(
                f"The report reads the dbt marts, which are not built in {warehouse.url} ({first}). "
                "Run `estore-ops transform` first."
            ) from None
        raise


def read_marts(warehouse: Any) -> dict[str, Any]:
    """Every number of the page from the marts, in one pass over SQL."""
    rows = {name: _query(warehouse, name, sql) for name, sql in SQL.items()}
    events, users, funnel_row = rows["events"][0], rows["users"][0], rows["funnel"][0]
    funnel_counts = {k: int(funnel_row[k] or 0) for k in ("sessions", "viewed", "carted", "purchased")}
    headline = Headline(
        events=int(events["events"] or 0), users=int(users["users"] or 0), buyers=int(users["buyers"] or 0),
        revenue=money(events["revenue"]), sessions=funnel_counts["sessions"],
        purchasing_sessions=funnel_counts["purchased"], first_day=_day(events["first_day"]), last_day=_day(events["last_day"]),
    )
    daily = [{"day": _day(r["day"]), "events": int(r["events"]), "purchases": int(r["purchases"] or 0),
              "revenue": money(r["revenue"])} for r in rows["daily"]]

    rfm_rows = [(r["segment"], int(r["customers"]), money(r["revenue"])) for r in rows["rfm"]]
    customers = sum(c for _, c, _ in rfm_rows)
    revenue = sum((v for _, _, v in rfm_rows), Decimal("0.00"))
    rfm = sorted(
        ({"segment": s, "customers": c, "customer_share": ratio(c, customers), "revenue": v, "revenue_share": ratio(v, revenue)}
         for s, c, v in rfm_rows),
        key=lambda r: (-r["revenue"], -r["customers"], r["segment"]),
    )

    stages = [("sessions", "All sessions"), ("viewed", "Viewed a product"), ("carted", "Added to cart"), ("purchased", "Purchased")]
    funnel = [{"stage": label, "sessions": funnel_counts[key], "share": ratio(funnel_counts[key], funnel_counts["sessions"])}
              for key, label in stages]

    overall, cohorts = None, []
    for r in rows["churn"]:
        entry = {"cohort": str(r["time_period"]), "customers": int(r["total_customers"] or 0), "churned": int(r["churned_customers"] or 0),
                 "cohort_start": _day(r.get("cohort_start")), "cohort_end": _day(r.get("cohort_end"))}
        entry["churn_rate"] = ratio(entry["churned"], entry["customers"])
        if r["metric_level"] == OVERALL_LEVEL:
            overall = entry
        else:
            cohorts.append(entry)
    cohorts.sort(key=lambda e: e["cohort"])

    def top(name: str) -> list[dict[str, Any]]:
        return [{"name": r["name"], "revenue": money(r["revenue"]), "purchases": int(r["purchases"]),
                 "revenue_share": ratio(money(r["revenue"]), headline.revenue)} for r in rows[name]]

    return {"headline": headline, "daily": daily, "rfm": rfm, "funnel": funnel, "churn_overall": overall,
            "churn": cohorts, "categories": top("categories"), "brands": top("brands")}
