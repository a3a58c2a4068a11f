"""`estore-ops demo`: the whole pipeline on the embedded default, narrated step by step."""

from __future__ import annotations

from estore_ops import jobs
from estore_ops.errors import ConfigError, JobFailedError
from estore_ops.testing.generate import generate_files
from estore_ops.output import Output
from estore_ops.render import render_dbt, render_headline, render_load
from estore_ops.runtime import Runtime

# Six months, so the churn metric (first purchases at least 90 days before the last one) has cohorts.
DEMO_MONTHS = 6
DEMO_ROWS = 50_000
DEMO_USERS = 6_000


def run_demo(rt: Runtime, out: Output) -> None:
    folder = rt.landing.local_root
    if folder is None:
        raise ConfigError("The demo writes sample files into a local landing folder; unset ESTORE_LANDING / --landing.")

    out.line(f"1. Sample REES46-style event files in {folder}", style="bold")
    written = generate_files(folder, months=DEMO_MONTHS, rows_per_month=DEMO_ROWS, users=DEMO_USERS)
    out.table("Landing files", ["File", "Rows", "Status"], [[w.name, out.num(w.rows), w.status] for w in written])

    out.line("2. Scan: files not loaded yet, in arrival order", style="bold")
    scan = jobs.scan(rt)
    if scan.pending:
        out.table("Pending", ["File", "Size", "Why"], [[p.info.name, out.size(p.info.size), p.why] for p in scan.pending])
    else:
        out.line(f"Nothing new: {scan.listed} file(s) already loaded (run `make demo` again after adding files).")

    out.line("3. Load into raw.events (one transaction per file, or per batch of small files that arrive together; "
             "the state advances only after the commits)", style="bold")
    result = jobs.load(rt)
    render_load(out, result)
    if not result.ok:
        raise JobFailedError("The demo load failed; see the errors above.")

    wh = rt.warehouse(read_only=True)
    try:
        rows = wh.query(
            "SELECT _source_file, count(*), min(event_time)::DATE, max(event_time)::DATE, count(DISTINCT user_id) "
            "FROM raw.events GROUP BY 1 ORDER BY min(event_time)"
        )
    finally:
        wh.close()
    out.table("raw.events by source file", ["File", "Rows", "From", "To", "Users"],
              [[f, out.num(n), a, b, out.num(u)] for f, n, a, b, u in rows])

    out.line("4. Transform: dbt build of the models and their tests", style="bold")
    rt = rt.next_run()
    built = jobs.transform(rt)
    render_dbt(out, built, rt.run_id)
    if not built.ok:
        raise JobFailedError("The demo transform failed; see the failing nodes above.")

    out.line("5. Snapshot: SCD2 history of RFM segments and user statuses", style="bold")
    rt = rt.next_run()
    snapped = jobs.snapshot(rt)
    render_dbt(out, snapped, rt.run_id)
    if not snapped.ok:
        raise JobFailedError("The demo snapshot failed; see above.")

    out.line("6. Headline results", style="bold")
    render_headline(out, jobs.report(rt))

    out.line("7. The report page: charts and tables in one self-contained HTML file", style="bold")
    page = jobs.report_html(rt, folder.parent / "report.html")
    out.line(f"Done. Warehouse: {rt.settings.warehouse}. Try `estore-ops verify`, `estore-ops runs`, "
             "`estore-ops cursor show`, `estore-ops health`. Open the report in a browser (it works offline):")
    out.line(f"Report: {page.path}")
