"""Analytics commands: transform, snapshot (dbt), report, verify."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from estore_ops.cli.app import JsonOpt, fail_unless, options

_WHEN = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]


def transform(
    ctx: typer.Context,
    select: Annotated[Optional[list[str]], typer.Option("--select", "-s", help="dbt selection (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="dbt exclusion (repeatable).")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Rebuild incremental models from scratch.")] = False,
    no_test: Annotated[bool, typer.Option("--no-test", help="Build models without running their tests.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Build the dbt models (staging, facts, dimensions, RFM, churn) and run their tests."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_dbt

    cli = options(ctx)
    result = jobs.transform(cli.runtime(), select or (), exclude or (), full_refresh, no_test)
    render_dbt(cli.output(json_out), result)
    fail_unless(result.ok)


def snapshot(
    ctx: typer.Context,
    select: Annotated[Optional[list[str]], typer.Option("--select", "-s", help="Only these snapshots.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the dbt SCD2 snapshots (snap_user_rfm, snap_user_status)."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_dbt

    cli = options(ctx)
    result = jobs.snapshot(cli.runtime(), select or ())
    render_dbt(cli.output(json_out), result)
    fail_unless(result.ok)


def report(
    ctx: typer.Context,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML page (charts, tables, load freshness) to this path.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Headline results from the marts: RFM segments, conversion funnel, churn by cohort (or an HTML page with --html)."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_headline, render_html_report

    cli = options(ctx)
    rt = cli.runtime()
    if html is None:
        render_headline(cli.output(json_out), jobs.report(rt))
    else:
        render_html_report(cli.output(json_out), jobs.report_html(rt, html))


def verify(
    ctx: typer.Context,
    deep: Annotated[bool, typer.Option("--deep", help="Recount the rows of every landing file (DuckDB's reader; on GCP a BigQuery external table over gs://).")] = False,
    since: Annotated[Optional[datetime], typer.Option(formats=_WHEN, help="Only events at or after this UTC date/time (BigQuery prunes partitions).")] = None,
    until: Annotated[Optional[datetime], typer.Option(formats=_WHEN, help="Only events before this UTC date/time.")] = None,
    prefix: Annotated[str, typer.Option(help="Only files under this prefix.")] = "",
    fail_on_gone: Annotated[bool, typer.Option("--fail-on-gone", help="A loaded file missing from the landing area is a failure (default: reported only).")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="List every file, not only those that need a look.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check that the warehouse holds exactly what landed: rows per file version vs the state and the files. Exit 1 on a mismatch."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_verify, verify_failure

    cli = options(ctx)
    rt = cli.runtime()
    result = jobs.verify(rt, deep=deep, since=since, until=until, fail_on_gone=fail_on_gone, prefix=prefix)
    render_verify(cli.output(json_out), result, show_all)
    fail_unless(result.ok, "" if json_out else verify_failure(result))
