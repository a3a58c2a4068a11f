"""Run a command as a fresh process and measure its wall time and peak memory.

Peak memory is the process's own max RSS from `os.wait4` rusage, read by a tiny launcher process
(see `_LAUNCHER`) so that the harness's own memory can never show up in the number.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ESTORE = VENV_BIN / "estore-ops"
PYTHON = Path(sys.executable)


class CommandFailed(RuntimeError):
    pass


@dataclass
class Run:
    wall_s: float
    rss_mb: float
    returncode: int
    output: str = ""  # the last 64 KiB of stdout+stderr (of stderr alone with run_once(stdout_apart=True))
    log: Path | None = None
    stdout: str = ""  # the whole stdout, with run_once(stdout_apart=True): a `--json` document to parse


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a measured process: no ESTORE_*/Slack settings leak in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESTORE_", "SLACK_", "STORAGE_EMULATOR"))}
    env.update({"DO_NOT_TRACK": "1", "PYTHONDONTWRITEBYTECODE": "0", "TZ": "UTC"})
    env.update(extra or {})
    return env


# A tiny launcher (`python -S -I -c`, ~10 MB) between the harness and each measured process:
# Linux folds the RSS high-water mark of the process that spawns a child into that child's
# ru_maxrss (vfork/fork + exec), so a child started by the harness directly could never report
# less than the harness's own peak. The launcher spawns the command, times it and reads its
# rusage with os.wait4, and writes "wall maxrss_kb exitcode" to a result file. stdout goes to the
# log with stderr, or to a file of its own when one is named (a `--json` document, kept whole).
_LAUNCHER = r"""
import os, sys, time
res, log, out, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
ofd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if out else fd
nul = os.open(os.devnull, os.O_RDONLY)
os.chdir(cwd)
acts = [(os.POSIX_SPAWN_DUP2, nul, 0), (os.POSIX_SPAWN_DUP2, ofd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
t = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=acts)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t
with open(res, "w") as f:
    f.write("%r %d %d" % (wall, ru.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""
_TAIL = 64 * 1024


def run_once(argv: list[str], cwd: Path, env: dict[str, str] | None = None, log: Path | None = None,
             check: bool = True, stdout_apart: bool = False) -> Run:
    """Run argv as a fresh process; wall time (s) and max RSS (MiB) of exactly that process.
    `stdout_apart`: keep stdout out of the log and return it whole in `Run.stdout`."""
    cwd.mkdir(parents=True, exist_ok=True)
    log = log or (cwd / ".bench-last.log")
    out = cwd / ".bench-last.stdout" if stdout_apart else None
    res = cwd / ".bench-last.result"
    res.unlink(missing_ok=True)
    launcher = subprocess.run([str(PYTHON), "-S", "-I", "-c", _LAUNCHER, str(res), str(log), str(out or ""), str(cwd),
                               *map(str, argv)],
                              env=env or child_env(), stdin=subprocess.DEVNULL)
    if launcher.returncode != 0 or not res.exists():
        raise CommandFailed(f"{' '.join(map(str, argv))}: the launcher exited {launcher.returncode}")
    wall, rss_kb, code = res.read_text().split()
    text = tail(log)
    stdout = out.read_text(errors="replace") if out else ""
    if check and int(code) != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))} exited {code} in {cwd}:\n{(stdout[-2000:] + text)[-4000:]}")
    return Run(float(wall), int(rss_kb) / 1024.0, int(code), text, log, stdout)


def tail(path: Path, size: int = _TAIL) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - size))
        return fh.read().decode(errors="replace")


def count_lines(path: Path, prefix: bytes) -> int:
    """Lines starting with prefix, streamed (a 100k-line output never sits in the harness's memory)."""
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            n += line.startswith(prefix)
    return n


def estore(*args: str) -> list[str]:
    return [str(ESTORE), *args]


def python(*args: str) -> list[str]:
    return [str(PYTHON), *args]


def helper(*args: str) -> list[str]:
    """`python -m bench.helpers ...`: work the harness must not do in its own (small) process."""
    return [str(PYTHON), "-m", "bench.helpers", *args]


def helper_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = child_env(extra)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class Series:
    """Repeated measurements of one command."""

    name: str
    role: str  # subject | baseline | variant (the subject with another setting) | info
    runs: list[Run] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def rss(self) -> float:
        return statistics.median(r.rss_mb for r in self.runs)

    @property
    def rss_max(self) -> float:
        return max(r.rss_mb for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "repeats": len(self.runs),
            "wall_s": round(self.wall, 4),
            "wall_all_s": [round(r.wall_s, 4) for r in self.runs],
            "rss_mb": round(self.rss, 1),
            "rss_all_mb": [round(r.rss_mb, 1) for r in self.runs],
            **({"extra": self.extra} if self.extra else {}),
        }


def measure(name: str, role: str, repeats: int, argv: list[str], cwd: Path, env: dict[str, str] | None = None,
            before: Any = None, after: Any = None, check: bool = True) -> Series:
    """Run argv `repeats` times; `before()` resets the inputs before each run (not timed)."""
    series = Series(name, role)
    for _ in range(repeats):
        if before:
            before()
        series.runs.append(run_once(argv, cwd, env, check=check))
        if after:
            after(series.runs[-1])
    return series


def interleaved(repeats: int, *jobs: tuple[Series, Any]) -> None:
    """Alternate subject and baseline runs so drift (page cache, thermal, neighbours) hits both."""
    for _ in range(repeats):
        for series, run in jobs:
            series.runs.append(run())


def self_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
