"""The CLI stays a thin layer: each command parses, calls ONE function of estore_ops.jobs, renders.

Logic that creeps into a command cannot be used from Python and is tested only through the CLI;
these checks keep it in the library (issue 17)."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path
from typing import Any

import typer.main

from estore_ops import jobs
from estore_ops.cli import app

CLI_DIR = Path(__file__).resolve().parent.parent / "estore_ops" / "cli"
NARRATED = {"demo"}  # walks through several jobs on purpose (cli/demo.py), rendering each step
MAX_STATEMENTS = 8  # besides the docstring and the lazy imports


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    if group.callback is not None and getattr(group, "invoke_without_command", False):
        out.append((prefix.strip(), group.callback))  # `runs` lists runs itself
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out.extend(_commands(cmd, f"{prefix}{name} "))
        else:
            out.append((f"{prefix}{name}", cmd.callback))
    return out


def _body(callback: Any) -> ast.FunctionDef:
    func = inspect.unwrap(callback)
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


def _jobs_calls(node: ast.AST) -> list[str]:
    return [
        n.func.attr for n in ast.walk(node)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name) and n.func.value.id == "jobs"
    ]


COMMANDS = _commands(typer.main.get_command(app))  # type: ignore[arg-type]  # typer's Typer is accepted; its stub says click.Command


def test_the_commands_are_found() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"scan", "load", "cursor show", "runs", "runs show", "lock break", "systemd install", "watch"} <= names


def test_every_command_calls_one_function_of_the_library() -> None:
    wrong = {}
    for name, callback in COMMANDS:
        if name in NARRATED:
            continue
        calls = _jobs_calls(_body(callback))
        if len(calls) != 1 and not (name == "report" and sorted(calls) == ["report", "report_html"]):
            wrong[name] = calls
        for called in calls:
            assert callable(getattr(jobs, called, None)), f"{name}: jobs.{called} does not exist"
    assert wrong == {}, "each command calls exactly one jobs function (report: one per output form)"


def test_every_command_is_a_few_lines() -> None:
    long = {}
    for name, callback in COMMANDS:
        body = _body(callback).body
        statements = [
            s for s in body
            if not isinstance(s, (ast.Import, ast.ImportFrom))
            and not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))  # the docstring
        ]
        if len(statements) > MAX_STATEMENTS:
            long[name] = len(statements)
    assert long == {}


def test_the_cli_keeps_no_module_state() -> None:
    """Global options live in Typer's context object: nothing leaks from one invocation to the next."""
    for path in CLI_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], f"{path.name} uses `global`"


def test_every_result_a_command_renders_knows_its_json() -> None:
    """A command's --json is its result's as_dict() (as_list() where the JSON is a list)."""
    from estore_ops.cli import render

    for name, func in inspect.getmembers(render, inspect.isfunction):
        if not name.startswith("render_") or func.__module__ != render.__name__:
            continue
        source = inspect.getsource(func)
        if "out.json(" in source:
            assert ".as_dict()" in source or ".as_list()" in source, name
