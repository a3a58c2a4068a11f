"""`estore-ops demo`: the whole pipeline on the embedded default, narrated step by step."""

from __future__ import annotations

from estore_ops import jobs
from estore_ops.errors import ConfigError, JobFailedError
from estore_ops.generate import generate_files
from estore_ops.output import Output
from estore_ops.render import render_load
from estore_ops.runtime import Runtime

DEMO_MONTHS = 3
DEMO_ROWS = 60_000
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

    out.line("3. Load into raw.events (one transaction per file, state advanced after each commit)", style="bold")
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
