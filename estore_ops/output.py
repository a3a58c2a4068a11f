"""Rendering: Rich tables on a terminal, plain `key=value` lines under systemd, JSON on request."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime
from pathlib import Path
from typing import Any

from estore_ops.redact import redact


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


@dataclass
class Output:
    json_mode: bool = False
    quiet: bool = False
    terminal: bool = field(default_factory=stdout_is_terminal)

    @cached_property
    def console(self) -> Any:
        # Rich is imported only when something is drawn on a terminal: systemd runs never pay for it.
        from rich.console import Console

        return Console(highlight=False, soft_wrap=not self.terminal)

    def json(self, payload: Any) -> None:
        text = json.dumps(payload, indent=2, default=_default, sort_keys=False)
        sys.stdout.write(redact(text) + "\n")
        sys.stdout.flush()

    def line(self, text: str, style: str | None = None) -> None:
        if self.json_mode:
            return
        if self.terminal:
            self.console.print(redact(text), style=style)
        else:
            sys.stdout.write(redact(text) + "\n")

    def num(self, value: int | None) -> str:
        """Thousands separators for people, raw digits for machines."""
        if value is None:
            return ""
        return f"{value:,}" if self.terminal else str(value)

    def size(self, value: int) -> str:
        return human_size(value) if self.terminal else str(value)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], keys: Sequence[str] | None = None) -> None:
        """A Rich table on a terminal; one `key=value` line per row otherwise (journald-friendly)."""
        if self.json_mode:
            return
        if self.terminal:
            from rich.table import Table

            table = Table(title=title, title_justify="left", header_style="bold")
            for col in columns:
                table.add_column(col, overflow="fold")
            for row in rows:
                table.add_row(*[redact("" if v is None else str(v)) for v in row])
            self.console.print(table)
            return
        keys = keys or [c.lower().replace(" ", "_") for c in columns]
        for row in rows:
            parts = [f"{k}={_quote(v)}" for k, v in zip(keys, row, strict=False)]
            sys.stdout.write(redact(" ".join(parts)) + "\n")
        sys.stdout.flush()

    @contextmanager
    def progress(self, total: int, description: str) -> Iterator[Any]:
        """A progress bar on a terminal (unless --quiet or --json); a no-op advance otherwise."""
        if not self.terminal or self.quiet or self.json_mode or total == 0:
            yield lambda *_a, **_k: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda description=None: bar.update(task, advance=1, description=description or bar.tasks[0].description)


def _quote(value: Any) -> str:
    text = "" if value is None else str(value)
    if text == "" or any(ch in text for ch in ' "=\n'):
        return json.dumps(text)
    return text


def human_size(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(num) < 1024 or unit == "TB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} TB"
