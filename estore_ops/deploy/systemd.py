"""systemd units for estore-ops: render them from the templates, install them, report the timers.

The templates live in the repository's `systemd/` folder (`*.service.in`, `*.timer.in`, plus
`service-common.conf.in`, the part every service shares). A wheel carries them as
`estore_ops/deploy/units/` (pyproject force-include), which is where an installed copy looks first.

Placeholders: @EXE@ @USER@ @ENV_FILE@ @STATE_DIR@ @WORK_DIR@ @CREDENTIAL@ @SERVICE_COMMON@ @VERIFY_CALENDAR@.
No secret ever goes into a unit: the Slack token reaches the job through LoadCredential=, which
systemd reads as root at start and exposes to the job as $CREDENTIALS_DIRECTORY/slack_token.

Every external command goes through `run` (subprocess.run by default) so tests can fake it.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from estore_ops.errors import EstoreError

DEFAULT_USER = "estore"
DEFAULT_ENV_FILE = Path("/etc/estore-ops/estore-ops.env")
DEFAULT_CREDENTIAL_FILE = Path("/etc/estore-ops/credentials/slack_token")
DEFAULT_STATE_DIR = Path("/var/lib/estore-ops")
DEFAULT_WORK_DIR = Path("/var/lib/estore-ops/work")
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_VERIFY_CALENDAR = "Mon *-*-* 03:00:00"  # weekly `estore-ops verify` (OnCalendar= syntax)
UNIT_PREFIX = "estore-ops-"
CREDENTIAL_NAME = "slack_token"
COMMON_FRAGMENT = "service-common.conf.in"
# The two ingest modes: the 5-minute oneshot timer, or the long-running event loop.
INGEST_TIMER = f"{UNIT_PREFIX}ingest.timer"
WATCH_SERVICE = f"{UNIT_PREFIX}watch.service"
INGEST_MODES = ("timer", "events")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]

_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Characters that would need quoting or specifier escaping somewhere in a unit file. Paths on the VM
# never need them, so they are refused instead of escaped.
_UNSAFE_PATH_RE = re.compile(r"[\s\"'\\%$;`]|[\x00-\x1f\x7f]")
_PLACEHOLDER_RE = re.compile(r"@[A-Z_]+@")
# An OnCalendar= expression: weekdays, dates, times, ranges, lists, repetitions, a time zone name.
_CALENDAR_RE = re.compile(r"^[A-Za-z0-9 ,.*:/~+_-]{1,100}$")


class DeployError(EstoreError):
    """Rendering or installing the systemd units failed; the message says which step and why."""


# --------------------------------------------------------------------------------------------------
# render


def template_dir() -> Path:
    """The folder holding the unit templates: packaged copy first, then the source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "units", here.parents[1] / "systemd"):
        if (candidate / COMMON_FRAGMENT).is_file():
            return candidate
    raise DeployError(
        f"The systemd unit templates are missing (looked in {here / 'units'} and {here.parents[1] / 'systemd'}): "
        "reinstall estore-ops from a wheel built with the systemd/ folder."
    )


def default_exe() -> Path:
    """The real path of the estore-ops console script that is running (or installed) now.

    Order: the script this process was started as (sys.argv[0]), the one in this interpreter's
    virtual environment, then the first `estore-ops` on PATH.
    """
    candidates: list[Path] = []
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "estore-ops":
        candidates.append(argv0)
    candidates.append(Path(sys.prefix) / "bin" / "estore-ops")
    found = shutil.which("estore-ops")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
    raise DeployError("Cannot find the estore-ops executable: pass its absolute path with --exe.")


def _check_path(what: str, path: Path) -> str:
    text = str(path)
    if not path.is_absolute():
        raise DeployError(f"{what} must be an absolute path, got {text!r}.")
    if _UNSAFE_PATH_RE.search(text):
        raise DeployError(f"{what} {text!r} contains whitespace, quotes, '%', '$' or control characters: choose a plain path.")
    return text


# Folders the services get write access to (ReadWritePaths=) must be their own: "/" or a system
# tree would undo the sandbox (ProtectSystem=strict) for everything in it.
_SYSTEM_TREES = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/log", "/var/tmp",
})


def _check_writable_dir(what: str, path: Path) -> str:
    text = _check_path(what, path)
    normal = os.path.normpath(text)
    if normal in _SYSTEM_TREES:
        raise DeployError(
            f"{what} {text!r} is {'the root folder' if normal == '/' else 'a system folder'}: the services would get "
            f"write access to all of it (ReadWritePaths={normal}). Give them a folder of their own, e.g. "
            f"{DEFAULT_STATE_DIR}."
        )
    return text


def render_units(
    *,
    exe: Path | None = None,
    user: str = DEFAULT_USER,
    env_file: Path = DEFAULT_ENV_FILE,
    state_dir: Path = DEFAULT_STATE_DIR,
    work_dir: Path = DEFAULT_WORK_DIR,
    credential_file: Path | None = DEFAULT_CREDENTIAL_FILE,
    templates: Path | None = None,
    verify_calendar: str = DEFAULT_VERIFY_CALENDAR,
) -> dict[str, str]:
    """Render every unit: {unit file name: content}, e.g. 'estore-ops-ingest.timer' -> '[Unit]...'.

    `exe` defaults to default_exe(). `credential_file=None` leaves LoadCredential= out (alerts then
    need the token some other way). Nothing is read from the environment: secrets cannot leak in.
    """
    if not _USER_RE.match(user):
        raise DeployError(f"User name {user!r} is not a valid system user name (lower case letters, digits, '-', '_').")
    if user == "root":
        raise DeployError("The jobs must not run as root: choose an unprivileged user such as 'estore'.")
    if not _CALENDAR_RE.match(verify_calendar):
        raise DeployError(f"The verify schedule {verify_calendar!r} is not an OnCalendar= expression such as "
                          f"{DEFAULT_VERIFY_CALENDAR!r} (check one with `systemd-analyze calendar`).")
    values = {
        "@EXE@": _check_path("The executable", exe if exe is not None else default_exe()),
        "@USER@": user,
        "@ENV_FILE@": _check_path("The environment file", env_file),
        "@STATE_DIR@": _check_writable_dir("The state directory", state_dir),
        "@WORK_DIR@": _check_writable_dir("The work directory", work_dir),
        "@CREDENTIAL@": (
            f"LoadCredential={CREDENTIAL_NAME}:{_check_path('The credential file', credential_file)}"
            if credential_file is not None
            else "# No LoadCredential=: no Slack credential file was configured."
        ),
        "@VERIFY_CALENDAR@": verify_calendar,
    }
    folder = templates or template_dir()
    common = (folder / COMMON_FRAGMENT).read_text(encoding="utf-8").rstrip("\n")
    units: dict[str, str] = {}
    for path in sorted(folder.glob("*.in")):
        name = path.name[: -len(".in")]
        if not name.endswith((".service", ".timer")):
            continue
        text = path.read_text(encoding="utf-8").replace("@SERVICE_COMMON@", common)
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        left = sorted(set(_PLACEHOLDER_RE.findall(text)))
        if left:
            raise DeployError(f"Template {path} has unknown placeholders {left}.")
        units[name] = text if text.endswith("\n") else text + "\n"
    if not any(n.endswith(".timer") for n in units):
        raise DeployError(f"No *.timer.in templates found in {folder}.")
    return units


# --------------------------------------------------------------------------------------------------
# install


@dataclass
class InstallResult:
    """What install() did, or in dry-run what it would do."""

    dry_run: bool
    unit_dir: Path
    files: dict[Path, str]  # unit file path -> content (written, or would be written)
    commands: list[list[str]]  # commands run, or that would run, in order
    user: str
    user_created: bool  # True when the user was (or would be) created
    timers: list[str] = field(default_factory=list)
    ingest: str = "timer"  # timer: estore-ops-ingest.timer; events: estore-ops-watch.service
    services: list[str] = field(default_factory=list)  # long-running services enabled (the watch loop)
    removed: list[Path] = field(default_factory=list)  # units an earlier version installed that this one has not


def installed_units(unit_dir: Path) -> dict[str, str]:
    """The estore-ops unit files in unit_dir (any version's): {file name: content}."""
    found = {}
    for path in sorted(Path(unit_dir).glob(f"{UNIT_PREFIX}*")):
        if path.suffix not in (".service", ".timer") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "estore-ops" in text:  # written by `estore-ops systemd install`, not a look-alike
            found[path.name] = text
    return found


def _directive(units: Mapping[str, str], key: str) -> list[str]:
    """All values of `key=` over the rendered services, in order, without duplicates."""
    seen: list[str] = []
    for name, text in units.items():
        if not name.endswith(".service"):
            continue
        for line in text.splitlines():
            if line.startswith(f"{key}="):
                for value in line[len(key) + 1 :].split():
                    if value not in seen:
                        seen.append(value)
    return seen


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run(run: Runner, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        proc = run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DeployError(f"`{cmd[0]}` is not installed: `estore-ops systemd install` needs a systemd host.") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip()
        raise DeployError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: {detail}")
    return proc


def install(
    units: Mapping[str, str],
    *,
    unit_dir: Path = DEFAULT_UNIT_DIR,
    dry_run: bool,
    run: Runner = subprocess.run,
    ingest: str = "timer",
) -> InstallResult:
    """Install rendered units and start their timers.

    In order: create the system user named by User= if it is missing (useradd --system), create the
    ReadWritePaths= directories owned by it, write the unit files (0644, atomically), stop and
    remove the estore-ops units an earlier version installed that this one no longer has (`systemctl
    disable --now` its timers), `systemctl daemon-reload`, then the ingest mode: `ingest="timer"`
    disables and stops the watch service and enables every timer; `ingest="events"` disables and
    stops the ingest timer, enables the other timers and the watch service, and restarts it so it
    runs what was just installed. The other mode is always switched off first, so the two never run
    together. Units of an earlier version are replaced in place. Idempotent. With dry_run=True
    nothing is written and no command runs: the result lists the files and the commands instead.
    """
    if ingest not in INGEST_MODES:
        raise DeployError(f"--ingest must be one of {', '.join(INGEST_MODES)}, got {ingest!r}.")
    users = _directive(units, "User")
    if len(users) != 1:
        raise DeployError(f"The services must all run as one user, found {users or 'none'}.")
    user = users[0]
    home = (_directive(units, "WorkingDirectory") or [str(DEFAULT_STATE_DIR)])[0]
    dirs = _directive(units, "ReadWritePaths")
    timers = sorted(n for n in units if n.endswith(".timer"))
    services: list[str] = []
    files = {unit_dir / name: text for name, text in sorted(units.items())}

    create_user = not _user_exists(user)
    commands: list[list[str]] = []
    if create_user:
        commands.append(
            ["useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home",
             "--shell", "/usr/sbin/nologin", "--comment", "estore-ops jobs", user]
        )
    for directory in dirs:
        commands.append(["install", "-d", "-m", "0750", "-o", user, "-g", user, directory])
    systemctl = [["systemctl", "daemon-reload"]]
    if ingest == "events":
        if WATCH_SERVICE not in units:
            raise DeployError(f"--ingest events needs the {WATCH_SERVICE} template, which is missing.")
        timers = [t for t in timers if t != INGEST_TIMER]
        services = [WATCH_SERVICE]
        if INGEST_TIMER in units:
            systemctl.append(["systemctl", "disable", "--now", INGEST_TIMER])
    elif WATCH_SERVICE in units:
        systemctl.append(["systemctl", "disable", "--now", WATCH_SERVICE])
    systemctl.append(["systemctl", "enable", "--now", *timers, *services])
    if services:
        # `enable --now` leaves a running service as it is: restart it so it runs the code and
        # units just installed (SIGTERM lets it finish the file in progress first).
        systemctl.append(["systemctl", "restart", *services])

    # Units an earlier version installed and this one no longer has: stopped and removed.
    stale = [name for name in installed_units(unit_dir) if name not in units]
    stale_timers = [name for name in stale if name.endswith(".timer")]
    disable = [["systemctl", "disable", "--now", *stale_timers]] if stale_timers else []

    result = InstallResult(dry_run, unit_dir, files, commands + disable + systemctl, user, create_user, timers, ingest,
                           services, removed=[unit_dir / name for name in stale])
    if dry_run:
        return result

    for cmd in commands:
        _run(run, cmd)
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            _write_atomic(path, text)
    except OSError as exc:
        raise DeployError(f"Cannot write the unit files to {unit_dir}: {exc.strerror} (run as root).") from None
    for cmd in disable:
        _run(run, cmd)
    try:
        for path in result.removed:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise DeployError(f"Cannot remove the old unit files in {unit_dir}: {exc.strerror} (run as root).") from None
    for cmd in systemctl:
        _run(run, cmd)
    return result


# --------------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class TimerStatus:
    """One estore-ops timer and the last run of the service it starts."""

    timer: str
    service: str
    next_run: datetime | None  # next elapse (None: not scheduled, e.g. timer stopped)
    last_run: datetime | None  # last time the timer fired
    last_result: str | None  # systemd Result= of the service: success, exit-code, timeout, signal, ...
    exit_status: int | None  # ExecMainStatus of the last run (0, 75 = lock held, 5 = unhealthy, ...)
    active_state: str | None = None  # ActiveState of the service: inactive, activating (running), failed
    active_since: datetime | None = None  # ActiveEnterTimestamp (mostly empty for oneshot services)
    last_start: datetime | None = None  # ExecMainStartTimestamp
    last_exit: datetime | None = None  # ExecMainExitTimestamp

    @property
    def running(self) -> bool:
        return self.active_state == "activating"

    @property
    def ok(self) -> bool:
        """False when the last run failed (a job that never ran counts as ok)."""
        return self.last_result in (None, "", "success") and self.active_state != "failed"


_USEC_UNSET = {0, 2**64 - 1}
_TS_RE = re.compile(r"(?:[A-Z][a-z]{2} )?(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?: ([A-Za-z][A-Za-z0-9+/_-]*|[+-]\d{2,4}))?")


def _from_usec(value: Any) -> datetime | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        usec = int(value)
    except (TypeError, ValueError):
        return _parse_timestamp(str(value))
    if usec in _USEC_UNSET or usec < 0 or usec >= 2**63:
        return None
    return datetime.fromtimestamp(usec / 1_000_000, tz=timezone.utc)


def _parse_timestamp(text: str) -> datetime | None:
    """'Fri 2026-11-27 17:40:00 UTC' (or '@1764265200', 'n/a', '') -> aware datetime or None."""
    text = text.strip()
    if not text or text in ("n/a", "-"):
        return None
    if text.startswith("@"):
        try:
            return datetime.fromtimestamp(float(text[1:]), tz=timezone.utc)
        except ValueError:
            return None
    match = _TS_RE.search(text)
    if not match:
        return None
    naive = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    zone = match.group(2)
    if zone in ("UTC", "GMT", "Z"):
        return naive.replace(tzinfo=timezone.utc)
    return naive.astimezone()  # the host's local zone, which is what systemctl printed


def _parse_list_timers_json(text: str) -> list[tuple[str, str, datetime | None, datetime | None]]:
    rows = []
    for item in json.loads(text):
        timer = item.get("unit") or ""
        activates = item.get("activates")
        if isinstance(activates, list):
            activates = activates[0] if activates else ""
        service = activates or timer.removesuffix(".timer") + ".service"
        rows.append((timer, service, _from_usec(item.get("next")), _from_usec(item.get("last"))))
    return rows


def _parse_list_timers_plain(text: str) -> list[tuple[str, str, datetime | None, datetime | None]]:
    """The table of systemd versions without JSON output: NEXT LEFT LAST PASSED UNIT ACTIVATES."""
    rows = []
    for line in text.splitlines():
        tokens = line.split()
        index = next((i for i, t in enumerate(tokens) if t.endswith(".timer")), None)
        if index is None or tokens[0] == "NEXT":
            continue
        timer = tokens[index]
        service = tokens[index + 1] if len(tokens) > index + 1 else timer.removesuffix(".timer") + ".service"
        before = " ".join(tokens[:index])
        stamps = list(_TS_RE.finditer(before))
        next_run = last_run = None
        if len(stamps) >= 2:
            next_run, last_run = _parse_timestamp(stamps[0].group(0)), _parse_timestamp(stamps[1].group(0))
        elif len(stamps) == 1:
            parsed = _parse_timestamp(stamps[0].group(0))
            if stamps[0].start() == 0:
                next_run = parsed
            else:
                last_run = parsed
        rows.append((timer, service, next_run, last_run))
    return rows


def _parse_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show -p Id,...` over several units: blocks separated by blank lines, keyed by Id."""
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        props: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key.strip()] = value.strip()
        if props.get("Id"):
            out[props["Id"]] = props
    return out


SHOW_PROPERTIES = (
    "Id", "ActiveState", "Result", "ExecMainStatus",
    "ActiveEnterTimestamp", "ExecMainStartTimestamp", "ExecMainExitTimestamp",
)


def _systemctl(run: Runner, args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return run(["systemctl", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DeployError("`systemctl` is not installed: `estore-ops systemd status` needs a systemd host.") from None


def status(run: Runner = subprocess.run, *, pattern: str = f"{UNIT_PREFIX}*.timer") -> list[TimerStatus]:
    """The estore-ops timers: next run, last run, and the result of the service's last run.

    Reads `systemctl list-timers --all --output=json` (the plain table on systemd versions that ignore
    or refuse --output=json), then one `systemctl show -p Result,ActiveEnterTimestamp,ExecMainStatus,...`
    for all the services.
    """
    base = ["list-timers", "--all", "--no-pager", pattern]
    proc = _systemctl(run, [*base[:2], "--output=json", *base[2:]])
    text = (proc.stdout or "").strip()
    if proc.returncode == 0 and text.startswith("["):
        try:
            rows = _parse_list_timers_json(text)
        except (ValueError, AttributeError, TypeError) as exc:
            raise DeployError(f"Cannot parse `systemctl list-timers --output=json`: {exc}") from None
    else:
        if proc.returncode != 0:
            proc = _systemctl(run, base)
            if proc.returncode != 0:
                detail = (proc.stderr or proc.stdout or "").strip()
                raise DeployError(f"`systemctl list-timers` failed with exit code {proc.returncode}: {detail}")
        rows = _parse_list_timers_plain(proc.stdout or "")
    rows = [r for r in rows if r[0]]
    if not rows:
        return []

    services = [service for _, service, _, _ in rows]
    show = _systemctl(run, ["show", "--no-pager", "-p", ",".join(SHOW_PROPERTIES), *services])
    if show.returncode != 0:
        detail = (show.stderr or show.stdout or "").strip()
        raise DeployError(f"`systemctl show` failed with exit code {show.returncode}: {detail}")
    props = _parse_show(show.stdout or "")

    out = []
    for timer, service, next_run, last_run in rows:
        p = props.get(service, {})
        exit_status = p.get("ExecMainStatus", "")
        out.append(
            TimerStatus(
                timer=timer,
                service=service,
                next_run=next_run,
                last_run=last_run,
                last_result=p.get("Result") or None,
                exit_status=int(exit_status) if exit_status.lstrip("-").isdigit() else None,
                active_state=p.get("ActiveState") or None,
                active_since=_parse_timestamp(p.get("ActiveEnterTimestamp", "")),
                last_start=_parse_timestamp(p.get("ExecMainStartTimestamp", "")),
                last_exit=_parse_timestamp(p.get("ExecMainExitTimestamp", "")),
            )
        )
    return sorted(out, key=lambda s: s.timer)
