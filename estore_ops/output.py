"""Rendering: Rich tables on a terminal, plain `key=value` lines under systemd, JSON on request."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime
from pathlib import Path
from typing import Any

from estore_ops.redact import redact


# Characters that must never reach a terminal or a log line as they are: C0 and C1 controls (an
# escape sequence can recolour, move the cursor or open a hyperlink), DEL, bidirectional overrides
# (text that reads one way and is another), and lone surrogates (bytes of a file name that are not
# UTF-8, which would also crash the write). Each is shown as a visible escape instead.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_OR_NEWLINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code == 0x0A:
        return "\\n"
    if code == 0x09:
        return "\\t"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, keep_newlines: bool = True) -> str:
    """`text` with every control character (and tabs and newlines unless kept) shown as an escape."""
    return (_UNSAFE if keep_newlines else _UNSAFE_OR_NEWLINE).sub(_visible, text)


def finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None (JSON has no such numbers; people read 'nan')."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


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
        # Data is never read as markup or emoji codes: a file named "[red]x.csv" or ":x:.csv" shows as is.
        from rich.console import Console

        return Console(highlight=False, soft_wrap=not self.terminal, markup=False, emoji=False)

    def json(self, payload: Any) -> None:
        try:
            text = json.dumps(payload, indent=2, default=_default, sort_keys=False, allow_nan=False)
        except ValueError:  # NaN or infinity somewhere: JSON has no such numbers
            text = json.dumps(finite(payload), indent=2, default=_default, sort_keys=False)
        sys.stdout.write(redact(text) + "\n")
        sys.stdout.flush()

    def line(self, text: str, style: str | None = None) -> None:
        if self.json_mode:
            return
        shown = printable(redact(text))
        if self.terminal:
            from rich.text import Text

            self.console.print(Text(shown, style=style or ""))
        else:
            sys.stdout.write(shown + "\n")

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
            from rich.text import Text

            table = Table(title=Text(printable(redact(title))), title_justify="left", header_style="bold")
            for col in columns:
                table.add_column(col, overflow="fold")
            for row in rows:
                table.add_row(*[Text(printable(redact("" if v is None else str(v)))) for v in row])
            self.console.print(table)
            return
        keys = keys or [c.lower().replace(" ", "_") for c in columns]
        for row in rows:
            parts = [f"{k}={_quote(redact('' if v is None else str(v)))}" for k, v in zip(keys, row, strict=False)]
            sys.stdout.write(" ".join(parts) + "\n")
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
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True, markup=False, emoji=False, highlight=False), transient=True,
        ) as bar:
            task = bar.add_task(printable(description, keep_newlines=False), total=total)

            def advance(description: str | None = None) -> None:
                shown = printable(redact(description), keep_newlines=False) if description else bar.tasks[0].description
                bar.update(task, advance=1, description=shown)

            yield advance


def _quote(value: Any) -> str:
    """A `key=value` value: bare when that is unambiguous, else a JSON string (any space, tab, quote,
    '=' or control character), with nothing left that a terminal would interpret."""
    text = "" if value is None else str(value)
    if text == "" or any(ch in ' "=\\' or ch.isspace() or not ch.isprintable() for ch in text):
        return printable(json.dumps(text, ensure_ascii=False))
    return text


def human_size(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(num) < 1024 or unit == "TB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} TB"
