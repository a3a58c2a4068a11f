"""The `estore-ops` command line: each command parses, calls one function of estore_ops.jobs, renders its result.

- app.py: the Typer app, the global options (Typer's context object) and the one place where errors
  become exit codes;
- ingest.py, analytics.py, ops.py, deploy.py: the commands, by group;
- render.py: one renderer per result type (plain `key=value` lines, Rich, JSON from the same object);
- demo.py: the narrated `demo`.

The table below is the command reference in the order `estore-ops --help` lists it. The command
modules import the library lazily, so `estore-ops --help` loads Typer and nothing else.
"""

from __future__ import annotations

from estore_ops.cli import analytics, deploy, ingest, ops
from estore_ops.cli.app import app

app.command("config")(ops.config_cmd)
app.command()(ingest.scan)
app.command()(ingest.load)
app.command()(ingest.generate)
app.command()(analytics.transform)
app.command()(analytics.snapshot)
app.command()(analytics.report)
app.command()(analytics.verify)
app.command()(deploy.upgrade)
app.command()(ingest.watch)
app.command()(ops.health)
app.command()(ops.doctor)
app.command()(ops.demo)
app.add_typer(ingest.cursor_app, name="cursor")
app.add_typer(ops.lock_app, name="lock")
app.add_typer(ops.runs_app, name="runs")
app.add_typer(ops.alert_app, name="alert")
app.add_typer(deploy.systemd_app, name="systemd")


def main() -> None:
    app()


__all__ = ["app", "main"]
