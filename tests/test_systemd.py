"""The systemd units: rendered from systemd/*.in, checked with systemd-analyze, installed, inspected."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from estore_ops.deploy import systemd as sd
from estore_ops.deploy.systemd import DeployError, install, render_units, status

FAKE_TOKEN = "xoxb-111111111111-2222222222222-FakeTokenForTestsOnly42"

JOB_COMMANDS = {
    "estore-ops-ingest.service": "watch --once",
    "estore-ops-transform.service": "transform",
    "estore-ops-snapshot.service": "snapshot",
    "estore-ops-health.service": "health",
    "estore-ops-verify.service": "verify",
}
TIMERS = ["estore-ops-health.timer", "estore-ops-ingest.timer", "estore-ops-snapshot.timer", "estore-ops-transform.timer",
          "estore-ops-verify.timer"]
ALERT = "estore-ops-alert@.service"
WATCH = "estore-ops-watch.service"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if not sys.platform.startswith("linux"):
        pytest.skip("systemd-analyze exists only on Linux")
    pytest.fail("systemd-analyze is missing: install the systemd package (apt-get install systemd).")


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, Path]:
    """A fake VM layout in tmp: an executable that exists, the state/work dirs, env and credential files."""
    exe = tmp_path / "venv" / "bin" / "estore-ops"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    state = tmp_path / "state"
    work = state / "work"
    work.mkdir(parents=True)
    env_file = tmp_path / "etc" / "estore-ops.env"
    env_file.parent.mkdir()
    env_file.write_text("ESTORE_LANDING=gs://bucket/landing\n")
    cred = tmp_path / "etc" / "credentials" / "slack_token"
    cred.parent.mkdir()
    cred.write_text(FAKE_TOKEN)
    return {"exe": exe, "state": state, "work": work, "env_file": env_file, "cred": cred, "root": tmp_path}


def _render(layout: dict[str, Path], **overrides) -> dict[str, str]:
    kwargs = dict(
        exe=layout["exe"], user="estore", env_file=layout["env_file"], state_dir=layout["state"],
        work_dir=layout["work"], credential_file=layout["cred"],
    )
    kwargs.update(overrides)
    return render_units(**kwargs)


def _write(units: dict[str, str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in units.items():
        path = folder / name
        path.write_text(text)
        paths.append(path)
    return paths


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


# --- rendering ------------------------------------------------------------------------------------


def test_renders_the_expected_units(layout):
    units = _render(layout)
    assert sorted(units) == sorted([*JOB_COMMANDS, *TIMERS, ALERT, WATCH])
    for name, text in units.items():
        assert "@" not in re.sub(r"estore-ops-alert@|@system-service|@privileged|@resources", "", text), name
        assert text.endswith("\n")


def test_services_run_the_cli_as_oneshot_with_alerts(layout):
    units = _render(layout)
    for name, args in JOB_COMMANDS.items():
        d = _directives(units[name])
        assert d["Type"] == ["oneshot"], name
        assert d["ExecStart"] == [f"{layout['exe']} {args}"], name
        assert d["OnFailure"] == ["estore-ops-alert@%n.service"], name
        # 75 = lock held is success; 5 = unhealthy must stay a failure (it triggers the alert).
        assert d["SuccessExitStatus"] == ["75"], name
        assert len(d["TimeoutStartSec"]) == 1, name
    alert = _directives(units[ALERT])
    assert alert["ExecStart"] == [f"{layout['exe']} alert unit-failure %i"]
    assert alert["Type"] == ["oneshot"]
    assert "OnFailure" not in alert  # no alert loops


def test_services_are_hardened_and_unprivileged(layout):
    units = _render(layout)
    for name in [*JOB_COMMANDS, ALERT, WATCH]:
        d = _directives(units[name])
        assert d["User"] == ["estore"]
        assert d["EnvironmentFile"] == [str(layout["env_file"])]
        assert d["LoadCredential"] == [f"slack_token:{layout['cred']}"]
        env = " ".join(d["Environment"])
        assert "DO_NOT_TRACK=1" in env
        assert d["ReadWritePaths"] == [f"{layout['state']} {layout['work']}"]
        assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
        for key, value in {
            "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
            "PrivateDevices": "yes", "CapabilityBoundingSet": "",
        }.items():
            assert d.get(key) == [value], (name, key)
        assert "MemoryDenyWriteExecute" not in d  # breaks some Python wheels


def test_watch_service_is_a_long_running_notify_service_that_excludes_the_ingest_timer(layout):
    d = _directives(_render(layout)[WATCH])
    assert d["ExecStart"] == [f"{layout['exe']} watch --events"]
    assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"]
    assert d["WatchdogSec"] and d["TimeoutStopSec"]
    assert d["OnFailure"] == ["estore-ops-alert@%n.service"]
    assert d["Conflicts"] == ["estore-ops-ingest.timer estore-ops-ingest.service"]
    assert d["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("ingest", ["timer", "events"])
def test_install_enables_one_ingest_mode_and_disables_the_other_first(layout, monkeypatch, ingest):
    monkeypatch.setattr(sd, "_user_exists", lambda user: True)
    run = FakeRun()
    result = install(_render(layout), unit_dir=layout["root"] / "u", dry_run=False, run=run, ingest=ingest)
    enable = [c for c in run.calls if c[1:3] == ["enable", "--now"]]
    disable = [c for c in run.calls if c[1:3] == ["disable", "--now"]]
    assert len(enable) == 1 and len(disable) == 1
    assert run.calls.index(disable[0]) < run.calls.index(enable[0])  # never both, not even for a moment
    if ingest == "events":
        assert disable[0][3:] == ["estore-ops-ingest.timer"]
        assert enable[0][3:] == [t for t in TIMERS if t != "estore-ops-ingest.timer"] + [WATCH]
        assert result.services == [WATCH]
        # A running watch loop is restarted so it runs the code and unit just installed.
        assert run.calls[-1] == ["systemctl", "restart", WATCH]
    else:
        assert disable[0][3:] == [WATCH]
        assert enable[0][3:] == TIMERS and result.services == []
    with pytest.raises(DeployError, match="--ingest must be one of"):
        install(_render(layout), unit_dir=layout["root"] / "u", dry_run=True, run=_no_run, ingest="both")


def test_timers(layout):
    units = _render(layout)
    ingest = _directives(units["estore-ops-ingest.timer"])
    assert ingest["OnUnitActiveSec"] == ["5min"]
    assert ingest.get("OnBootSec")
    assert "OnCalendar" not in ingest and "Persistent" not in ingest  # monotonic: Persistent= would do nothing
    assert "Persistent= only applies to OnCalendar=" in units["estore-ops-ingest.timer"]
    for name in TIMERS:
        d = _directives(units[name])
        assert d["WantedBy"] == ["timers.target"], name
        assert d["Unit"] == [name.replace(".timer", ".service")], name
        if "OnCalendar" in d:
            assert d["Persistent"] == ["true"], name


def test_units_pass_systemd_analyze_verify(layout):
    analyze = _analyze()
    folder = layout["root"] / "units"
    paths = _write(_render(layout), folder)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{folder}:", "SYSTEMD_LOG_COLOR": "0"}
    # Every file, then the alert template as OnFailure= instantiates it (checks its ExecStart too).
    proc = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, paths), "estore-ops-alert@estore-ops-ingest.service.service"],
        capture_output=True, text=True, env=env, cwd=folder, timeout=60,
    )
    # verify only warns (exit 0) about unknown keys and bad values: any output is a failure.
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stderr + proc.stdout


def test_verify_check_would_catch_a_broken_unit(layout):
    """Guard for the test above: an unknown key and a missing executable do show up."""
    analyze = _analyze()
    folder = layout["root"] / "units"
    units = _render(layout, exe=layout["root"] / "missing" / "estore-ops")
    units["estore-ops-ingest.service"] = units["estore-ops-ingest.service"].replace("Type=oneshot", "Type=oneshot\nTypo=1")
    _write(units, folder)
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(folder / "estore-ops-ingest.service")],
        capture_output=True, text=True, cwd=folder, timeout=60,
    )
    assert "Typo" in proc.stderr
    assert proc.returncode != 0  # the executable does not exist


def test_security_exposure_is_low(layout):
    analyze = _analyze()
    folder = layout["root"] / "units"
    _write(_render(layout), folder)
    for name in [*JOB_COMMANDS, "estore-ops-alert@.service", WATCH]:
        proc = subprocess.run(
            [analyze, "security", "--offline=true", "--man=no", "--threshold=20", str(folder / name)],
            capture_output=True, text=True, cwd=folder, timeout=60,
        )
        assert proc.returncode == 0, f"{name}: exposure above 2.0\n{proc.stdout[-400:]}{proc.stderr}"


def _elapses(spec: str, iterations: int = 3) -> list[datetime]:
    proc = subprocess.run(
        [_analyze(), "calendar", f"--iterations={iterations}", spec],
        capture_output=True, text=True, env={**os.environ, "TZ": "UTC"}, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    stamps = re.findall(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC", proc.stdout)
    assert len(stamps) == iterations, proc.stdout
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc) for s in stamps]


def _expected(now: datetime, matches, count: int) -> list[datetime]:
    """The next `count` whole minutes after `now` (UTC) that satisfy `matches`."""
    t = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    out = []
    while len(out) < count:
        if matches(t):
            out.append(t)
        t += timedelta(minutes=1)
    return out


SCHEDULES = {
    "estore-ops-transform.timer": lambda t: t.hour == 0 and t.minute == 0,  # daily 00:00
    "estore-ops-snapshot.timer": lambda t: t.weekday() == 6 and t.hour == 1 and t.minute == 0,  # Sunday 01:00
    "estore-ops-health.timer": lambda t: t.minute % 15 == 0,  # every 15 minutes
    "estore-ops-verify.timer": lambda t: t.weekday() == 0 and t.hour == 3 and t.minute == 0,  # Monday 03:00
}


@pytest.mark.parametrize("timer", sorted(SCHEDULES))
def test_calendar_timers_fire_on_schedule(layout, timer):
    specs = _directives(_render(layout)[timer])["OnCalendar"]
    assert len(specs) == 1
    before = datetime.now(timezone.utc)
    got = _elapses(specs[0])
    after = datetime.now(timezone.utc)
    # A minute boundary may pass between the two clocks: accept the schedule seen from either side.
    assert got in (_expected(before, SCHEDULES[timer], 3), _expected(after, SCHEDULES[timer], 3)), got


# --- secrets and validation -----------------------------------------------------------------------


def test_rendered_units_contain_no_secret(layout, monkeypatch):
    for name in ("ESTORE_SLACK_BOT_TOKEN", "SLACK_BOT_TOKEN", "ESTORE_SLACK_WEBHOOK_URL", "SLACK_WEBHOOK_URL"):
        monkeypatch.setenv(name, FAKE_TOKEN)
    units = _render(layout)  # the credential file in the layout holds the token too
    for name, text in units.items():
        assert FAKE_TOKEN not in text, name
        assert "xoxb-" not in text, name
    result = install(units, unit_dir=layout["root"] / "etc-systemd", dry_run=True, run=_no_run)
    assert all(FAKE_TOKEN not in text for text in result.files.values())
    assert all(FAKE_TOKEN not in " ".join(cmd) for cmd in result.commands)


def test_without_credential_file_there_is_no_load_credential(layout):
    units = _render(layout, credential_file=None)
    assert all("LoadCredential" not in _directives(text) for text in units.values())


@pytest.mark.parametrize(
    "overrides",
    [
        {"user": "root"},
        {"user": "Bad User"},
        {"state_dir": Path("relative/state")},
        {"work_dir": Path("/var/lib/estore ops")},
        {"env_file": Path("/etc/estore-ops/%h.env")},
    ],
)
def test_render_refuses_unsafe_values(layout, overrides):
    with pytest.raises(DeployError):
        _render(layout, **overrides)


def test_default_exe_is_an_existing_absolute_path(monkeypatch, layout):
    monkeypatch.setattr(sys, "argv", [str(layout["exe"]), "systemd", "install"])
    assert sd.default_exe() == layout["exe"].resolve()
    units = render_units(user="estore", env_file=layout["env_file"], state_dir=layout["state"], work_dir=layout["work"],
                         credential_file=None)
    assert f"ExecStart={layout['exe'].resolve()} watch --once" in units["estore-ops-ingest.service"]


# --- install --------------------------------------------------------------------------------------


def _no_run(*args, **kwargs):
    raise AssertionError(f"dry run must not run commands: {args}")


class FakeRun:
    def __init__(self, fail: str | None = None):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, cmd, **kwargs):
        self.calls.append(list(cmd))
        rc = 1 if self.fail and self.fail in " ".join(cmd) else 0
        return subprocess.CompletedProcess(cmd, rc, stdout="", stderr="boom" if rc else "")


def test_install_dry_run_touches_nothing(layout, monkeypatch):
    monkeypatch.setattr(sd, "_user_exists", lambda user: False)
    unit_dir = layout["root"] / "etc" / "systemd" / "system"
    units = _render(layout)
    result = install(units, unit_dir=unit_dir, dry_run=True, run=_no_run)
    assert result.dry_run
    assert not unit_dir.exists()
    assert sorted(result.files) == sorted(unit_dir / name for name in units)
    assert result.files[unit_dir / "estore-ops-ingest.timer"] == units["estore-ops-ingest.timer"]
    assert result.user == "estore" and result.user_created
    assert result.commands[0][:2] == ["useradd", "--system"]
    assert result.commands[-3:] == [["systemctl", "daemon-reload"], ["systemctl", "disable", "--now", WATCH],
                                    ["systemctl", "enable", "--now", *TIMERS]]


def test_install_writes_units_then_reloads_and_enables_timers(layout, monkeypatch):
    monkeypatch.setattr(sd, "_user_exists", lambda user: False)
    unit_dir = layout["root"] / "unit-dir"
    run = FakeRun()
    units = _render(layout)
    result = install(units, unit_dir=unit_dir, dry_run=False, run=run)
    for name, text in units.items():
        assert (unit_dir / name).read_text() == text
        assert (unit_dir / name).stat().st_mode & 0o777 == 0o644
    assert run.calls == result.commands
    assert run.calls[0] == [
        "useradd", "--system", "--user-group", "--home-dir", str(layout["state"]), "--no-create-home",
        "--shell", "/usr/sbin/nologin", "--comment", "estore-ops jobs", "estore",
    ]
    assert ["install", "-d", "-m", "0750", "-o", "estore", "-g", "estore", str(layout["work"])] in run.calls
    assert run.calls[-3:] == [["systemctl", "daemon-reload"], ["systemctl", "disable", "--now", WATCH],
                              ["systemctl", "enable", "--now", *TIMERS]]
    assert not list(unit_dir.glob(".*"))  # no temporary files left behind


def test_install_keeps_an_existing_user(layout, monkeypatch):
    monkeypatch.setattr(sd, "_user_exists", lambda user: True)
    run = FakeRun()
    result = install(_render(layout), unit_dir=layout["root"] / "u", dry_run=False, run=run)
    assert not result.user_created
    assert not any(cmd[0] == "useradd" for cmd in run.calls)


def test_install_reports_a_failing_command(layout, monkeypatch):
    monkeypatch.setattr(sd, "_user_exists", lambda user: True)
    with pytest.raises(DeployError, match="daemon-reload.*boom"):
        install(_render(layout), unit_dir=layout["root"] / "u", dry_run=False, run=FakeRun(fail="daemon-reload"))


# --- status ---------------------------------------------------------------------------------------

# Captured shape of `systemctl list-timers --all --output=json` on Debian 12 (systemd 252): timestamps
# in microseconds since the epoch, null when unset; a timer that never fired has last = 0.
LIST_TIMERS_JSON = json.dumps([
    {"next": 1764288300000000, "left": 1764288300000000, "last": 1764288000114520, "passed": 1764288000114520,
     "unit": "estore-ops-ingest.timer", "activates": "estore-ops-ingest.service"},
    {"next": 1764288900000000, "left": 1764288900000000, "last": 1764288000031337, "passed": 1764288000031337,
     "unit": "estore-ops-health.timer", "activates": "estore-ops-health.service"},
    {"next": 1764288000000000 + 86400 * 1_000_000, "left": 1764374400000000, "last": 0, "passed": 0,
     "unit": "estore-ops-transform.timer", "activates": "estore-ops-transform.service"},
    {"next": None, "left": None, "last": None, "passed": None,
     "unit": "estore-ops-snapshot.timer", "activates": "estore-ops-snapshot.service"},
])

SHOW_OUTPUT = """\
Id=estore-ops-ingest.service
ActiveState=inactive
Result=success
ExecMainStatus=75
ActiveEnterTimestamp=
ExecMainStartTimestamp=Fri 2025-11-28 00:00:00 UTC
ExecMainExitTimestamp=Fri 2025-11-28 00:00:03 UTC

Id=estore-ops-health.service
ActiveState=failed
Result=exit-code
ExecMainStatus=5
ActiveEnterTimestamp=
ExecMainStartTimestamp=Fri 2025-11-28 00:00:00 UTC
ExecMainExitTimestamp=Fri 2025-11-28 00:00:01 UTC

Id=estore-ops-transform.service
ActiveState=inactive
Result=success
ExecMainStatus=0
ActiveEnterTimestamp=
ExecMainStartTimestamp=
ExecMainExitTimestamp=

Id=estore-ops-snapshot.service
ActiveState=failed
Result=signal
ExecMainStatus=9
ActiveEnterTimestamp=
ExecMainStartTimestamp=Sun 2025-11-23 01:00:00 UTC
ExecMainExitTimestamp=Sun 2025-11-23 03:00:00 UTC
"""

LIST_TIMERS_PLAIN = """\
NEXT                        LEFT          LAST                        PASSED       UNIT                       ACTIVATES
Fri 2025-11-28 00:05:00 UTC 4min 10s left Fri 2025-11-28 00:00:00 UTC 49s ago      estore-ops-ingest.timer    estore-ops-ingest.service
Sat 2025-11-29 00:00:00 UTC 23h left      n/a                         n/a          estore-ops-transform.timer estore-ops-transform.service
n/a                         n/a           Sun 2025-11-23 01:00:00 UTC 4 days ago   estore-ops-snapshot.timer  estore-ops-snapshot.service

3 timers listed.
"""


class FakeSystemctl:
    def __init__(self, list_timers: list[tuple[int, str]], show: str = SHOW_OUTPUT):
        self.list_timers = list(list_timers)
        self.show = show
        self.calls: list[list[str]] = []

    def __call__(self, cmd, **kwargs):
        self.calls.append(list(cmd))
        if cmd[1] == "list-timers":
            rc, out = self.list_timers.pop(0)
            return subprocess.CompletedProcess(cmd, rc, stdout=out if rc == 0 else "", stderr="" if rc == 0 else out)
        if cmd[1] == "show":
            return subprocess.CompletedProcess(cmd, 0, stdout=self.show, stderr="")
        raise AssertionError(cmd)


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_status_parses_list_timers_json():
    run = FakeSystemctl([(0, LIST_TIMERS_JSON)])
    rows = {s.timer: s for s in status(run=run)}
    assert run.calls[0][:5] == ["systemctl", "list-timers", "--all", "--output=json", "--no-pager"]
    show = run.calls[1]
    assert show[:2] == ["systemctl", "show"] and "Result" in show[4] and "ActiveEnterTimestamp" in show[4]
    assert "ExecMainStatus" in show[4] and set(show[5:]) == {f"estore-ops-{j}.service" for j in ("ingest", "health", "transform", "snapshot")}

    ingest = rows["estore-ops-ingest.timer"]
    assert ingest.service == "estore-ops-ingest.service"
    assert ingest.next_run == _utc(2025, 11, 28, 0, 5)
    assert ingest.last_run == datetime.fromtimestamp(1764288000.11452, tz=timezone.utc)
    assert (ingest.last_result, ingest.exit_status, ingest.ok) == ("success", 75, True)
    assert ingest.last_exit == _utc(2025, 11, 28, 0, 0, 3)

    health = rows["estore-ops-health.timer"]
    assert (health.last_result, health.exit_status, health.active_state, health.ok) == ("exit-code", 5, "failed", False)

    transform = rows["estore-ops-transform.timer"]
    assert transform.last_run is None and transform.next_run == _utc(2025, 11, 29)
    assert transform.last_start is None

    snapshot = rows["estore-ops-snapshot.timer"]
    assert snapshot.next_run is None and snapshot.last_run is None
    assert (snapshot.last_result, snapshot.exit_status) == ("signal", 9)


def test_status_accepts_activates_as_a_list():
    sample = json.loads(LIST_TIMERS_JSON)
    for item in sample:
        item["activates"] = [item["activates"]]
    rows = status(run=FakeSystemctl([(0, json.dumps(sample))]))
    assert {s.service for s in rows} == {f"estore-ops-{j}.service" for j in ("ingest", "health", "transform", "snapshot")}


@pytest.mark.parametrize("first", [(0, LIST_TIMERS_PLAIN), (1, "Unknown output 'json'.")])
def test_status_falls_back_to_the_plain_table(first):
    calls = [first] if first[0] == 0 else [first, (0, LIST_TIMERS_PLAIN)]
    run = FakeSystemctl(calls)
    rows = {s.timer: s for s in status(run=run)}
    assert sorted(rows) == ["estore-ops-ingest.timer", "estore-ops-snapshot.timer", "estore-ops-transform.timer"]
    ingest = rows["estore-ops-ingest.timer"]
    assert (ingest.next_run, ingest.last_run) == (_utc(2025, 11, 28, 0, 5), _utc(2025, 11, 28))
    transform = rows["estore-ops-transform.timer"]
    assert (transform.next_run, transform.last_run) == (_utc(2025, 11, 29), None)
    snapshot = rows["estore-ops-snapshot.timer"]
    assert (snapshot.next_run, snapshot.last_run) == (None, _utc(2025, 11, 23, 1))
    assert snapshot.last_result == "signal"


def test_status_without_timers_is_empty():
    run = FakeSystemctl([(0, "[]")])
    assert status(run=run) == []
    assert len(run.calls) == 1


def test_cli_dry_run_prints_units_that_verify_on_this_machine(layout):
    """`estore-ops systemd install --dry-run`, as an operator runs it: real paths of this install."""
    import json

    from typer.testing import CliRunner

    from estore_ops.cli import app

    result = CliRunner().invoke(app, [
        "systemd", "install", "--dry-run", "--json", "--state-dir", str(layout["state"]), "--work-dir", str(layout["work"]),
        "--env-file", str(layout["env_file"]), "--credential-file", str(layout["cred"]),
        "--unit-dir", str(layout["root"] / "unit-dir"),
    ])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["dry_run"] and not (layout["root"] / "unit-dir").exists()  # nothing written
    assert any("enable" in cmd for cmd in plan["commands"])
    units = {Path(p).name: text for p, text in plan["files"].items()}
    from estore_ops.deploy import default_exe

    exe = default_exe()
    assert all(f"ExecStart={exe} " in text for name, text in units.items() if name.endswith(".service"))
    folder = layout["root"] / "units"
    paths = _write(units, folder)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{folder}:", "SYSTEMD_LOG_COLOR": "0"}
    proc = subprocess.run([_analyze(), "verify", "--man=no", *map(str, paths)], capture_output=True, text=True,
                          env=env, cwd=folder, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stderr + proc.stdout
