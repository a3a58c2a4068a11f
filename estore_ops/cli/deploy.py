"""Deployment commands: systemd install/status, upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from estore_ops.cli.app import JsonOpt, fail_unless, group, options

systemd_app = group("Install and inspect the systemd timers that drive the pipeline on a VM.")


@systemd_app.command("install")
def systemd_install(
    ctx: typer.Context,
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
    from estore_ops import jobs
    from estore_ops.cli.render import render_install

    result = jobs.systemd_install(user=user, env_file=env_file, state_dir=state_dir, work_dir=work_dir,
                                  credential_file=credential_file, unit_dir=unit_dir, verify_calendar=verify_calendar,
                                  dry_run=dry_run, ingest=ingest)
    render_install(options(ctx).output(json_out), result)


@systemd_app.command("status")
def systemd_status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """The timers' last and next runs and the last result of each service."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_timers

    render_timers(options(ctx).output(json_out), jobs.systemd_status())


def upgrade(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what the upgrade would do; change nothing.")] = False,
    allow_rewrite: Annotated[bool, typer.Option("--allow-rewrite", help="Also make the changes that rewrite the raw events table (BigQuery; the dry run says how much it reads).")] = False,
    unit_dir: Annotated[Path, typer.Option(help="Where the systemd units are installed.")] = Path("/etc/systemd/system"),
    json_out: JsonOpt = False,
) -> None:
    """Bring a deployment made by an earlier version up to this one: what it found, did, and what is left to you."""
    from estore_ops import jobs
    from estore_ops.cli.render import render_upgrade

    cli = options(ctx)
    result = jobs.upgrade(cli.runtime(), dry_run=dry_run, allow_rewrite=allow_rewrite, unit_dir=unit_dir)
    render_upgrade(cli.output(json_out), result)
    fail_unless(result.ok or dry_run)
