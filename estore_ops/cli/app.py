"""The Typer app: global options into the context object, and the one place where errors become exit codes.

Library errors (EstoreError) become one clear line on stderr and the documented exit code in
EstoreGroup.invoke; everything else a command does is parse, call one function of estore_ops.jobs,
render its result (estore_ops.cli.render).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from estore_ops.errors import EXIT_CODE_HELP, ConfigError, EstoreError, ExitCode, JobFailedError

if TYPE_CHECKING:
    from estore_ops.output import Output
    from estore_ops.runtime import Runtime


# The base of click's errors (BadParameter, UsageError, ...) as this typer uses it (typer 0.28 ships
# its own copy of click): they must reach click's handler, which prints them and exits 2.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


@dataclass
class CliContext:
    """The global options of one invocation (Typer's `ctx.obj`), shared by every command."""

    flags: dict[str, Any] = field(default_factory=dict)  # landing, warehouse, state, log_format (None: not given)
    config_file: str | None = None
    verbose: bool = False
    debug: bool = False

    def runtime(self) -> Runtime:
        from estore_ops import jobs

        return jobs.open_runtime(self.flags, self.config_file, self.verbose)

    def output(self, json_mode: bool = False, quiet: bool = False) -> Output:
        from estore_ops.output import Output

        return Output(json_mode=json_mode, quiet=quiet)


def options(ctx: typer.Context) -> CliContext:
    """The invocation's CliContext (set by the app callback; defaults when a command runs on its own)."""
    return ctx.find_object(CliContext) or CliContext()


class EstoreGroup(TyperGroup):
    """Turns library errors into one clear line on stderr and the documented exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except EstoreError as exc:
            _show_traceback(ctx)
            if not isinstance(exc, JobFailedError) or str(exc):
                typer.echo(redacted(f"error: {exc}"), err=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, _CLICK_ERROR):
            raise  # click's own: a usage error (a bad option value) exits 2 with click's message
        except OSError as exc:
            # A file or folder the process cannot use (permissions, disk full): one clear line.
            from estore_ops.backends.environment import from_os_error

            _show_traceback(ctx)
            fault = from_os_error(exc, "the path")
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            text = str(fault) if fault else f"{where}{exc.strerror or exc}. Check the path's owner and permissions."
            typer.echo(redacted(f"error: {text}"), err=True)
            raise typer.Exit(int(ExitCode.BACKEND)) from None
        except Exception as exc:
            _show_traceback(ctx)
            typer.echo(redacted(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"), err=True)
            raise typer.Exit(int(ExitCode.FAILED)) from None


def redacted(text: str) -> str:
    """Secrets masked and control characters shown as escapes: error text carries file names and values."""
    from estore_ops.output import printable
    from estore_ops.redact import redact

    return printable(redact(text))


def _show_traceback(ctx: Any) -> None:
    """With --debug: the traceback, with secrets masked like every other output."""
    found = ctx.find_object(CliContext)
    if found is not None and found.debug:
        import traceback

        typer.echo(redacted(traceback.format_exc()), err=True)


def group(help_text: str, **options: Any) -> typer.Typer:
    """A Typer app (the main one or a command group) whose errors go through EstoreGroup."""
    settings: dict[str, Any] = {"no_args_is_help": True} | options
    return typer.Typer(cls=EstoreGroup, help=help_text, add_completion=False, pretty_exceptions_show_locals=False,
                       rich_markup_mode=None, **settings)


app = group(
    "Operate the e-commerce events pipeline: scan the landing bucket, load new files into the "
    "warehouse exactly once, run the dbt models and snapshots.\n\n" + EXIT_CODE_HELP
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


@app.callback()
def _global_options(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", help="Settings file (default: ./estore-ops.toml).")] = None,
    landing: Annotated[Optional[str], typer.Option(help="Landing area: folder, file:///path or gs://bucket/prefix.")] = None,
    warehouse: Annotated[Optional[str], typer.Option(help="Warehouse: duckdb:///path.duckdb or bigquery://project/dataset.")] = None,
    state: Annotated[Optional[str], typer.Option(help="State location: folder or gs://bucket/prefix.")] = None,
    log_format: Annotated[Optional[str], typer.Option(help="auto, text or json.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors.")] = False,
) -> None:
    ctx.obj = CliContext(
        flags={"landing": landing, "warehouse": warehouse, "state": state, "log_format": log_format},
        config_file=str(config) if config else None, verbose=verbose, debug=debug,
    )


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step (default No); never without a terminal: --yes says it instead."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} Refusing to ask without a terminal: pass --yes to confirm.")
    if not typer.confirm(question, default=False):
        raise typer.Exit(int(ExitCode.OK))


def fail_unless(ok: bool, message: str = "") -> None:
    """A job that did not succeed exits 1; its result was already shown (`message`: one more line on stderr)."""
    if not ok:
        raise JobFailedError(message)
