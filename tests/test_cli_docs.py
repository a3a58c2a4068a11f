"""Every command has help text and appears in the README; exit codes are documented in both places."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main

from estore_ops.cli import app
from estore_ops.errors import ExitCode

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")  # typer vendors its own click: duck-type the group


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        out.append((full, cmd))
        if _is_group(cmd):
            out.extend(_commands(cmd, full + " "))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_there_are_commands() -> None:
    assert {"scan", "load", "transform", "snapshot", "cursor show", "cursor reset", "watch"} <= {n for n, _ in COMMANDS}


def test_every_command_has_help_text() -> None:
    missing = [name for name, cmd in COMMANDS if not (cmd.help or "").strip()]
    assert missing == []


def test_every_command_appears_in_the_readme() -> None:
    missing = [name for name, cmd in COMMANDS if not _is_group(cmd) and f"estore-ops {name}" not in README]
    assert missing == []


def test_every_exit_code_is_documented() -> None:
    help_text = typer.main.get_command(app).help or ""
    for code in ExitCode:
        assert f"| {int(code)} |" in README, code
        assert f"{int(code)} " in help_text, code


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:6])
    assert "make demo" in head and "make test" in head
