"""Headline tables read from the built marts, for `estore-ops report` and the demo.

The SQL is plain enough for DuckDB and BigQuery alike (`marts.<table>` resolves against the
DuckDB file or the client's default project); shares and rates are computed here in Python so no
dialect's division or rounding rules leak into the numbers.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from estore_ops.errors import EstoreError, MissingTableError

MARTS_SCHEMA = "marts"

RFM_SQL = f"""
select rfm_segment, count(*) as customers, sum(total_revenue) as revenue
from {MARTS_SCHEMA}.dim_user_rfm
group by rfm_segment
"""

FUNNEL_SQL = f"""
select
    count(*) as sessions,
    sum(case when reached_view then 1 else 0 end) as viewed,
    sum(case when reached_cart then 1 else 0 end) as carted,
    sum(case when reached_purchase then 1 else 0 end) as purchased
from {MARTS_SCHEMA}.fct_sessions
"""

CHURN_SQL = f"""
select cohort, cohort_type, cohort_start, cohort_end, total_customers, churned_customers
from {MARTS_SCHEMA}.metrics_churn
"""


class MartsNotBuiltError(EstoreError):
    """The report reads the marts, which the first `transform` builds."""


def _plain(value: Any) -> Any:
    """JSON-friendly scalars: Decimal -> float, dates -> ISO text, NaN and infinities -> None (a
    report shows no number rather than 'nan')."""
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _share(part: float | int | None, whole: float | int | None, digits: int = 4) -> float | None:
    if part is None or not whole:
        return None
    return _plain(round(float(part) / float(whole), digits))


def rfm_segments(warehouse: Any) -> list[dict[str, Any]]:
    rows = [tuple(_plain(v) for v in r) for r in warehouse.query(RFM_SQL)]
    total_customers = sum(int(r[1]) for r in rows)
    total_revenue = sum(float(r[2] or 0) for r in rows)  # NaN never reaches here: _plain made it None
    out = [
        {
            "segment": segment,
            "customers": int(customers),
            "customer_share": _share(customers, total_customers),
            "revenue": None if revenue is None else round(float(revenue), 2),
            "revenue_share": _share(revenue or 0, total_revenue),
        }
        for segment, customers, revenue in rows
    ]
    out.sort(key=lambda r: (-(r["revenue"] or 0), -r["customers"], str(r["segment"])))
    return out


def funnel(warehouse: Any) -> list[dict[str, Any]]:
    rows = warehouse.query(FUNNEL_SQL)
    sessions, viewed, carted, purchased = (int(_plain(v) or 0) for v in rows[0]) if rows else (0, 0, 0, 0)
    return [
        {
            "sessions": sessions,
            "viewed": viewed,
            "carted": carted,
            "purchased": purchased,
            "view_rate": _share(viewed, sessions),
            "cart_rate": _share(carted, sessions),
            "purchase_rate": _share(purchased, sessions),
            "view_to_cart_rate": _share(carted, viewed),
            "cart_to_purchase_rate": _share(purchased, carted),
        }
    ]


def churn(warehouse: Any) -> list[dict[str, Any]]:
    rows = [tuple(_plain(v) for v in r) for r in warehouse.query(CHURN_SQL)]
    out = [
        {
            "cohort": cohort,
            "customers": int(total or 0),
            "churned": int(churned or 0),
            "churn_rate": _share(churned, total),
            "cohort_start": start,
            "cohort_end": end,
        }
        for cohort, kind, start, end, total, churned in rows
    ]
    kinds = {r[0]: r[1] for r in rows}
    out.sort(key=lambda r: (kinds[r["cohort"]] != "overall", r["cohort"]))  # the overall row first
    return out


def headline(warehouse: Any) -> dict[str, list[dict[str, Any]]]:
    """Three tables from the marts: RFM segments, the session funnel and churn by cohort."""
    try:
        return {
            "rfm_segments": rfm_segments(warehouse),
            "funnel": funnel(warehouse),
            "churn": churn(warehouse),
        }
    except MissingTableError as exc:
        raise MartsNotBuiltError(
            f"The marts are not built yet ({exc}): run `estore-ops transform` first, then `estore-ops report`."
        ) from None
