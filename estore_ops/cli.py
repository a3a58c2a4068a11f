"""The `estore-ops` command line: each command parses, calls one function in the library, renders.

Errors from the library (EstoreError) become exit codes in one place: EstoreGroup.invoke.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from estore_ops.errors import EXIT_CODE_HELP, ConfigError, EstoreError, ExitCode, JobFailedError

_debug = False


# The base of click's errors (BadParameter, UsageError, ...) as this typer uses it (typer 0.28 ships
# its own copy of click): they must reach click's handler, which prints them and exits 2.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class EstoreGroup(TyperGroup):
    """Turns library errors into one clear line on stderr and the documented exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except EstoreError as exc:
            _show_traceback()
            if not isinstance(exc, JobFailedError) or str(exc):
                typer.echo(_redacted(f"error: {exc}"), err=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, _CLICK_ERROR):
            raise  # click's own: a usage error (a bad option value) exits 2 with click's message
        except OSError as exc:
            # A file or folder the process cannot use (permissions, disk full): one clear line.
            from estore_ops.backends.environment import from_os_error

            _show_traceback()
            fault = from_os_error(exc, "the path")
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            text = str(fault) if fault else f"{where}{exc.strerror or exc}. Check the path's owner and permissions."
            typer.echo(_redacted(f"error: {text}"), err=True)
            raise typer.Exit(int(ExitCode.BACKEND)) from None
        except Exception as exc:
            _show_traceback()
            typer.echo(_redacted(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"), err=True)
            raise typer.Exit(int(ExitCode.FAILED)) from None


def _redacted(text: str) -> str:
    """Secrets masked and control characters shown as escapes: error text carries file names and values."""
    from estore_ops.output import printable
    from estore_ops.redact import redact

    return printable(redact(text))


def _show_traceback() -> None:
    """With --debug: the traceback, with secrets masked like every other output."""
    if _debug:
        import traceback

        typer.echo(_redacted(traceback.format_exc()), err=True)


def _typer(help_text: str) -> typer.Typer:
    return typer.Typer(
        cls=EstoreGroup, help=help_text, no_args_is_help=True, add_completion=False,
        pretty_exceptions_show_locals=False, rich_markup_mode=None,
    )


app = _typer(
    "Operate the e-commerce events pipeline: scan the landing bucket, load new files into the "
    "warehouse exactly once, run the dbt models and snapshots.\n\n" + EXIT_CODE_HELP
)
cursor_app = _typer("Inspect, reset or restore the ingest state (the cursor).")
runs_app = typer.Typer(cls=EstoreGroup, help="Recent runs: what ran, when, and what happened.", add_completion=False,
                       pretty_exceptions_show_locals=False, rich_markup_mode=None, invoke_without_command=True)
alert_app = _typer("Send alerts: a test message, or a systemd unit failure.")
systemd_app = _typer("Install and inspect the systemd timers that drive the pipeline on a VM.")
lock_app = _typer("Inspect or break the run lock.")
app.add_typer(cursor_app, name="cursor")
app.add_typer(lock_app, name="lock")
app.add_typer(runs_app, name="runs")
app.add_typer(alert_app, name="alert")
app.add_typer(systemd_app, name="systemd")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


class _Globals:
    flags: dict[str, Any] = {}
    config_file: Optional[str] = None
    verbose: bool = False


@app.callback()
def _global_options(
    config: Annotated[Optional[Path], typer.Option("--config", help="Settings file (default: ./estore-ops.toml).")] = None,
    landing: Annotated[Optional[str], typer.Option(help="Landing area: folder, file:///path or gs://bucket/prefix.")] = None,
    warehouse: Annotated[Optional[str], typer.Option(help="Warehouse: duckdb:///path.duckdb or bigquery://project/dataset.")] = None,
    state: Annotated[Optional[str], typer.Option(help="State location: folder or gs://bucket/prefix.")] = None,
    log_format: Annotated[Optional[str], typer.Option(help="auto, text or json.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors.")] = False,
) -> None:
    global _debug
    _debug = debug
    _Globals.flags = {"landing": landing, "warehouse": warehouse, "state": state, "log_format": log_format}
    _Globals.config_file = str(config) if config else None
    _Globals.verbose = verbose


def _runtime() -> Any:
    from estore_ops.config import load_settings
    from estore_ops.logs import configure_logging, set_run_id
    from estore_ops.redact import register_secret
    from estore_ops.runtime import Runtime

    settings = load_settings(_Globals.flags, _Globals.config_file)
    for key in ("slack_webhook_url", "slack_bot_token"):
        register_secret(settings.values[key].get())
    rt = Runtime(settings)
    configure_logging(settings.log_format, _Globals.verbose)
    set_run_id(rt.run_id)
    return rt


def _output(json_mode: bool = False, quiet: bool = False) -> Any:
    from estore_ops.output import Output

    return Output(json_mode=json_mode, quiet=quiet)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} Refusing to ask without a terminal: pass --yes to confirm.")
    if not typer.confirm(question, default=False):
        raise typer.Exit(int(ExitCode.OK))


# -- configuration ------------------------------------------------------------------------------


@app.command("config")
def config_cmd(json_out: JsonOpt = False) -> None:
    """Show every effective setting and where it came from (secrets masked)."""
    rt = _runtime()
    out = _output(json_out)
    rows = rt.settings.describe()
    if json_out:
        out.json({"config_file": rt.settings.config_file, "settings": rows})
        return
    out.table(
        f"Settings (config file: {rt.settings.config_file or 'none'})",
        ["Key", "Value", "Source"], [[r["key"], r["value"], r["source"]] for r in rows],
    )


# -- scan and load ------------------------------------------------------------------------------


@app.command()
def scan(
    prefix: Annotated[str, typer.Option(help="Only files under this prefix.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """List landing files not loaded yet (new, changed, or to retry), in arrival order."""
    from estore_ops import jobs

    rt = _runtime()
    out = _output(json_out)
    result = jobs.scan(rt, prefix)
    requests = getattr(rt.landing, "list_requests", None)  # Cloud Storage: pages of up to 1,000 objects
    if json_out:
        out.json(result.as_dict() | ({"list_requests": requests} if requests is not None else {}))
        return
    if not result.pending:
        out.line(f"Nothing new: {result.listed} file(s) listed" + (f" in {requests} request(s)" if requests is not None else "")
                 + ", all loaded" + (f" ({len(result.quarantined)} quarantined)." if result.quarantined else "."))
    else:
        out.table(
            f"{len(result.pending)} file(s) pending in {rt.landing.uri()}",
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


@app.command()
def load(
    file: Annotated[Optional[list[str]], typer.Option("--file", help="Load this file (repeatable).")] = None,
    prefix: Annotated[str, typer.Option(help="Only files under this prefix (backfill).")] = "",
    force: Annotated[bool, typer.Option(help="Reload even when already loaded (rows are replaced, not duplicated).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would load; change nothing.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Load pending files into the raw events table, exactly once per file version."""
    from estore_ops import jobs
    from estore_ops.render import LoadProgress, render_load

    rt = _runtime()
    out = _output(json_out, quiet)
    with LoadProgress(out, show=not dry_run) as progress:
        result = jobs.load(rt, file or (), prefix, force, dry_run, progress.on_start, progress.on_file)
    render_load(out, result)
    if not result.ok:
        raise JobFailedError("")


# -- cursor -------------------------------------------------------------------------------------


@cursor_app.command("show")
def cursor_show(json_out: JsonOpt = False) -> None:
    """Counts by status, newest loaded file, failed and quarantined files with their errors."""
    from estore_ops import jobs
    from estore_ops.render import render_cursor

    rt = _runtime()
    out = _output(json_out)
    summary = jobs.cursor_show(rt)
    if json_out:
        out.json(summary)
    else:
        render_cursor(out, summary)


@cursor_app.command("reset")
def cursor_reset(
    all_files: Annotated[bool, typer.Option("--all", help="Forget every file: all load again (rows replaced).")] = False,
    file: Annotated[Optional[list[str]], typer.Option("--file", help="Forget this file so it loads again (repeatable).")] = None,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Forget loaded, failed or quarantined files so the next load takes them again."""
    from estore_ops import jobs

    rt = _runtime()
    out = _output(json_out)
    target = "EVERY file" if all_files else ", ".join(file or [])
    if all_files or file:
        _confirm(f"Forget {target} in {rt.state.location}? They will load again (rows are replaced, not duplicated).", yes)
    result = jobs.cursor_reset(rt, all_files, file or ())
    if json_out:
        out.json(result)
        return
    if result["reset"] == "all":
        out.line("State reset: every file loads again on the next run (the previous state is kept; `cursor restore` undoes this).")
    else:
        if result["forgotten"]:
            out.line(f"Forgotten: {', '.join(result['forgotten'])}. They load on the next run.")
        if result["not_in_state"]:
            out.line(f"Not in the state: {', '.join(result['not_in_state'])}. "
                     "If already loaded long ago, reload it with `estore-ops load --file NAME --force`.")


@cursor_app.command("restore")
def cursor_restore(yes: YesOpt = False, json_out: JsonOpt = False) -> None:
    """Replace the state document with its previous version (after corruption or a mistaken reset)."""
    from estore_ops import jobs

    rt = _runtime()
    out = _output(json_out)
    _confirm(f"Replace {rt.state.location} with its previous version?", yes)
    snap = jobs.cursor_restore(rt)
    counts = snap.state.counts()
    if json_out:
        out.json({"restored": True, "counts": counts, "generation": snap.generation})
    else:
        out.line(f"Restored the previous state: {counts['loaded']} loaded, {counts['failed']} failed, {counts['quarantined']} quarantined.")


# -- lock ---------------------------------------------------------------------------------------


@lock_app.command("show")
def lock_show(json_out: JsonOpt = False) -> None:
    """Who holds the run lock, if anyone."""
    from dataclasses import asdict

    from estore_ops.ops.lock import read_lock

    rt = _runtime()
    out = _output(json_out)
    found = read_lock(rt.state_backend)
    if json_out:
        out.json({"held": bool(found), **({"lock": asdict(found[0]), "stale": found[0].stale} if found else {})})
        return
    if not found:
        out.line("No run holds the lock.")
    else:
        info = found[0]
        out.line(f"Held by {info.describe()}" + (" (STALE: the next run takes it over)" if info.stale else ""))


@lock_app.command("break")
def lock_break(yes: YesOpt = False, json_out: JsonOpt = False) -> None:
    """Delete the run lock. Only when its holder is certainly gone (check `lock show`)."""
    from dataclasses import asdict

    from estore_ops.ops.lock import break_lock, read_lock

    rt = _runtime()
    out = _output(json_out)
    found = read_lock(rt.state_backend)
    if found:
        _confirm(f"Break the lock held by {found[0].describe()}?", yes)
    broken = break_lock(rt.state_backend, expected_generation=found[1]) if found else None
    if json_out:
        out.json({"broken": bool(broken), **({"lock": asdict(broken)} if broken else {})})
    else:
        out.line(f"Broke the lock held by {broken.describe()}." if broken else
                 "Nothing broken: no lock, or it changed hands since it was shown (run `lock show` again).")


# -- sample data and demo -----------------------------------------------------------------------


@app.command()
def generate(
    dest: Annotated[Optional[str], typer.Option(help="Folder to write into (default: the landing folder).")] = None,
    months: Annotated[int, typer.Option(min=1, max=24, help="Monthly files to write, from 2019-Oct.")] = 2,
    rows: Annotated[int, typer.Option(min=1, help="Events per monthly file.")] = 50_000,
    users: Annotated[int, typer.Option(min=1, help="Distinct users across all files.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 46,
    gzip_from: Annotated[int, typer.Option(help="Files from this month number on (1-based) are written as .csv.gz.")] = 2,
    json_out: JsonOpt = False,
) -> None:
    """Write realistic REES46-style monthly event files (deterministic)."""
    from estore_ops.testing.generate import generate_files

    rt = _runtime()
    out = _output(json_out)
    folder = Path(dest) if dest else rt.landing.local_root
    if folder is None:
        raise ConfigError("generate writes to a local folder: pass --dest FOLDER (the landing area is not local).")
    written = generate_files(folder, months=months, rows_per_month=rows, users=users, seed=seed, gzip_from=gzip_from)
    if json_out:
        out.json([w.as_dict() for w in written])
        return
    out.table(f"Sample files in {folder}", ["File", "Rows", "Status"], [[w.name, w.rows, w.status] for w in written])


# -- dbt ----------------------------------------------------------------------------------------


@app.command()
def transform(
    select: Annotated[Optional[list[str]], typer.Option("--select", "-s", help="dbt selection (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="dbt exclusion (repeatable).")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Rebuild incremental models from scratch.")] = False,
    no_test: Annotated[bool, typer.Option("--no-test", help="Build models without running their tests.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Build the dbt models (staging, facts, dimensions, RFM, churn) and run their tests."""
    from estore_ops import jobs
    from estore_ops.render import render_dbt

    rt = _runtime()
    result = jobs.transform(rt, select or (), exclude or (), full_refresh, no_test)
    render_dbt(_output(json_out), result, rt.run_id)
    if not result.ok:
        raise JobFailedError("")


@app.command()
def snapshot(
    select: Annotated[Optional[list[str]], typer.Option("--select", "-s", help="Only these snapshots.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the dbt SCD2 snapshots (snap_user_rfm, snap_user_status)."""
    from estore_ops import jobs
    from estore_ops.render import render_dbt

    rt = _runtime()
    result = jobs.snapshot(rt, select or ())
    render_dbt(_output(json_out), result, rt.run_id)
    if not result.ok:
        raise JobFailedError("")


@app.command()
def report(
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML page (charts, tables, load freshness) to this path.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Headline results from the marts: RFM segments, conversion funnel, churn by cohort (or an HTML page with --html)."""
    from estore_ops import jobs
    from estore_ops.render import render_headline

    rt = _runtime()
    out = _output(json_out)
    if html is None:
        render_headline(out, jobs.report(rt))
        return
    page = jobs.report_html(rt, html)
    if json_out:
        out.json(page.as_dict())
    else:
        out.line(f"Report written: {page.path} ({out.size(page.bytes)}, {len(page.charts)} charts). Open it in a browser; it works offline.")


@app.command()
def verify(
    deep: Annotated[bool, typer.Option("--deep", help="Recount the rows of every landing file (DuckDB's reader; on GCP a BigQuery external table over gs://).")] = False,
    since: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"], help="Only events at or after this UTC date/time (BigQuery prunes partitions).")] = None,
    until: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"], help="Only events before this UTC date/time.")] = None,
    prefix: Annotated[str, typer.Option(help="Only files under this prefix.")] = "",
    fail_on_gone: Annotated[bool, typer.Option("--fail-on-gone", help="A loaded file missing from the landing area is a failure (default: reported only).")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="List every file, not only those that need a look.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check that the warehouse holds exactly what landed: rows per file version vs the state and the files. Exit 1 on a mismatch."""
    from estore_ops import jobs

    rt = _runtime()
    out = _output(json_out)
    result = jobs.verify(rt, deep=deep, since=_utc(since), until=_utc(until), fail_on_gone=fail_on_gone, prefix=prefix)
    result.render(out, show_all)
    if not result.ok:
        listed = ", ".join(f"{c.name} ({c.verdict})" for c in result.problems[:10])
        more = f" and {len(result.problems) - 10} more" if len(result.problems) > 10 else ""
        raise JobFailedError(f"verify: {len(result.problems)} problem(s): {listed}{more}" if not json_out else "")


def _utc(moment: Optional[datetime]) -> Optional[datetime]:
    from datetime import timezone

    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


@app.command()
def upgrade(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what the upgrade would do; change nothing.")] = False,
    allow_rewrite: Annotated[bool, typer.Option("--allow-rewrite", help="Also make the changes that rewrite the raw events table (BigQuery; the dry run says how much it reads).")] = False,
    unit_dir: Annotated[Path, typer.Option(help="Where the systemd units are installed.")] = Path("/etc/systemd/system"),
    json_out: JsonOpt = False,
) -> None:
    """Bring a deployment made by an earlier version up to this one: what it found, did, and what is left to you."""
    from estore_ops import jobs

    rt = _runtime()
    result = jobs.upgrade(rt, dry_run=dry_run, allow_rewrite=allow_rewrite, unit_dir=unit_dir)
    result.render(_output(json_out))
    if not result.ok and not dry_run:
        raise JobFailedError("")


# -- unattended operation -----------------------------------------------------------------------


@app.command()
def watch(
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between ticks (with --events: between scans while notifications are unavailable).")] = 300,
    once: Annotated[bool, typer.Option("--once", help="One tick, then exit with its outcome (for a timer).")] = False,
    events: Annotated[bool, typer.Option("--events", help="React to arrivals: OS notifications on a local folder, Pub/Sub on GCS; polling is the safety net.")] = False,
    notifications: Annotated[Optional[str], typer.Option(help="With --events on GCS: pubsub://PROJECT/SUBSCRIPTION of the bucket's notifications.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Loop: scan, load new files, transform once per tick when something loaded. Stops cleanly on SIGTERM/SIGINT.

    With --events: load files seconds after they land (a catch-up scan every catchup_interval), and transform
    once arrivals pause (transform_quiet_period) or at most every transform_min_interval."""
    from estore_ops.ingest.watch import watch as run_watch

    if notifications is not None:
        _Globals.flags["notifications"] = notifications
    rt = _runtime()  # validate the configuration before the first tick
    out = _output(json_out)
    if events:
        if once:
            raise ConfigError("--events runs until stopped; --once is the timer's single tick. Use one of them.")
        from estore_ops.ingest.watch import watch_events

        def on_line(line: str, data: Any) -> None:
            if json_out:  # one JSON object per line: the loop runs for days
                import json

                sys.stdout.write(_redacted(json.dumps(data | {"line": line}, default=str)) + "\n")
            else:
                out.line(line)
            sys.stdout.flush()

        raise typer.Exit(watch_events(rt, interval, on_line))

    def on_tick(line: str, result: Any) -> None:
        if json_out:
            out.json(result.as_dict() if result else {"status": line})
        else:
            out.line(line)

    code = run_watch(_runtime, interval, once=once, on_tick=on_tick)
    raise typer.Exit(code)


@app.command()
def health(json_out: JsonOpt = False) -> None:
    """Check heartbeat ages (ingest, transform, snapshot); exit 5 when any is stale, alerting once per episode."""
    from estore_ops import jobs
    from estore_ops.errors import UnhealthyError

    rt = _runtime()
    out = _output(json_out)
    rows, alerted = jobs.health_check(rt)
    if json_out:
        out.json({"healthy": not any(r.stale for r in rows), "alerted": alerted, "checks": [r.as_dict() for r in rows]})
    else:
        out.table("Health", ["Check", "Last success", "Age", "Limit", "Status"], [
            [r.check, r.last_success or "never", "" if r.age_seconds is None else f"{r.age_seconds / 60:.1f} min",
             f"{r.max_age_seconds / 60:.0f} min", "STALE" if r.stale else "ok"] for r in rows
        ], keys=["check", "last_success", "age", "limit", "status"])
    for r in rows:
        if r.failing:
            out.line(r.problem(), style="red")
    stale = [r.check for r in rows if r.stale and not r.failing]
    failing = [r.check for r in rows if r.failing]
    if stale or failing:
        parts = ([f"stale: {', '.join(stale)}"] if stale else []) + (
            [f"failing because of the machine: {', '.join(failing)}"] if failing else [])
        raise UnhealthyError("; ".join(parts) if not json_out else "")


@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    job: Annotated[Optional[str], typer.Option(help="Only this job: load, transform, snapshot, watch.")] = None,
    status: Annotated[Optional[str], typer.Option(help="Only this status: running, success, failed.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs.")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """List recent runs (newest first)."""
    if ctx.invoked_subcommand:
        return
    from estore_ops import jobs

    rt = _runtime()
    out = _output(json_out)
    records = jobs.runs(rt, job, status, limit)
    if json_out:
        out.json([r.as_dict() for r in records])
        return
    if not records:
        out.line("No runs recorded yet.")
        return
    out.table("Recent runs", ["Run", "Job", "Started", "Seconds", "Status", "Files", "Rows", "Error"], [
        [r.run_id, r.job, r.started_at[:19], "" if r.seconds is None else f"{r.seconds:.1f}", r.status,
         r.files_loaded, out.num(r.rows_loaded), (r.error or (r.failures[0]["subject"] if r.failures else ""))[:60]]
        for r in records
    ])


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")], json_out: JsonOpt = False) -> None:
    """Everything recorded about one run."""
    from estore_ops import jobs

    rt = _runtime()
    out = _output(json_out)
    record = jobs.run_detail(rt, run_id)
    data = record.as_dict()
    if json_out:
        out.json(data)
        return
    failures = data.pop("failures")
    out.table(f"Run {record.run_id}", ["Field", "Value"], [[k, v] for k, v in data.items()], keys=["field", "value"])
    for f in failures:
        out.line(f"FAILED {f['subject']}: {f['error']}", style="red")


@alert_app.command("test")
def alert_test() -> None:
    """Send a test message through the configured notifier (Slack, or the log)."""
    from estore_ops import jobs

    rt = _runtime()
    name = jobs.alert_test(rt)
    _output().line(f"Test alert sent via {name}.")


@alert_app.command("unit-failure")
def alert_unit_failure(unit: Annotated[str, typer.Argument(help="The failed systemd unit (%i of the OnFailure template).")]) -> None:
    """Alert that a systemd unit failed (used by OnFailure=; works even when the job was killed)."""
    from estore_ops import jobs

    rt = _runtime()
    sent = jobs.alert_unit_failure(rt, unit)
    _output().line("Alert sent." if sent else "Alert not sent (deduplicated or no notifier); see the log.")


@app.command()
def doctor(json_out: JsonOpt = False) -> None:
    """Check each configured backend (landing, state, warehouse, dbt profile) and say how to fix failures."""
    from dataclasses import asdict

    from estore_ops.ops.doctor import run_doctor

    rt = _runtime()
    out = _output(json_out)
    checks = run_doctor(rt.settings)
    if json_out:
        out.json([asdict(c) for c in checks])
    else:
        out.table("Doctor", ["Check", "Result", "Detail", "Fix"],
                  [[c.name, "ok" if c.ok else "FAIL", c.detail, "" if c.ok else c.fix] for c in checks])
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise JobFailedError(f"doctor: {', '.join(failed)} failed" if not json_out else "")


# -- deployment ---------------------------------------------------------------------------------


@systemd_app.command("install")
def systemd_install(
    user: Annotated[str, typer.Option(help="Unprivileged user the services run as (created if missing).")] = "estore",
    env_file: Annotated[Path, typer.Option(help="Environment file with the ESTORE_* settings.")] = Path("/etc/estore-ops/estore-ops.env"),
    state_dir: Annotated[Path, typer.Option(help="Writable local folder of the services.")] = Path("/var/lib/estore-ops"),
    work_dir: Annotated[Path, typer.Option(help="Scratch folder (dbt target, downloads).")] = Path("/var/lib/estore-ops/work"),
    credential_file: Annotated[Path, typer.Option(help="Root-only file with the Slack token (LoadCredential=).")] = Path("/etc/estore-ops/credentials/slack_token"),
    unit_dir: Annotated[Path, typer.Option(help="Where unit files go.")] = Path("/etc/systemd/system"),
    verify_calendar: Annotated[str, typer.Option(help="When the weekly `estore-ops verify` runs (systemd OnCalendar=).")] = "Mon *-*-* 03:00:00",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the units and commands; change nothing.")] = False,
    ingest: Annotated[str, typer.Option(help="timer: the 5-minute ingest timer; events: the long-running `watch --events` service. The other is disabled.")] = "timer",
    json_out: JsonOpt = False,
) -> None:
    """Write the units (with this installation's real paths), reload systemd and enable the timers."""
    from estore_ops.deploy import install, render_units

    if ingest not in ("timer", "events"):
        raise ConfigError(f"--ingest must be timer (the 5-minute ingest timer) or events (the watch --events service), got {ingest!r}.")
    out = _output(json_out)
    units = render_units(user=user, env_file=env_file, state_dir=state_dir, work_dir=work_dir, credential_file=credential_file,
                         verify_calendar=verify_calendar)
    result = install(units, unit_dir=unit_dir, dry_run=dry_run, ingest=ingest)
    if json_out:
        out.json({"dry_run": result.dry_run, "files": {str(k): v for k, v in result.files.items()},
                  "commands": [" ".join(c) for c in result.commands], "timers": result.timers,
                  "ingest": result.ingest, "services": result.services,
                  "removed": [str(p) for p in result.removed]})
        return
    if dry_run:
        for path, text in result.files.items():
            out.line(f"# {path}", style="bold")
            out.line(text)
        out.line("# commands that would run:", style="bold")
    for cmd in result.commands:
        out.line(("  " if dry_run else "ran: ") + " ".join(cmd))
    for path in result.removed:
        out.line(("  would remove " if dry_run else "removed ") + f"{path} (installed by an earlier version)")
    if not dry_run:
        out.line(f"Installed {len(result.files)} unit(s); timers enabled: {', '.join(result.timers)}"
                 + (f"; services enabled: {', '.join(result.services)}." if result.services else "."))


@systemd_app.command("status")
def systemd_status(json_out: JsonOpt = False) -> None:
    """The timers' last and next runs and the last result of each service."""
    from dataclasses import asdict

    from estore_ops.deploy import status

    out = _output(json_out)
    rows = status()
    if json_out:
        out.json([asdict(r) | {"ok": r.ok, "running": r.running} for r in rows])
        return
    if not rows:
        out.line("No estore-ops timers installed (run `estore-ops systemd install`).")
        return
    out.table("estore-ops timers", ["Timer", "Last run", "Next run", "Last result", "Exit"], [
        [r.timer, r.last_run or "never", r.next_run or "-", "running" if r.running else (r.last_result or "-"), r.exit_status]
        for r in rows
    ])


@app.command()
def demo() -> None:
    """Run the pipeline on sample data with the embedded default (no cloud account needed)."""
    from estore_ops.demo import run_demo

    rt = _runtime()
    run_demo(rt, _output())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
