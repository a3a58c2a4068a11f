"""The report's charts: Vega-Lite specifications built with altair, rendered to SVG by vl-convert.

Rendering at build time means the page carries finished pictures: no charting JavaScript, no
font or data request when it is opened, and a few tens of kilobytes per chart. Amounts are drawn
from floats (a picture cannot show a hundredth of a cent); the exact Decimal values are in the
tables and the embedded data.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

WIDTH = 640  # full-width charts
HALF = 250  # plot width of charts shown two to a row (labels come on top of it)
ACCENT = "#2b6cb0"
SECOND = "#c05621"
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


@dataclass
class Chart:
    """One rendered chart: its SVG, and the sentence that describes it to people who cannot see it."""

    key: str
    title: str
    description: str
    svg: str


def _config() -> dict[str, Any]:
    return {
        "font": FONT,
        "view": {"stroke": None},
        "axis": {"labelFontSize": 11, "titleFontSize": 12, "gridColor": "#e2e8f0"},
        "title": {"fontSize": 14, "anchor": "start"},
    }


def _render(key: str, title: str, description: str, chart: Any) -> Chart:
    import vl_convert

    spec = chart.properties(description=description).to_dict()
    spec["config"] = _config()
    return Chart(key, title, description, vl_convert.vegalite_to_svg(spec))


def _num(value: Decimal | int | None) -> float:
    return float(value or 0)


def daily_chart(daily: list[dict[str, Any]]) -> Chart:
    import altair as alt

    values = [{"day": d["day"], "events": d["events"], "revenue": _num(d["revenue"])} for d in daily]
    base = alt.Chart(alt.Data(values=values)).encode(x=alt.X("day:T", title=None, axis=alt.Axis(format="%b %d")))
    events = base.mark_bar(color=ACCENT).encode(y=alt.Y("events:Q", title="Events")).properties(width=WIDTH, height=150)
    revenue = base.mark_line(color=SECOND, point=len(values) <= 31).encode(
        y=alt.Y("revenue:Q", title="Revenue")).properties(width=WIDTH, height=150)
    busiest = max(daily, key=lambda d: d["events"], default=None)
    description = (
        f"Events (bars) and revenue (line) per day over {len(daily)} day(s)"
        + (f", from {daily[0]['day']} to {daily[-1]['day']}; the busiest day was {busiest['day']} with "
           f"{busiest['events']:,} events." if busiest else ".")
    )
    return _render("daily", "Events and revenue per day", description, alt.vconcat(events, revenue, spacing=12))


def rfm_chart(rfm: list[dict[str, Any]]) -> Chart:
    import altair as alt

    values = []
    for r in rfm:
        values.append({"segment": r["segment"], "measure": "Customers", "share": _num(r["customer_share"])})
        values.append({"segment": r["segment"], "measure": "Revenue", "share": _num(r["revenue_share"])})
    order = [r["segment"] for r in rfm]
    chart = alt.Chart(alt.Data(values=values)).mark_bar().encode(
        y=alt.Y("segment:N", sort=order, title=None),
        x=alt.X("share:Q", title="Share", axis=alt.Axis(format="%", tickCount=5)),
        yOffset=alt.YOffset("measure:N"),
        color=alt.Color("measure:N", scale=alt.Scale(domain=["Customers", "Revenue"], range=[ACCENT, SECOND]),
                        legend=alt.Legend(title=None, orient="bottom")),
    ).properties(width=WIDTH - 160, height=max(120, 34 * len(rfm)))
    lead = rfm[0] if rfm else None
    description = (
        f"Share of customers and of revenue for {len(rfm)} RFM segment(s)"
        + (f"; {lead['segment']} brings the most revenue, {_pct(lead['revenue_share'])} of it, "
           f"with {_pct(lead['customer_share'])} of the customers." if lead else ".")
    )
    return _render("rfm", "RFM segments: customers and revenue share", description, chart)


def funnel_chart(funnel: list[dict[str, Any]]) -> Chart:
    import altair as alt

    values = [{"stage": f["stage"], "sessions": f["sessions"], "label": f"{f['sessions']:,} ({_pct(f['share'])})"} for f in funnel]
    order = [f["stage"] for f in funnel]
    bars = alt.Chart(alt.Data(values=values)).encode(y=alt.Y("stage:N", sort=order, title=None))
    chart = (bars.mark_bar(color=ACCENT).encode(x=alt.X("sessions:Q", title="Sessions"))
             + bars.mark_text(align="left", dx=4, color="#1a202c").encode(x="sessions:Q", text="label:N")
             ).properties(width=HALF, height=36 * len(funnel))
    description = "Conversion funnel of sessions: " + "; ".join(f"{f['stage']} {f['sessions']:,} ({_pct(f['share'])})" for f in funnel) + "."
    return _render("funnel", "Conversion funnel (sessions)", description, chart)


def churn_chart(churn: list[dict[str, Any]], overall: dict[str, Any] | None) -> Chart:
    import altair as alt

    values = [{"cohort": c["cohort"], "rate": _num(c["churn_rate"]), "customers": c["customers"]} for c in churn]
    bars = alt.Chart(alt.Data(values=values)).mark_bar(color=ACCENT).encode(
        x=alt.X("cohort:N", title="First-purchase cohort", sort=None),
        y=alt.Y("rate:Q", title="Churn rate", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
    )
    layers = [bars]
    if overall and overall["churn_rate"] is not None:
        layers.append(alt.Chart(alt.Data(values=[{"rate": _num(overall["churn_rate"])}])).mark_rule(
            color=SECOND, strokeDash=[4, 3]).encode(y="rate:Q"))
    chart = alt.layer(*layers).properties(width=min(HALF + 80, max(160, 50 * len(churn))), height=200)
    description = (
        f"Churn rate by first-purchase cohort for {len(churn)} cohort(s)"
        + (f"; overall {_pct(overall['churn_rate'])} of {overall['customers']:,} eligible customers (dashed line)."
           if overall and overall["churn_rate"] is not None else ".")
    )
    return _render("churn", "Churn by first-purchase cohort", description, chart)


def top_chart(key: str, title: str, rows: list[dict[str, Any]], what: str) -> Chart:
    import altair as alt

    values = [{"name": r["name"], "revenue": _num(r["revenue"])} for r in rows]
    order = [r["name"] for r in rows]
    chart = alt.Chart(alt.Data(values=values)).mark_bar(color=ACCENT).encode(
        y=alt.Y("name:N", sort=order, title=None, axis=alt.Axis(labelLimit=160)),
        x=alt.X("revenue:Q", title="Revenue", axis=alt.Axis(tickCount=4)),
    ).properties(width=HALF - 40, height=max(60, 22 * len(rows)))
    description = (
        f"Top {len(rows)} {what} by revenue"
        + (f"; first {rows[0]['name']} with {rows[0]['revenue']:,} in revenue." if rows else ".")
    )
    return _render(key, title, description, chart)


def _pct(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def build_charts(data: Any) -> list[Chart]:
    return [
        daily_chart(data.daily),
        rfm_chart(data.rfm),
        funnel_chart(data.funnel),
        churn_chart(data.churn, data.churn_overall),
        top_chart("categories", "Top categories by revenue", data.categories, "categories"),
        top_chart("brands", "Top brands by revenue", data.brands, "brands"),
    ]
