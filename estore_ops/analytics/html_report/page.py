"""Assemble the report page: data from the marts and the state, charts as SVG images, one HTML file."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from estore_ops.analytics.html_report.charts import Chart, build_charts
from estore_ops.analytics.html_report.data import Freshness, ReportData, read_marts

TEMPLATE = "report.html.j2"
# Opened from disk, the page may load nothing: no script runs, styles are inline, images are data: URIs.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'none'; base-uri 'none'; form-action 'none'"


@dataclass
class HtmlReport:
    path: Path
    bytes: int
    charts: list[str]
    generated_at: str
    data: ReportData

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "charts": self.charts, "generated_at": self.generated_at}


def _amount(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _pct(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _when(value: str | None) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM:SS UTC' (heartbeats carry microseconds nobody reads)."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value).astimezone(timezone.utc)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _svg_uri(chart: Chart) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(chart.svg.encode()).decode()


def _size(chart: Chart) -> tuple[int, int]:
    """The SVG's own width and height (the <img> keeps its layout before it decodes)."""
    import re

    found = re.search(r'<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"', chart.svg)
    return (round(float(found.group(1))), round(float(found.group(2)))) if found else (640, 300)


def render_html(data: ReportData, charts: list[Chart]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("estore_ops.analytics.html_report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(amount=_amount, pct=_pct, count=_count, when=_when)
    # The embedded data is JSON in a non-executed <script> block; every "<" is written as \u003c so
    # no value can close the block or start a comment in it.
    embedded = json.dumps(data.as_dict(), separators=(",", ":")).replace("<", "\\u003c")
    return env.get_template(TEMPLATE).render(
        d=data, h=data.headline, f=data.freshness, csp=CONTENT_SECURITY_POLICY, embedded=embedded,
        charts={c.key: {"chart": c, "uri": _svg_uri(c), "size": _size(c)} for c in charts},
    )


def build_report(warehouse: Any, freshness: Freshness, path: Path) -> HtmlReport:
    """Query the marts, draw the charts, write the page atomically to `path`."""
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    from estore_ops.redact import redact

    data = ReportData(**read_marts(warehouse), freshness=freshness, generated_at=generated, warehouse=redact(warehouse.url))
    charts = build_charts(data)
    text = render_html(data, charts)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a reader never sees half a page
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return HtmlReport(path.resolve(), len(text.encode()), [c.key for c in charts], generated, data)
