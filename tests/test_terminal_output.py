"""Text from files is shown literally on a terminal.

File names, values and error messages reach the terminal through Rich. The commands run here as
real processes under a pseudo-terminal (python's pty module), so Rich draws exactly what a user
sees: square brackets must not be read as markup (a closing tag crashed `cursor show`, a
`[link=...]` emitted a terminal hyperlink, `[bold red]` hid part of a name), and control characters
in names must not reach the terminal (an escape sequence recolours or rewrites the screen).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.helpers import HEADER, Workspace, clean_env, event_lines

NAMES = {
    "markup": "[bold red]hidden.csv",
    "hyperlink": "[link=https://evil.example]click[/link].csv".replace("/", "∕"),  # no '/' in a file name
    "escape": "esc\x1b[31mred.csv",
    "osc": "osc\x1b]8;;https://evil.example\x1b\\x.csv",
    "emoji": ":warning:.csv",
}


def run_in_pty(ws: Workspace, *args: str, columns: int = 250) -> tuple[int, bytes]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; return its exit code and every byte it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = clean_env(TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "estore_ops", *args], cwd=ws.root, env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the child closed its end
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        code = proc.wait(timeout=120)
    return code, out


def _workspace(ws: Workspace) -> None:
    for i, name in enumerate(NAMES.values()):
        ws.add(name, event_lines(2, start=i * 10))
    ws.add("bad [/red] price.csv", [event_lines(1)[0].replace(",10.5,", ",[/red],")])  # a value that is a closing tag


def _check(out: bytes) -> str:
    text = out.decode("utf-8", "replace")
    assert "Traceback" not in text and "error: unexpected" not in text, text
    assert b"\x1b]8;" not in out, "a terminal hyperlink was emitted"
    assert b"\x1b[31mred.csv" not in out and b"\x1b]8;;https://evil" not in out, "a control sequence from a file name reached the terminal"
    return text


def test_names_and_values_are_shown_literally_under_a_terminal(ws: Workspace) -> None:
    _workspace(ws)
    code, out = run_in_pty(ws, "scan")
    text = _check(out)
    assert code == 0
    assert NAMES["markup"] in text and NAMES["hyperlink"] in text and NAMES["emoji"] in text
    assert "esc\\x1b[31mred.csv" in text  # the escape shown as text

    code, out = run_in_pty(ws, "load")
    text = _check(out)
    assert code == 1  # the bad price fails alone
    assert 'Could not convert string "[/red]"' in text and NAMES["markup"] in text

    code, out = run_in_pty(ws, "cursor", "show")
    text = _check(out)
    assert code == 0, text
    assert '"[/red]"' in text and "bad [/red] price.csv" in text
    code, out = run_in_pty(ws, "runs")
    assert code == 0, _check(out)
    run_id = json.loads((ws.state / "runs.json").read_text())[0]["run_id"]
    code, out = run_in_pty(ws, "runs", "show", run_id)
    assert code == 0 and "[/red]" in _check(out)


def test_errors_and_key_value_lines_escape_control_characters(ws: Workspace) -> None:
    _workspace(ws)
    result = ws.run("load")  # not a terminal: key=value lines
    assert result.returncode == 1
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    assert 'file="esc\\u001b[31mred.csv"' in result.stdout
    missing = ws.run("load", "--file", "nope\x1b[2J.csv")
    assert missing.returncode == 2 and "\x1b" not in missing.stderr and "nope\\x1b[2J.csv" in missing.stderr


def test_key_value_output_quotes_tabs(ws: Workspace) -> None:
    ws.add("tab\there.csv", event_lines(1))
    out = ws.run("scan").stdout
    assert 'file="tab\\there.csv"' in out, out


def test_a_bad_header_line_with_markup_is_shown_literally(ws: Workspace, tmp_path: Path) -> None:
    ws.add("h.csv", event_lines(1), header=HEADER.replace("brand", "[/blink]brand"))  # a closing tag crashed Rich
    code, out = run_in_pty(ws, "load")
    text = _check(out)
    failed = [line for line in text.splitlines() if "FAILED h.csv" in line]
    assert code == 1 and failed and "unexpected column(s) [/blink]brand" in failed[0], text
