"""`estore-ops report --html`: the page's numbers equal the marts, it is self-contained and
accessible, and a real browser (headless Chromium, network blocked) draws every chart with no
console error."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.helpers import REPO, Workspace

CHART_KEYS = ["daily", "rfm", "funnel", "churn", "categories", "brands"]
MAX_PAGE_BYTES = 3_000_000
ARTIFACTS = REPO / "test-artifacts"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith(("ESTORE_", "SLACK_")) and k != "ESTORE_TOOLS_DIR")}
    return env | {"DO_NOT_TRACK": "1", "ESTORE_LOG_FORMAT": "json"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Path, dict[str, Any]]]:
    """Sample events loaded and transformed once for the module; the page written from them."""
    ws = Workspace(tmp_path_factory.mktemp("report"))
    env = _env()
    for args in (["generate", "--months", "4", "--rows", "4000", "--users", "500"], ["load", "-q"], ["transform", "--no-test"]):
        proc = ws.run(*args, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ws.add("2020-Feb-late.csv", ["2020-02-01 00:00:00 UTC,view,1,2,,,1.0,3,s"])  # pending: shown as such
    page = ws.root / "out" / "report.html"
    proc = ws.run("report", "--html", str(page), "--json", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert Path(result["path"]) == page.resolve() and result["charts"] == CHART_KEYS
    yield ws, page, result


def _embedded(page: Path) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page.read_text(), re.S)
    assert found, "the page embeds its data"
    return json.loads(found.group(1))


def _cents(value: Any) -> Decimal:
    """Money in the marts is exact (DECIMAL(18,2)): the page must show it unchanged, to the cent."""
    if value is None:
        return Decimal("0.00")
    assert isinstance(value, Decimal), f"money came back as {type(value).__name__}: {value!r}"
    return value


def _rate(part: int, whole: int) -> str:
    return str((Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001")))


def test_numbers_on_the_page_equal_the_marts(built) -> None:
    ws, page, _ = built
    data = _embedded(page)
    con = duckdb.connect(str(ws.db), read_only=True)
    try:
        def one(sql: str) -> tuple[Any, ...]:
            return con.execute(sql).fetchone()

        events, revenue, first, last = one("select count(*), sum(revenue), min(event_date), max(event_date) from marts.fct_events")
        users, buyers = one("select count(*), count(*) filter (where purchase_count > 0) from marts.dim_users")
        sessions, purchased = one("select count(*), count(*) filter (where reached_purchase = 1) from marts.fct_sessions")
        h = data["headline"]
        assert (h["events"], h["users"], h["buyers"], h["sessions"]) == (events, users, buyers, sessions)
        assert Decimal(h["revenue"]) == _cents(revenue) and (h["first_day"], h["last_day"]) == (str(first), str(last))
        assert h["session_conversion"] == _rate(purchased, sessions) and h["buyer_share"] == _rate(buyers, users)

        daily = con.execute("select event_date, count(*), sum(revenue) from marts.fct_events group by 1 order by 1").fetchall()
        assert [(d["day"], d["events"], Decimal(d["revenue"])) for d in data["daily"]] == [
            (str(day), n, _cents(r)) for day, n, r in daily]

        rfm = dict(((s, (n, _cents(r))) for s, n, r in con.execute(
            "select rfm_segment, count(*), sum(total_revenue) from marts.dim_user_rfm group by 1").fetchall()))
        assert {r["segment"]: (r["customers"], Decimal(r["revenue"])) for r in data["rfm"]} == rfm
        assert sum(Decimal(r["revenue_share"]) for r in data["rfm"]) == pytest.approx(Decimal(1), abs=Decimal("0.001"))

        viewed, carted = one("select count(*) filter (where reached_view = 1), count(*) filter (where reached_cart = 1) from marts.fct_sessions")
        assert [(f["stage"], f["sessions"]) for f in data["funnel"]] == [
            ("All sessions", sessions), ("Viewed a product", viewed), ("Added to cart", carted), ("Purchased", purchased)]

        churn = con.execute("select time_period, total_customers, churned_customers from marts.metrics_churn").fetchall()
        assert {(c["cohort"], c["customers"], c["churned"]) for c in [data["churn_overall"], *data["churn"]]} == set(churn)
        assert len(data["churn"]) >= 2  # cohorts to draw

        for key, column in (("categories", "category_code"), ("brands", "brand")):
            top = con.execute(
                f"select {column}, sum(revenue) as r from marts.fct_events where is_purchase = 1 and {column} is not null "
                f"group by 1 order by r desc, 1 limit 10").fetchall()
            assert [(t["name"], Decimal(t["revenue"])) for t in data[key]] == [(n, _cents(r)) for n, r in top], key
    finally:
        con.close()

    f = data["freshness"]
    assert f["loaded_files"] == 4 and f["newest_file"] == "2020-Jan.csv.gz"
    assert f["pending"] == ["2020-Feb-late.csv"] and f["failed"] == []
    assert f["last_transform"] and f["marts_stale"] is False
    # The text people read carries the same numbers as the data.
    text = page.read_text()
    assert f'data-key="events">{h["events"]:,}<' in text and f'data-key="revenue">{Decimal(h["revenue"]):,.2f}<' in text
    assert "2020-Feb-late.csv" in text


def test_page_is_self_contained_small_and_accessible(built) -> None:
    _, page, result = built
    text = page.read_text()
    assert result["bytes"] == len(text.encode()) < MAX_PAGE_BYTES
    # Nothing to fetch: every src/href is inline data or an in-page anchor, and the policy forbids loads.
    for attr in re.findall(r'\b(?:src|href|xlink:href|srcset|action)\s*=\s*"([^"]*)"', text):
        assert attr.startswith(("data:", "#")), attr
    assert "@import" not in text and "url(" not in text
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert csp and html.unescape(csp.group(1)).startswith("default-src 'none'; ")
    assert "<script" not in text.replace('<script type="application/json" id="report-data">', "")
    # A title, headings, alt text per chart and a table fallback per chart.
    assert re.search(r"<title>estore-ops report: \d{4}-\d{2}-\d{2} to \d{4}-\d{2}-\d{2}</title>", text)
    assert text.count("<h1") == 1 and text.count("<h2") >= 7 and '<html lang="en">' in text
    for key in CHART_KEYS:
        figure = re.search(rf'<figure id="chart-{key}" aria-labelledby="caption-{key}">\s*<img class="chart" src="data:image/svg\+xml;base64,[^"]+" '
                           rf'width="\d+" height="\d+" alt="([^"]+)">', text)
        assert figure and len(figure.group(1)) > 30, key
        assert f'<table id="table-{key}"' in text, key


def test_html_escapes_data(ws: Workspace) -> None:
    """A brand named like markup is text on the page, never markup (and never closes the data block)."""
    from estore_ops.analytics.html_report.charts import build_charts
    from estore_ops.analytics.html_report.data import Freshness, Headline, ReportData
    from estore_ops.analytics.html_report.page import render_html

    evil = '</script><img src="http://x/y.png">'
    data = ReportData(
        headline=Headline(1, 1, 1, Decimal("1.00"), 1, 1, "2019-10-01", "2019-10-01"),
        daily=[{"day": "2019-10-01", "events": 1, "purchases": 1, "revenue": Decimal("1.00")}],
        rfm=[{"segment": evil, "customers": 1, "customer_share": Decimal(1), "revenue": Decimal("1.00"), "revenue_share": Decimal(1)}],
        funnel=[{"stage": "All sessions", "sessions": 1, "share": Decimal(1)}], churn_overall=None, churn=[],
        categories=[], brands=[{"name": evil, "revenue": Decimal("1.00"), "purchases": 1, "revenue_share": Decimal(1)}],
        freshness=Freshness(pending=[evil]), generated_at="2026-01-01T00:00:00+00:00", warehouse="duckdb:///w.duckdb",
    )
    text = render_html(data, build_charts(data))
    assert evil not in text and 'src="http' not in text and text.count("<img ") == len(CHART_KEYS)
    assert "&lt;/script&gt;&lt;img src=&#34;http://x/y.png&#34;&gt;" in text  # shown as text in the tables
    assert json.loads(re.search(r'id="report-data">(.*?)</script>', text, re.S).group(1))["brands"][0]["name"] == evil


def _chromium() -> str:
    tools = Path(os.environ.get("ESTORE_TOOLS_DIR") or REPO / ".tools") / "bin" / "chromium"
    found = str(tools) if tools.exists() else shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed: run `make tools` (tests/tools/install-chromium.sh installs the Debian package).",
                    pytrace=False)
    return str(Path(found).resolve())


def test_page_renders_offline_in_headless_chromium(built, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    _, page_path, _ = built
    data = _embedded(page_path)
    console, errors, requests = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=_chromium(), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  # no network at all: every host is unresolvable and the proxy is a closed port
                  "--proxy-server=127.0.0.1:1", "--host-resolver-rules=MAP * ~NOTFOUND"],
        )
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900}, offline=True)
            page = context.new_page()
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            drawn = page.eval_on_selector_all(
                "img.chart", "imgs => imgs.map(i => [i.closest('figure').id, i.complete, i.naturalWidth, i.naturalHeight, "
                "i.getBoundingClientRect().width, i.alt])")
            headline = page.eval_on_selector_all("#headline dd", "dds => dds.map(d => [d.dataset.key, d.textContent.trim()])")
            title = page.title()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "report.png")  # git-ignored; kept for a look after the run

    assert errors == [] and [m for m in console if m[0] in ("error", "warning")] == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert [d[0] for d in drawn] == [f"chart-{k}" for k in CHART_KEYS]
    for figure, complete, width, height, shown, alt in drawn:
        assert complete and width > 100 and height > 50 and shown > 100 and alt, figure
    h = data["headline"]
    assert dict(headline) == {
        "events": f"{h['events']:,}", "users": f"{h['users']:,}", "buyers": f"{h['buyers']:,}",
        "revenue": f"{Decimal(h['revenue']):,.2f}", "session_conversion": f"{Decimal(h['session_conversion']) * 100:.1f}%",
        "buyer_share": f"{Decimal(h['buyer_share']) * 100:.1f}%",
    }
    assert title.startswith("estore-ops report: ")
    assert shot.stat().st_size > 20_000


def test_report_without_marts_says_run_transform(ws: Workspace) -> None:
    from tests.helpers import event_lines

    ws.add("a.csv", event_lines(3))
    assert ws.cli("load").exit_code == 0
    result = ws.cli("report", "--html", "out.html")
    assert result.exit_code == 1
    assert "not built" in result.output and "Run `estore-ops transform` first." in result.output
    assert not (ws.root / "out.html").exists()


if __name__ == "__main__":  # pragma: no cover - manual run
    sys.exit(pytest.main([__file__, "-q"]))
