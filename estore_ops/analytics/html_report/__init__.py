"""`estore-ops report --html PATH`: one self-contained HTML page built from the marts and the state.

- `data`: every SQL query the page runs (one place), and the typed numbers it shows;
- `charts`: the Vega-Lite charts (altair), rendered to SVG at build time by vl-convert, so the page
  needs no JavaScript and makes no network request;
- `page`: the HTML (a Jinja2 template with autoescaping), with a table fallback per chart.
"""

from estore_ops.analytics.html_report.page import HtmlReport, build_report

__all__ = ["HtmlReport", "build_report"]
