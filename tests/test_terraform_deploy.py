"""The deployment in terraform/, checked the way `terraform plan` and a rebooting VM would see it.

- Every `validation` condition is evaluated with Terraform's regex engine (RE2, via google-re2;
  Python's `re` accepts patterns Terraform refuses), on every variable's default and on real values.
- Least privilege on the bucket, as a property: for any object name under landing/, no role the
  VM's identity holds carries a write permission (IAM conditions evaluated like Cloud Storage does).
- The startup script runs under a scratch root with stand-ins for apt, pip, systemctl and the
  metadata server: first boot, a reboot that changes nothing, an upgrade that switches atomically,
  and network failures that are retried and never leave a half-installed release in use.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import re2

from tests.terraform_expr import holds, regex_patterns
from tests.test_terraform import SAMPLE, TF_DIR, _load, _one, _render_startup, _resources, _variables
from tests.test_terraform import config  # noqa: F401 - the parsed configuration, a fixture

EXAMPLE_VALUES = {"project_id": "acme-estore-prod", "repo_url": "https://github.com/acme/estore-ops.git",
                  "repo_ref": "v0.1.0", "slack_channel": "#data-alerts"}


def _defaults(config: dict[str, list]) -> dict[str, Any]:
    values = {name: body.get("default") for name, body in _variables(config).items()}
    values.update({k: v for k, v in EXAMPLE_VALUES.items() if values.get(k) is None})
    return values


def _validations(config: dict[str, list]) -> list[tuple[str, str]]:
    return [(name, v["condition"]) for name, body in _variables(config).items() for v in body.get("validation", [])]


# -- validations under RE2 ---------------------------------------------------------------------------


def test_every_regex_of_the_configuration_compiles_under_re2(config: dict[str, list]) -> None:
    patterns = [p for _, condition in _validations(config) for p in regex_patterns(condition)]
    assert len(patterns) >= 10
    for pattern in patterns:
        re2.compile(pattern)  # raises on what Go's regexp refuses, e.g. a repeat count above 1000


def test_every_variable_default_passes_its_own_validation(config: dict[str, list]) -> None:
    env = {"var": _defaults(config)}
    failing = [name for name, condition in _validations(config) if not holds(condition, env)]
    assert not failing, f"defaults that `terraform plan` would refuse: {failing}"
    example = _load(TF_DIR / "terraform.tfvars.example")
    env = {"var": {**_defaults(config), **example}}
    assert not [name for name, condition in _validations(config) if not holds(condition, env)]


@pytest.mark.parametrize(
    "name, value, ok",
    [
        ("region", "europe-west10", True), ("region", "europe-west12", True), ("region", "us-central1", True),
        ("region", "europe west1", False),
        ("zone", "europe-west10-a", True), ("zone", "us-central1-f", True), ("zone", "europe-west1", False),
        ("location", "EU", True), ("location", "europe-west10", True), ("location", "Europe", False),
        ("repo_ref", "v0.1.0", True), ("repo_ref", "1.2.3-rc.1", True), ("repo_ref", "0123456789abcdef0123456789abcdef01234567", True),
        ("repo_ref", "main", False), ("repo_ref", "release/1.x", False), ("repo_ref", "v1", False),
        ("datasets", {"raw": "raw", "staging": "staging", "marts": "marts", "snapshots": "snap_2019"}, True),
        ("datasets", {"raw": "raw-events", "staging": "staging", "marts": "marts", "snapshots": "snapshots"}, False),
        ("datasets", {"raw": "r" * 1024, "staging": "s", "marts": "m", "snapshots": "x"}, True),
        ("datasets", {"raw": "r" * 1025, "staging": "s", "marts": "m", "snapshots": "x"}, False),
        ("project_id", "acme-estore-prod", True), ("project_id", "Acme", False),
    ],
)
def test_validations_accept_real_values_and_refuse_wrong_ones(config: dict[str, list], name: str, value: Any, ok: bool) -> None:
    env = {"var": {**_defaults(config), name: value}}
    conditions = [c for n, c in _validations(config) if n == name]
    assert conditions
    assert all(holds(c, env) for c in conditions) is ok


def test_the_zone_must_be_in_the_region(config: dict[str, list]) -> None:
    vm = _one(config, "google_compute_instance")
    (precondition,) = vm["lifecycle"][0]["precondition"]
    defaults = _defaults(config)
    assert holds(precondition["condition"], {"var": defaults})
    assert holds(precondition["condition"], {"var": {**defaults, "region": "europe-west10", "zone": "europe-west10-b"}})
    assert not holds(precondition["condition"], {"var": {**defaults, "region": "europe-west1", "zone": "europe-west10-b"}})
    assert not holds(precondition["condition"], {"var": {**defaults, "region": "europe-west1", "zone": "us-central1-a"}})


# -- least privilege -----------------------------------------------------------------------------------

# Cloud Storage roles and whether they let the holder create, replace or delete objects
# (https://cloud.google.com/storage/docs/access-control/iam-roles). An unknown role fails the test.
OBJECT_WRITE = {
    "roles/storage.objectViewer": False, "roles/storage.legacyObjectReader": False, "roles/storage.legacyBucketReader": False,
    "roles/storage.objectCreator": True, "roles/storage.objectUser": True, "roles/storage.objectAdmin": True,
    "roles/storage.admin": True, "roles/storage.legacyBucketWriter": True, "roles/storage.legacyBucketOwner": True,
    "roles/storage.legacyObjectOwner": True,
}
BUCKET = "acme-estore-landing"
LANDING_NAMES = ["2019-Oct.csv", "2019/11/a.csv.gz", "state", "state/", "x/state/cursor.json", "../state/cursor.json", ".hidden", "é.csv"]


def _cel(expression: str, resource_name: str, resource_type: str) -> bool:
    """The IAM condition subset used here: resource.name.startsWith("..."), resource.type == "...", && || ! ( )."""
    text = expression
    text = re.sub(r'resource\.name\.startsWith\("((?:[^"\\]|\\.)*)"\)', lambda m: repr(resource_name.startswith(json.loads(f'"{m.group(1)}"'))), text)
    text = re.sub(r'resource\.type\s*==\s*"([^"]*)"', lambda m: repr(resource_type == m.group(1)), text)
    text = text.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
    assert re.fullmatch(r"[\sA-Za-z()]*", text) and not re.search(r"resource", text), f"unsupported condition {expression!r}"
    return bool(eval(text, {"__builtins__": {}}, {}))  # noqa: S307 - only True/False/and/or/not/() remain


def _vm_bucket_bindings(config: dict[str, list]) -> list[tuple[str, str | None]]:
    out = []
    for rtype, name, body in _resources(config):
        if rtype.startswith("google_storage_bucket_iam") and "google_service_account.vm" in json.dumps(body):
            assert rtype == "google_storage_bucket_iam_member", f"{rtype}.{name}"
            condition = body.get("condition")
            expression = condition[0]["expression"] if condition else None
            if expression is not None:
                expression = expression.replace("${google_storage_bucket.landing.name}", BUCKET)
                assert "${" not in expression, expression
            out.append((body["role"], expression))
    return out


def test_the_vm_identity_has_no_write_role_on_the_landing_prefix(config: dict[str, list]) -> None:
    bindings = _vm_bucket_bindings(config)
    assert bindings
    unknown = [role for role, _ in bindings if role not in OBJECT_WRITE]
    assert not unknown, f"classify these roles first: {unknown}"
    for name in LANDING_NAMES:
        resource = f"projects/_/buckets/{BUCKET}/objects/landing/{name}"
        writers = [role for role, expression in bindings
                   if OBJECT_WRITE[role] and (expression is None or _cel(expression, resource, "storage.googleapis.com/Object"))]
        assert not writers, f"the VM could write {resource} through {writers}"
    # Project-wide bindings must not bring storage roles back in.
    for rtype, name, body in _resources(config, "google_project_iam_member"):
        assert not str(body["role"]).startswith("roles/storage."), name


def test_the_vm_can_read_and_list_everything_and_write_its_state(config: dict[str, list]) -> None:
    bindings = _vm_bucket_bindings(config)
    # Listing is checked on the bucket: a prefix condition can never grant it, so reading is unconditional.
    assert ("roles/storage.objectViewer", None) in bindings
    state = f"projects/_/buckets/{BUCKET}/objects/state/cursor.json"
    assert any(OBJECT_WRITE[r] and e is not None and _cel(e, state, "storage.googleapis.com/Object") for r, e in bindings)
    for other in ("statefile.csv", "landing/state/x"):
        assert not any(OBJECT_WRITE[r] and (e is None or _cel(e, f"projects/_/buckets/{BUCKET}/objects/{other}", "")) for r, e in bindings)


def test_operators_can_read_the_instance_for_gcloud_compute_ssh(config: dict[str, list]) -> None:
    role = _one(config, "google_project_iam_custom_role")
    assert set(role["permissions"]) == {"compute.instances.get", "compute.projects.get"}  # narrower than roles/compute.viewer
    binding = next(body for _, name, body in _resources(config, "google_project_iam_member") if name == "operators_ssh")
    assert "operator_ssh" in binding["role"] and "var.operators" in str(binding["for_each"])
    docs = (TF_DIR.parent / "docs" / "deploying.md").read_text()
    assert "roles/compute.osLoginExternalUser" in docs


def test_the_apis_iam_bindings_need_are_enabled_and_the_provider_is_pinned(config: dict[str, list]) -> None:
    main = (TF_DIR / "main.tf").read_text()
    assert '"cloudresourcemanager.googleapis.com"' in main
    versions = _load(TF_DIR / "versions.tf")
    (google,) = [p["google"] for p in versions["terraform"][0]["required_providers"]]
    assert google["version"] == "~> 6.0"


def test_noncurrent_versions_are_kept_by_age_not_by_count(config: dict[str, list]) -> None:
    bucket = _one(config, "google_storage_bucket")
    conditions = [rule["condition"][0] for rule in bucket["lifecycle_rule"]]
    assert conditions == [{"days_since_noncurrent_time": "${var.noncurrent_version_days}"}]
    assert "noncurrent_versions_kept" not in _variables(config)


# -- the startup script --------------------------------------------------------------------------------


STUB = """#!/bin/bash
echo "{name} $*" >> "$STUB_LOG"
{body}
"""

VENV_STUB = r'''
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  cat > "$3/bin/pip" <<'PIP'
#!/bin/bash
echo "pip $*" >> "$STUB_LOG"
if [ -f "$PIP_FAILS" ] && [ "$(cat "$PIP_FAILS")" -gt 0 ]; then echo $(( $(cat "$PIP_FAILS") - 1 )) > "$PIP_FAILS"; exit 1; fi
exit 0
PIP
  cat > "$3/bin/estore-ops" <<'EXE'
#!/bin/bash
echo "estore-ops $*" >> "$STUB_LOG"
if [ "$1" = "systemd" ]; then mkdir -p "$ESTORE_STARTUP_ROOT/etc/systemd/system"; echo "ExecStart=$4" > "$ESTORE_STARTUP_ROOT/etc/systemd/system/estore-ops-ingest.timer"; fi
exit 0
EXE
  chmod +x "$3/bin/pip" "$3/bin/estore-ops"
  exit 0
fi
if [ "$1" = "-c" ]; then exit 0; fi
exec "$REAL_PYTHON" "$@"
'''


@pytest.fixture
def metadata_server() -> Iterator[str]:
    """The metadata server's token endpoint and Secret Manager's :access, answering one token."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if "computeMetadata" in self.path and self.headers.get("Metadata-Flavor") == "Google":
                body = {"access_token": "ya29.test", "expires_in": 3600}
            elif self.path.endswith(":access") and self.headers.get("Authorization") == "Bearer ya29.test":
                body = {"payload": {"data": base64.b64encode(b"xoxb-startup-token").decode()}}
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Vm:
    """A scratch root with stand-ins for the commands the startup script calls."""

    def __init__(self, tmp: Path, metadata: str) -> None:
        self.root, self.bin, self.log = tmp / "root", tmp / "bin", tmp / "calls.log"
        self.root.mkdir()
        self.bin.mkdir()
        self.pip_fails = tmp / "pip_fails"
        stubs = {
            "apt-get": "exit 0", "useradd": "exit 0", "id": "exit 0", "git": "exit 0", "systemctl": "exit 0",
            "install": 'args=(); skip=0; for a in "$@"; do if [ $skip = 1 ]; then skip=0; continue; fi; '
                       'case "$a" in -o|-g) skip=1;; *) args+=("$a");; esac; done; exec /usr/bin/install "${args[@]}"',
            "sleep": "exit 0",
            "python3": VENV_STUB,
        }
        for name, body in stubs.items():
            path = self.bin / name
            path.write_text(STUB.format(name=name, body=body))
            path.chmod(path.stat().st_mode | stat.S_IEXEC)
        self.env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}", "STUB_LOG": str(self.log), "REAL_PYTHON": sys.executable,
            "ESTORE_STARTUP_ROOT": str(self.root), "ESTORE_STARTUP_METADATA_URL": metadata,
            "ESTORE_STARTUP_SECRETS_URL": metadata, "ESTORE_STARTUP_RETRY_SECONDS": "0", "PIP_FAILS": str(self.pip_fails),
        }

    def boot(self, values: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        script = self.root.parent / "startup.sh"
        script.write_text(_render_startup({**SAMPLE, **(values or {})}))
        self.log.write_text("")
        return subprocess.run(["bash", str(script)], env=self.env, capture_output=True, text=True, timeout=120)

    def calls(self, name: str = "") -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith(name)]

    def snapshot(self) -> dict[str, tuple[int, str]]:
        out = {}
        for path in sorted(self.root.rglob("*")):
            key = str(path.relative_to(self.root))
            if path.is_symlink():
                out[key] = (0, os.readlink(path))
            elif path.is_file():
                st = path.stat()
                out[key] = (st.st_mtime_ns, path.read_text(errors="replace"))
        return out

    @property
    def current(self) -> str:
        return os.readlink(self.root / "opt/estore-ops/current")


@pytest.fixture
def vm(tmp_path: Path, metadata_server: str) -> Vm:
    return Vm(tmp_path, metadata_server)


def test_first_boot_installs_the_pinned_release_then_the_units(vm: Vm) -> None:
    result = vm.boot()
    assert result.returncode == 0, result.stdout + result.stderr
    release = vm.root / "opt/estore-ops" / vm.current
    assert (release / ".installed").exists() and vm.current.startswith("releases/")
    assert vm.calls("pip install -q estore-ops[gcp] @ git+https://github.com/acme/estore-ops.git@v0.1.0")
    (install,) = vm.calls("estore-ops systemd install")
    exe = str(vm.root / "opt/estore-ops/current/bin/estore-ops")  # the symlink, not a release
    assert install == f"estore-ops systemd install --exe {exe} --ingest events --verify-calendar Mon *-*-* 03:00:00"
    assert (vm.root / "etc/estore-ops/credentials/slack_token").read_text() == "xoxb-startup-token"
    assert 'ESTORE_WAREHOUSE="bigquery://acme-estore-prod/raw?location=EU"' in (vm.root / "etc/estore-ops/estore-ops.env").read_text()
    assert "xoxb-startup-token" not in result.stdout + result.stderr


def test_a_reboot_with_nothing_to_change_changes_nothing(vm: Vm) -> None:
    assert vm.boot().returncode == 0
    before = vm.snapshot()
    again = vm.boot()
    assert again.returncode == 0, again.stdout + again.stderr
    assert vm.snapshot() == before  # not a file rewritten, not a symlink moved
    assert not vm.calls("pip") and not vm.calls("apt-get") and not vm.calls("estore-ops")
    assert not [c for c in vm.calls("systemctl") if "list-timers" not in c]  # timers neither stopped nor restarted


def test_a_reboot_after_changing_only_the_ingest_mode_reinstalls_the_units(vm: Vm) -> None:
    assert vm.boot().returncode == 0
    again = vm.boot({"ingest": "timer"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert not vm.calls("pip")  # the same release
    (install,) = vm.calls("estore-ops systemd install")
    assert "--ingest timer" in install


def test_an_upgrade_installs_beside_the_current_release_and_switches_atomically(vm: Vm) -> None:
    assert vm.boot().returncode == 0
    old = vm.current
    result = vm.boot({"repo_ref": "v0.2.0"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert vm.current != old and (vm.root / "opt/estore-ops" / vm.current / ".installed").exists()
    assert (vm.root / "opt/estore-ops" / old / ".installed").exists()  # the previous release stays (rollback)
    calls = vm.calls()
    stop = calls.index("systemctl stop estore-ops-*.timer")
    pip = max(i for i, c in enumerate(calls) if c.startswith("pip install -q estore-ops"))
    units = next(i for i, c in enumerate(calls) if c.startswith("estore-ops systemd install"))
    assert pip < stop < units  # timers stopped only once the new release is complete, started again by the install


def test_network_failures_are_retried_and_a_failed_install_keeps_the_release_in_use(vm: Vm) -> None:
    vm.pip_fails.write_text("2")  # two failures, then pip works: retried with backoff
    first = vm.boot()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "attempt 1 of 8 failed" in first.stdout and "attempt 2 of 8 failed" in first.stdout
    current = vm.current
    vm.pip_fails.write_text("100")  # an upgrade whose install never succeeds
    failed = vm.boot({"repo_ref": "v0.3.0"})
    assert failed.returncode == 1
    assert "giving up after 8 attempts" in failed.stdout
    assert vm.current == current  # still the complete release
    assert not vm.calls("systemctl stop")  # the timers kept running it
    # The other steps still ran (the token refresh, the environment file).
    assert "Slack token unchanged" in failed.stdout and "step failed: release" in failed.stdout
