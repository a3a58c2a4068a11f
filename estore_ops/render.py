"""How command results look: tables and summaries shared by several commands."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from estore_ops.ingest import LoadResult, PendingFile
from estore_ops.output import Output
from estore_ops.warehouses.base import FileOutcome


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
            [[o.name, out.num(o.rows) if o.ok else "", f"{o.seconds:.2f}" if o.ok else "", "loaded" if o.ok else "FAILED"] for o in result.outcomes],
        )
        for o in result.failed:
            out.line(f"FAILED {o.error}", style="red")
        out.line(f"{len(result.loaded)} file(s) loaded, {out.num(result.rows)} rows, {len(result.failed)} failed, in {result.seconds:.1f}s.")
    for s in result.skipped:
        out.line(f"skipped {s['name']}: {s['why']}", style="yellow")


def render_cursor(out: Output, summary: dict[str, Any]) -> None:
    counts = summary["counts"]
    out.line(f"State {summary['location']} (generation {summary['generation']}, updated {summary['updated_at'] or 'never'})")
    out.table("Files by status", ["Status", "Files"], [[k, v] for k, v in counts.items()])
    newest = summary["newest_loaded"]
    if newest:
        out.line(f"Newest loaded: {newest['name']} at {newest['loaded_at']} ({out.num(newest['rows'])} rows, run {newest['run_id']})")
    if summary["compacted"]:
        out.line(f"{summary['compacted']} older loaded file(s) are folded into the watermark (generation {summary['watermark']}).")
    if summary["problems"]:
        out.table("Failed and quarantined files", ["File", "Status", "Attempts", "Error"],
                  [[p["name"], p["status"], p["attempts"], p["error"]] for p in summary["problems"]])
