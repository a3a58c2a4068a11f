"""Operating commands: config, health, runs, lock, alert, doctor, demo."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from estore_ops.cli.app import JsonOpt, YesOpt, confirm, fail_unless, group, options

runs_app = group("Recent runs: what ran, when, and what happened.", no_args_is_help=False, invoke_without_command=True)
lock_app = group("Inspect or break the run lock.")
alert_app = group("Send alerts: a test message, or a systemd unit failure.")


def config_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Show every effective setting and where it came from (secrets masked)."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_config

    cli = options(ctx)
    render_config(cli.output(json_out), jobs.config(cli.runtime()))


def health(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Check heartbeat ages (ingest, transform, snapshot); exit 5 when any is stale, alerting once per episode."""
    from estore_ops import jobs
    from estore_ops.cli.render import health_failure, render_health
    from estore_ops.errors import UnhealthyError

    cli = options(ctx)
    result = jobs.health_check(cli.runtime())
    render_health(cli.output(json_out), result)
    if result.stale or result.failing:
        raise UnhealthyError("" if json_out else health_failure(result))


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
    from estore_ops.cli.render import render_runs

    cli = options(ctx)
    render_runs(cli.output(json_out), jobs.runs(cli.runtime(), job, status, limit))


@runs_app.command("show")
def runs_show(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")], json_out: JsonOpt = False,
) -> None:
    """Everything recorded about one run."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_run

    cli = options(ctx)
    render_run(cli.output(json_out), jobs.run_detail(cli.runtime(), run_id))


@lock_app.command("show")
def lock_show(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Who holds the run lock, if anyone."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_lock

    cli = options(ctx)
    render_lock(cli.output(json_out), jobs.lock_show(cli.runtime()))


@lock_app.command("break")
def lock_break(ctx: typer.Context, yes: YesOpt = False, json_out: JsonOpt = False) -> None:
    """Delete the run lock. Only when its holder is certainly gone (check `lock show`)."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_lock_break

    cli = options(ctx)
    result = jobs.lock_break(cli.runtime(), lambda holder: confirm(f"Break the lock held by {holder.describe()}?", yes))
    render_lock_break(cli.output(json_out), result)


@alert_app.command("test")
def alert_test(ctx: typer.Context) -> None:
    """Send a test message through the configured notifier (Slack, or the log)."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_alert_test

    cli = options(ctx)
    render_alert_test(cli.output(), jobs.alert_test(cli.runtime()))


@alert_app.command("unit-failure")
def alert_unit_failure(
    ctx: typer.Context, unit: Annotated[str, typer.Argument(help="The failed systemd unit (%i of the OnFailure template).")],
) -> None:
    """Alert that a systemd unit failed (used by OnFailure=; works even when the job was killed)."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_unit_failure

    cli = options(ctx)
    render_unit_failure(cli.output(), jobs.alert_unit_failure(cli.runtime(), unit))


def doctor(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Check each configured backend (landing, state, warehouse, dbt profile) and say how to fix failures."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_doctor

    cli = options(ctx)
    result = jobs.doctor(cli.runtime())
    render_doctor(cli.output(json_out), result)
    fail_unless(not result.failed, "" if json_out else f"doctor: {', '.join(result.failed)} failed")


def demo(ctx: typer.Context) -> None:
    """Run the pipeline on sample data with the embedded default (no cloud account needed)."""
    from estore_ops.cli.demo import run_demo

    cli = options(ctx)
    run_demo(cli.runtime(), cli.output())
