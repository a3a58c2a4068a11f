"""How command results look: one renderer per result type of estore_ops.jobs.

Each renderer writes the same object as JSON (`--json`: the result's `as_dict()`), as a Rich table
on a terminal, or as plain `key=value` lines under systemd; estore_ops.output.Output chooses between
the last two and escapes data (never read as markup). Messages of a failed command (the line on
stderr before the exit code) are rendered here too.
"""

from __future__ import annotations

import math
import sys
from contextlib import ExitStack
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from estore_ops.analytics.reports import cohort_label

if TYPE_CHECKING:
    from estore_ops.analytics.html_report import HtmlReport
    from estore_ops.analytics.transform import DbtRunResult
    from estore_ops.backends.warehouses.base import FileOutcome
    from estore_ops.deploy.systemd import InstallResult
    from estore_ops.deploy.upgrade.framework import UpgradeResult
    from estore_ops.ingest.pipeline import LoadResult, PendingFile
    from estore_ops.jobs import (
        AlertSent, ConfigReport, CursorReset, CursorRestore, CursorSummary, DoctorReport, GeneratedFiles, HealthReport,
        Headline, LockBreak, LockStatus, RunList, ScanReport, TickResult, TimerReport, UnitFailureAlert,
    )
    from estore_ops.ops.history import RunRecord
    from estore_ops.ops.verify import VerifyResult
    from estore_ops.output import Output


class LoadProgress:
    """A progress bar over the planned files, advanced as each file commits or fails."""

    def __init__(self, out: Output, show: bool = True) -> None:
        self.out, self.show = out, show
        self._stack = ExitStack()
        self._advance: Any = None

    def __enter__(self) -> LoadProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def on_start(self, planned: list[PendingFile]) -> None:
        if self.show and planned:
            self._advance = self._stack.enter_context(self.out.progress(len(planned), "loading"))

    def on_file(self, outcome: FileOutcome) -> None:
        if self._advance:
            self._advance(f"loaded {outcome.name}")


def render_load(out: Output, result: LoadResult) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    if result.dry_run:
        if result.planned:
            out.table("Would load (dry run)", ["File", "Size", "Why"],
                      [[p.info.name, out.size(p.info.size), p.why] for p in result.planned])
        else:
            out.line("Nothing to load.")
    elif not result.outcomes:
        out.line("Nothing new to load.")
    else:
        out.table(
            f"Load {result.run_id}",
            ["File", "Rows", "Seconds", "Status"],
            [[o.name, out.num(o.rows) if o.ok else "", _load_seconds(o), o.status if o.ok else o.status.upper()] for o in result.outcomes],
        )
        for o in result.failed:
            out.line(f"FAILED {o.error}", style="red")
        for o in result.deferred:
            out.line(f"deferred to the next run (transient, not counted yet): {o.error}", style="yellow")
        deferred = f", {len(result.deferred)} deferred" if result.deferred else ""
        out.line(f"{len(result.loaded)} file(s) loaded, {out.num(result.rows)} rows, {len(result.failed)} failed{deferred}, in {result.seconds:.1f}s.")
    for s in result.skipped:
        out.line(f"skipped {s['name']}: {s['why']}", style="yellow")


def _load_seconds(o: FileOutcome) -> str:
    if not o.ok:
        return ""
    # Files of one batch share one transaction: its time, not a per-file share.
    return f"{o.seconds:.2f}" if o.batch_files == 1 else f"{o.seconds:.2f} (batch of {o.batch_files})"


def render_cursor(out: Output, result: CursorSummary) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    out.line(f"State {result.location} (generation {result.generation}, updated {result.updated_at or 'never'})")
    out.table("Files by status", ["Status", "Files"], [[k, v] for k, v in result.counts.items()])
    newest = result.newest_loaded
    if newest:
        out.line(f"Newest loaded: {newest['name']} at {newest['loaded_at']} ({out.num(newest['rows'])} rows, run {newest['run_id']})")
    if result.folded:
        out.line(f"{result.folded} older loaded file(s) are kept in compact form (name and generation only).")
    if result.problems:
        out.table("Failed and quarantined files", ["File", "Status", "Attempts", "Error"],
                  [[p["name"], p["status"], p["attempts"], p["error"]] for p in result.problems])


def render_dbt(out: Output, result: DbtRunResult) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    run_id = result.run_id
    for note in result.notes:
        out.line(f"upgrade: {note}", style="yellow")
    shown = [n for n in result.nodes if n.kind != "test" or n.failed or not out.terminal]
    if shown:
        out.table(
            f"dbt {result.command} {run_id}", ["Node", "Kind", "Status", "Seconds", "Rows"],
            [[n.name, n.kind, n.status, f"{n.seconds:.2f}", out.num(n.rows_affected)] for n in shown],
        )
    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts().items()))
    out.line(f"dbt {result.command}: {'ok' if result.ok else 'FAILED'} in {result.elapsed:.1f}s ({counts or 'no nodes'})",
             style=None if result.ok else "red")
    for n in result.failed_nodes:
        out.line(f"FAILED {n.kind} {n.name}: {n.message}", style="red")
    if result.error and not result.failed_nodes:
        out.line(f"FAILED {result.error}", style="red")


def render_headline(out: Output, result: Headline) -> None:
    """The three headline tables: RFM segments, conversion funnel, churn. Money is exact: a
    Decimal printed to the cent (in JSON a number whose digits are those cents)."""
    if out.json_mode:
        out.json(result.as_dict())
        return
    data = {"rfm_segments": result.rfm_segments, "funnel": result.funnel, "churn": result.churn}

    def pct(value: float | None) -> str:
        return "" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"

    def money(value: Decimal | float | None) -> str:
        return "" if value is None or not math.isfinite(value) else f"{value:,.2f}"

    out.table("RFM segments (purchasers)", ["Segment", "Customers", "Customer share", "Revenue", "Revenue share"], [
        [r["segment"], out.num(r["customers"]), pct(r["customer_share"]), money(r["revenue"]), pct(r["revenue_share"])]
        for r in data["rfm_segments"]
    ], keys=["segment", "customers", "customer_share", "revenue", "revenue_share"])
    f = data["funnel"][0] if data["funnel"] else None
    if f:
        out.table("Conversion funnel (sessions)", ["Stage", "Sessions", "Of all sessions", "Of previous stage"], [
            ["all sessions", out.num(f["sessions"]), "100.0%", ""],
            ["viewed", out.num(f["viewed"]), pct(f["view_rate"]), pct(f["view_rate"])],
            ["added to cart", out.num(f["carted"]), pct(f["cart_rate"]), pct(f["view_to_cart_rate"])],
            ["purchased", out.num(f["purchased"]), pct(f["purchase_rate"]), pct(f["cart_to_purchase_rate"])],
        ], keys=["stage", "sessions", "of_all", "of_previous"])
    out.table("Churn by first-purchase cohort", ["Cohort", "Customers", "Churned", "Churn rate", "From", "To"], [
        [cohort_label(r["metric_level"], r["time_period"]), out.num(r["customers"]), out.num(r["churned"]), pct(r["churn_rate"]),
         r["cohort_start"], r["cohort_end"]]
        for r in data["churn"]
    ], keys=["cohort", "customers", "churned", "churn_rate", "from", "to"])


# -- configuration, scan, cursor, lock, sample files ------------------------------------------------


def render_config(out: Output, result: ConfigReport) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    out.table(
        f"Settings (config file: {result.config_file or 'none'})",
        ["Key", "Value", "Source"], [[r["key"], r["value"], r["source"]] for r in result.settings],
    )


def render_scan(out: Output, result: ScanReport) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    requests = result.list_requests
    if not result.pending:
        out.line(f"Nothing new: {result.listed} file(s) listed" + (f" in {requests} request(s)" if requests is not None else "")
                 + ", all loaded" + (f" ({len(result.quarantined)} quarantined)." if result.quarantined else "."))
    else:
        out.table(
            f"{len(result.pending)} file(s) pending in {result.landing}",
            ["File", "Size", "Updated", "Why"],
            [[p.info.name, out.size(p.info.size), p.info.updated.isoformat(" ", "seconds")[:19], p.why] for p in result.pending],
            keys=["file", "size_bytes", "updated", "why"] if not out.terminal else None,
        )
    for p in result.pending:
        if p.info.problem:  # listed, but it will fail alone as it is
            out.line(f"cannot be loaded as it is: {p.info.problem}", style="yellow")
    if result.quarantined:
        out.line(f"Quarantined (not retried): {', '.join(q.name for q in result.quarantined)}. "
                 "See `estore-ops cursor show`.", style="yellow")


def render_cursor_reset(out: Output, result: CursorReset) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    if result.all_files:
        out.line("State reset: every file loads again on the next run (the previous state is kept; `cursor restore` undoes this).")
        return
    if result.forgotten:
        out.line(f"Forgotten: {', '.join(result.forgotten)}. They load on the next run.")
    if result.not_in_state:
        out.line(f"Not in the state: {', '.join(result.not_in_state)}. "
                 "If already loaded long ago, reload it with `estore-ops load --file NAME --force`.")


def render_cursor_restore(out: Output, result: CursorRestore) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    counts = result.counts
    out.line(f"Restored the previous state: {counts['loaded']} loaded, {counts['failed']} failed, {counts['quarantined']} quarantined.")


def render_lock(out: Output, result: LockStatus) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    if result.lock is None:
        out.line("No run holds the lock.")
    else:
        out.line(f"Held by {result.lock.describe()}" + (" (STALE: the next run takes it over)" if result.lock.stale else ""))


def render_lock_break(out: Output, result: LockBreak) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    out.line(f"Broke the lock held by {result.broken.describe()}." if result.broken else
             "Nothing broken: no lock, or it changed hands since it was shown (run `lock show` again).")


def render_generated(out: Output, result: GeneratedFiles) -> None:
    if out.json_mode:
        out.json(result.as_list())
        return
    out.table(f"Sample files in {result.folder}", ["File", "Rows", "Status"], [[w.name, w.rows, w.status] for w in result.files])


# -- report, verify, upgrade ----------------------------------------------------------------------


def render_html_report(out: Output, page: HtmlReport) -> None:
    if out.json_mode:
        out.json(page.as_dict())
        return
    out.line(f"Report written: {page.path} ({out.size(page.bytes)}, {len(page.charts)} charts). Open it in a browser; it works offline.")


def render_verify(out: Output, result: VerifyResult, show_all: bool = False) -> None:
    """A table of the files that need a look (every file with show_all), then a summary line."""
    from estore_ops.ops.verify import OK

    if out.json_mode:
        out.json(result.as_dict())
        return
    shown = [c for c in result.checks if show_all or c.verdict != OK]
    if shown:
        out.table(
            "Verify: warehouse vs state vs landing files",
            ["File", "Generation", "Verdict", "Warehouse", "State", "File rows", "Detail", "Fix"],
            [[c.name, c.generation, c.verdict.upper() if c.problem else c.verdict, out.num(c.warehouse_rows),
              out.num(c.state_rows), out.num(c.file_rows), c.detail, c.fix] for c in shown],
            keys=["file", "generation", "verdict", "warehouse_rows", "state_rows", "file_rows", "detail", "fix"],
        )
    counts = ", ".join(f"{n} {v}" for v, n in result.counts().items() if n)
    scope = []
    if result.since or result.until:
        scope.append(f"events {result.since.isoformat() if result.since else '...'} to {result.until.isoformat() if result.until else '...'}")
    scope.append("files recounted (--deep)" if result.deep else "file rows from the state and the listing")
    verdict = "everything agrees" if result.ok else f"{len(result.problems)} problem(s)"
    out.line(f"verify: {verdict}; {len(result.checks)} file version(s) checked ({counts or 'nothing loaded'}); "
             f"{'; '.join(scope)}; {result.seconds:.2f}s.", style=None if result.ok else "red")


def verify_failure(result: VerifyResult) -> str:
    """The line on stderr when verify finds problems: the first ten files and their verdicts."""
    listed = ", ".join(f"{c.name} ({c.verdict})" for c in result.problems[:10])
    more = f" and {len(result.problems) - 10} more" if len(result.problems) > 10 else ""
    return f"verify: {len(result.problems)} problem(s): {listed}{more}"


def render_upgrade(out: Output, result: UpgradeResult) -> None:
    """One row per step: what it found, did (or would do) and what is left to the user."""
    if out.json_mode:
        out.json(result.as_dict())
        return
    done = "Would do" if result.dry_run else "Did"
    out.table(
        f"Upgrade {result.run_id}" + (" (dry run: nothing changed)" if result.dry_run else ""),
        ["Step", "Status", "Found", done, "Left to you"],
        [[s.name, s.status, "\n".join(s.found), "\n".join(s.would_do if result.dry_run else s.did),
          "\n".join(([s.error] if s.error else []) + s.left)] for s in result.steps],
        keys=["step", "status", "found", "would_do" if result.dry_run else "did", "left"],
    )
    if result.left:
        out.line("Left to do:", style="yellow")
        for item in result.left:
            out.line(f"- {item}", style="yellow")
    elif result.dry_run:
        out.line("Run `estore-ops upgrade` to do it." if any(s.would_do for s in result.steps)
                 else "Nothing to upgrade: this deployment is up to date.")
    else:
        out.line("Upgrade complete." if any(s.did for s in result.steps) else "Nothing to upgrade: this deployment is up to date.")


# -- unattended operation -------------------------------------------------------------------------


def render_tick(out: Output, line: str, result: TickResult | None) -> None:
    """One tick of `watch`: its status line, or with --json its result (a status when nothing ran)."""
    if out.json_mode:
        out.json(result.as_dict() if result else {"status": line})
    else:
        out.line(line)


def render_event_line(out: Output, line: str, data: dict[str, Any]) -> None:
    """One event of `watch --events`, flushed at once; with --json one object per line (the loop runs for days)."""
    if out.json_mode:
        import json

        from estore_ops.cli.app import redacted

        sys.stdout.write(redacted(json.dumps(data | {"line": line}, default=str)) + "\n")
    else:
        out.line(line)
    sys.stdout.flush()


def render_health(out: Output, result: HealthReport) -> None:
    if out.json_mode:
        out.json(result.as_dict())
    else:
        out.table("Health", ["Check", "Last success", "Age", "Limit", "Status"], [
            [r.check, r.last_success or "never", "" if r.age_seconds is None else f"{r.age_seconds / 60:.1f} min",
             f"{r.max_age_seconds / 60:.0f} min", "STALE" if r.stale else "ok"] for r in result.rows
        ], keys=["check", "last_success", "age", "limit", "status"])
    for r in result.rows:
        if r.failing:
            out.line(r.problem(), style="red")


def health_failure(result: HealthReport) -> str:
    """The line on stderr of an unhealthy pipeline: what is stale, and what fails because of the machine."""
    parts = ([f"stale: {', '.join(result.stale)}"] if result.stale else []) + (
        [f"failing because of the machine: {', '.join(result.failing)}"] if result.failing else [])
    return "; ".join(parts)


def render_runs(out: Output, result: RunList) -> None:
    if out.json_mode:
        out.json(result.as_list())
        return
    if not result.records:
        out.line("No runs recorded yet.")
        return
    out.table("Recent runs", ["Run", "Job", "Started", "Seconds", "Status", "Files", "Rows", "Error"], [
        [r.run_id, r.job, r.started_at[:19], "" if r.seconds is None else f"{r.seconds:.1f}", r.status,
         r.files_loaded, out.num(r.rows_loaded), (r.error or (r.failures[0]["subject"] if r.failures else ""))[:60]]
        for r in result.records
    ])


def render_run(out: Output, record: RunRecord) -> None:
    data = record.as_dict()
    if out.json_mode:
        out.json(data)
        return
    failures = data.pop("failures")
    out.table(f"Run {record.run_id}", ["Field", "Value"], [[k, v] for k, v in data.items()], keys=["field", "value"])
    for f in failures:
        out.line(f"FAILED {f['subject']}: {f['error']}", style="red")


def render_alert_test(out: Output, result: AlertSent) -> None:
    out.line(f"Test alert sent via {result.notifier}.")


def render_unit_failure(out: Output, result: UnitFailureAlert) -> None:
    out.line("Alert sent." if result.sent else "Alert not sent (deduplicated or no notifier); see the log.")


def render_doctor(out: Output, result: DoctorReport) -> None:
    if out.json_mode:
        out.json(result.as_list())
        return
    out.table("Doctor", ["Check", "Result", "Detail", "Fix"],
              [[c.name, "ok" if c.ok else "FAIL", c.detail, "" if c.ok else c.fix] for c in result.checks])


# -- deployment -----------------------------------------------------------------------------------


def render_install(out: Output, result: InstallResult) -> None:
    if out.json_mode:
        out.json(result.as_dict())
        return
    if result.dry_run:
        for path, text in result.files.items():
            out.line(f"# {path}", style="bold")
            out.line(text)
        out.line("# commands that would run:", style="bold")
    for cmd in result.commands:
        out.line(("  " if result.dry_run else "ran: ") + " ".join(cmd))
    for path in result.removed:
        out.line(("  would remove " if result.dry_run else "removed ") + f"{path} (installed by an earlier version)")
    if not result.dry_run:
        out.line(f"Installed {len(result.files)} unit(s); timers enabled: {', '.join(result.timers)}"
                 + (f"; services enabled: {', '.join(result.services)}." if result.services else "."))


def render_timers(out: Output, result: TimerReport) -> None:
    if out.json_mode:
        out.json(result.as_list())
        return
    if not result.timers:
        out.line("No estore-ops timers installed (run `estore-ops systemd install`).")
        return
    out.table("estore-ops timers", ["Timer", "Last run", "Next run", "Last result", "Exit"], [
        [r.timer, r.last_run or "never", r.next_run or "-", "running" if r.running else (r.last_result or "-"), r.exit_status]
        for r in result.timers
    ])
