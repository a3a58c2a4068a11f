"""Headline tables read from the built marts, for `estore-ops report` and the demo.

The SQL is plain enough for DuckDB and BigQuery alike (`marts.<table>` resolves against the
DuckDB file or the client's default project); shares and rates are computed here in Python so no
dialect's division or rounding rules leak into the numbers. Money stays exact: the marts hold
decimals (DECIMAL(18,2) / NUMERIC) and revenue comes back as `Decimal`, summed to the cent.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
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
    sum(reached_view) as viewed,
    sum(reached_cart) as carted,
    sum(reached_purchase) as purchased
from {MARTS_SCHEMA}.fct_sessions
"""

CHURN_SQL = f"""
select metric_level, time_period, cohort_start, cohort_end, total_customers, churned_customers
from {MARTS_SCHEMA}.metrics_churn
"""
OVERALL_LEVEL = "cohort_overall"
CENT = Decimal("0.01")


class MartsNotBuiltError(EstoreError):
    """The report reads the marts, which the first `transform` builds."""


def _plain(value: Any) -> Any:
    """Dates as ISO text; NaN and infinities -> None (a report shows no number rather than 'nan');
    everything else as the warehouse returned it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def money(value: Any) -> Decimal | None:
    """An amount to the cent, as a Decimal. The marts hold exact decimals (DECIMAL / NUMERIC); a
    float (a DOUBLE column of marts built before exact money) is rounded once, through its
    shortest text. NULL, NaN and infinities -> None: no number rather than a wrong one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN) if amount.is_finite() else None


def _share(part: Decimal | int | None, whole: Decimal | int | None, digits: int = 4) -> float | None:
    if part is None or not whole:
        return None
    return round(float(Decimal(part) / Decimal(whole)), digits)


def rfm_segments(warehouse: Any) -> list[dict[str, Any]]:
    rows = [(segment, int(customers), money(revenue)) for segment, customers, revenue in warehouse.query(RFM_SQL)]
    total_customers = sum(r[1] for r in rows)
    total_revenue = sum((r[2] for r in rows if r[2] is not None), Decimal("0.00"))
    out = [
        {
            "segment": segment,
            "customers": customers,
            "customer_share": _share(customers, total_customers),
            "revenue": revenue,
            "revenue_share": _share(revenue, total_revenue),
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
            "metric_level": level,
            "time_period": period,
            "customers": int(total or 0),
            "churned": int(churned or 0),
            "churn_rate": _share(churned, total),
            "cohort_start": start,
            "cohort_end": end,
        }
        for level, period, start, end, total, churned in rows
    ]
    out.sort(key=lambda r: (r["metric_level"] != OVERALL_LEVEL, r["time_period"]))  # the overall row first
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
