"""How command results look: tables and summaries shared by several commands."""

from __future__ import annotations

import math
from contextlib import ExitStack
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from estore_ops.ingest.pipeline import LoadResult, PendingFile
from estore_ops.output import Output
from estore_ops.backends.warehouses.base import FileOutcome

if TYPE_CHECKING:
    from estore_ops.analytics.transform import DbtRunResult


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


def render_cursor(out: Output, summary: dict[str, Any]) -> None:
    counts = summary["counts"]
    out.line(f"State {summary['location']} (generation {summary['generation']}, updated {summary['updated_at'] or 'never'})")
    out.table("Files by status", ["Status", "Files"], [[k, v] for k, v in counts.items()])
    newest = summary["newest_loaded"]
    if newest:
        out.line(f"Newest loaded: {newest['name']} at {newest['loaded_at']} ({out.num(newest['rows'])} rows, run {newest['run_id']})")
    if summary["folded"]:
        out.line(f"{summary['folded']} older loaded file(s) are kept in compact form (name and generation only).")
    if summary["problems"]:
        out.table("Failed and quarantined files", ["File", "Status", "Attempts", "Error"],
                  [[p["name"], p["status"], p["attempts"], p["error"]] for p in summary["problems"]])


def render_dbt(out: Output, result: DbtRunResult, run_id: str) -> None:
    if out.json_mode:
        out.json({
            "run_id": run_id, "command": result.command, "ok": result.ok, "seconds": round(result.elapsed, 2),
            "counts": result.counts(), "error": result.error, "notes": result.notes,
            "nodes": [
                {"name": n.name, "kind": n.kind, "status": n.status, "seconds": round(n.seconds, 2),
                 "rows_affected": n.rows_affected, "message": n.message if n.failed else None}
                for n in result.nodes
            ],
        })
        return
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


def render_headline(out: Output, data: dict[str, list[dict[str, Any]]]) -> None:
    """The three headline tables: RFM segments, conversion funnel, churn. Money is exact: a
    Decimal printed to the cent (in JSON a number whose digits are those cents)."""
    if out.json_mode:
        out.json({name: [{k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()} for row in rows]
                  for name, rows in data.items()})
        return

    def pct(value: float | None) -> str:
        return "" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"

    def money(value: float | None) -> str:
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
        ["all eligible" if r["metric_level"] == "cohort_overall" else r["time_period"][:7], out.num(r["customers"]),
         out.num(r["churned"]), pct(r["churn_rate"]), r["cohort_start"], r["cohort_end"]]
        for r in data["churn"]
    ], keys=["cohort", "customers", "churned", "churn_rate", "from", "to"])
