"""Ingest commands: scan, load, cursor show/reset/restore, watch, and sample files (generate)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from estore_ops.cli.app import JsonOpt, QuietOpt, YesOpt, confirm, fail_unless, group, options

cursor_app = group("Inspect, reset or restore the ingest state (the cursor).")


def scan(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Option(help="Only files under this prefix.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """List landing files not loaded yet (new, changed, or to retry), in arrival order."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_scan

    cli = options(ctx)
    rt = cli.runtime()
    render_scan(cli.output(json_out), jobs.scan(rt, prefix))


def load(
    ctx: typer.Context,
    file: Annotated[Optional[list[str]], typer.Option("--file", help="Load this file (repeatable).")] = None,
    prefix: Annotated[str, typer.Option(help="Only files under this prefix (backfill).")] = "",
    force: Annotated[bool, typer.Option(help="Reload even when already loaded (rows are replaced, not duplicated).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would load; change nothing.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Load pending files into the raw events table, exactly once per file version."""
    from estore_ops import jobs
    from estore_ops.cli.render import LoadProgress, render_load
    from estore_ops.ingest.pipeline import LoadRequest

    cli = options(ctx)
    rt = cli.runtime()
    out = cli.output(json_out, quiet)
    with LoadProgress(out, show=not dry_run) as progress:
        request = LoadRequest(files=file or (), prefix=prefix, force=force, dry_run=dry_run)
        result = jobs.load(rt, request, progress.on_start, progress.on_file)
    render_load(out, result)
    fail_unless(result.ok)


@cursor_app.command("show")
def cursor_show(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Counts by status, newest loaded file, failed and quarantined files with their errors."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_cursor

    cli = options(ctx)
    rt = cli.runtime()
    render_cursor(cli.output(json_out), jobs.cursor_show(rt))


@cursor_app.command("reset")
def cursor_reset(
    ctx: typer.Context,
    all_files: Annotated[bool, typer.Option("--all", help="Forget every file: all load again (rows replaced).")] = False,
    file: Annotated[Optional[list[str]], typer.Option("--file", help="Forget this file so it loads again (repeatable).")] = None,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Forget loaded, failed or quarantined files so the next load takes them again."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_cursor_reset

    cli = options(ctx)
    rt = cli.runtime()
    if all_files or file:
        target = "EVERY file" if all_files else ", ".join(file or [])
        confirm(f"Forget {target} in {rt.state.location}? They will load again (rows are replaced, not duplicated).", yes)
    render_cursor_reset(cli.output(json_out), jobs.cursor_reset(rt, all_files, file or ()))


@cursor_app.command("restore")
def cursor_restore(ctx: typer.Context, yes: YesOpt = False, json_out: JsonOpt = False) -> None:
    """Replace the state document with its previous version (after corruption or a mistaken reset)."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_cursor_restore

    cli = options(ctx)
    rt = cli.runtime()
    confirm(f"Replace {rt.state.location} with its previous version?", yes)
    render_cursor_restore(cli.output(json_out), jobs.cursor_restore(rt))


def watch(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between ticks (with --events: between scans while notifications are unavailable).")] = 300,
    once: Annotated[bool, typer.Option("--once", help="One tick, then exit with its outcome (for a timer).")] = False,
    events: Annotated[bool, typer.Option("--events", help="React to arrivals: OS notifications on a local folder, Pub/Sub on GCS; polling is the safety net.")] = False,
    notifications: Annotated[Optional[str], typer.Option(help="With --events on GCS: pubsub://PROJECT/SUBSCRIPTION of the bucket's notifications.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Loop: scan, load new files, transform once per tick when something loaded. Stops cleanly on SIGTERM/SIGINT.

    With --events: load files seconds after they land (a catch-up scan every catchup_interval), and transform
    once arrivals pause (transform_quiet_period) or at most every transform_min_interval."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_event_line, render_tick

    cli = options(ctx)
    if notifications is not None:
        cli.flags["notifications"] = notifications
    out = cli.output(json_out)

    def on_tick(line: str, result: Any) -> None:
        render_tick(out, line, result)

    def on_line(line: str, data: Any) -> None:
        render_event_line(out, line, data)

    raise typer.Exit(jobs.watch(cli.runtime, interval, once=once, events=events, on_tick=on_tick, on_line=on_line))


def generate(
    ctx: typer.Context,
    dest: Annotated[Optional[str], typer.Option(help="Folder to write into (default: the landing folder).")] = None,
    months: Annotated[int, typer.Option(min=1, max=24, help="Monthly files to write, from 2019-Oct.")] = 2,
    rows: Annotated[int, typer.Option(min=1, help="Events per monthly file.")] = 50_000,
    users: Annotated[int, typer.Option(min=1, help="Distinct users across all files.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 46,
    gzip_from: Annotated[int, typer.Option(help="Files from this month number on (1-based) are written as .csv.gz.")] = 2,
    json_out: JsonOpt = False,
) -> None:
    """Write realistic REES46-style monthly event files (deterministic)."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_generated

    cli = options(ctx)
    rt = cli.runtime()
    result = jobs.generate(rt, dest, months=months, rows=rows, users=users, seed=seed, gzip_from=gzip_from)
    render_generated(cli.output(json_out), result)
