"""The Terraform configuration, checked without a terraform binary: python-hcl2 parses every file,
the security properties are asserted on the parsed configuration, and checkov scans the folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from estore_ops.config import FIELDS

REPO = Path(__file__).resolve().parents[1]
TF_DIR = REPO / "terraform"
TF_FILES = sorted(TF_DIR.glob("*.tf"))
IAP_RANGE = "35.235.240.0/20"
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
PROJECT_WIDE_FORBIDDEN = {"roles/storage.admin", "roles/bigquery.admin", "roles/storage.objectAdmin",
                          "roles/bigquery.dataEditor", "roles/bigquery.dataOwner", "roles/secretmanager.secretAccessor",
                          "roles/secretmanager.admin", "roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator"}
SKIP_RE = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


# --- parsing (python-hcl2 4.x returns bare strings; 5+ keeps quotes and adds __is_block__ markers) ---


def _normalize(value: Any) -> Any:
    if isinstance(value, dict):
        return {_normalize(k): _normalize(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("__"))}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value[1:-1]
    return value


def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return _normalize(hcl2.load(handle))


@pytest.fixture(scope="module")
def config() -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in TF_FILES:
        for key, blocks in _load(path).items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def _resources(config, rtype: str | None = None) -> list[tuple[str, str, dict]]:
    out = []
    for block in config.get("resource", []):
        for t, named in block.items():
            for name, body in named.items():
                if rtype is None or t == rtype:
                    out.append((t, name, body))
    return out


def _one(config, rtype: str) -> dict:
    found = _resources(config, rtype)
    assert len(found) == 1, f"expected one {rtype}, found {[n for _, n, _ in found]}"
    return found[0][2]


def _block(body: dict, key: str) -> dict:
    value = body.get(key)
    if isinstance(value, list):
        assert len(value) == 1, key
        value = value[0]
    assert isinstance(value, dict), f"{key} block missing"
    return value


def _variables(config) -> dict[str, dict]:
    return {name: body for block in config.get("variable", []) for name, body in block.items()}


# --- parsing and layout ---------------------------------------------------------------------------


def test_expected_files_exist():
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "startup.sh.tftpl", "terraform.tfvars.example"):
        assert (TF_DIR / name).is_file(), name


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: p.name)
def test_every_tf_file_parses(path):
    with path.open(encoding="utf-8") as handle:
        parsed = hcl2.load(handle)
    assert parsed


def test_tfvars_example_sets_every_required_variable(config):
    variables = _variables(config)
    example = _load(TF_DIR / "terraform.tfvars.example")
    assert set(example) <= set(variables), set(example) - set(variables)
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= set(example), required - set(example)
    assert not any(re.search(r"token|secret|password", k) for k in example)


def test_variables_have_descriptions_and_validation(config):
    variables = _variables(config)
    for name, body in variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert not re.search(r"token|password|secret", name), f"{name}: secrets must not be Terraform inputs (they land in state)"
    unvalidated = {n for n, b in variables.items() if "validation" not in b and b.get("type") not in ("bool", "${bool}")}
    assert not unvalidated, f"variables without validation: {unvalidated}"


def test_outputs(config):
    outputs = {name: body for block in config.get("output", []) for name, body in block.items()}
    for name in ("bucket", "datasets", "vm_name", "ssh_command"):
        assert name in outputs and outputs[name].get("description"), name
    assert "--tunnel-through-iap" in outputs["ssh_command"]["value"]


# --- security properties --------------------------------------------------------------------------


def test_firewall_ingress_only_from_iap(config):
    firewalls = _resources(config, "google_compute_firewall")
    assert firewalls
    for _, name, body in firewalls:
        ranges = body.get("source_ranges", []) + body.get("destination_ranges", [])
        assert "0.0.0.0/0" not in ranges and "::/0" not in ranges, name
        if body.get("direction", "INGRESS") == "INGRESS":
            assert ranges == [IAP_RANGE], f"{name}: ingress sources {ranges}"
            for allow in body.get("allow", []):
                assert allow.get("protocol") == "tcp" and allow.get("ports") == ["22"], name


def test_vm_has_no_external_ip_and_is_shielded_with_os_login(config):
    vm = _one(config, "google_compute_instance")
    for nic in vm["network_interface"]:
        assert "access_config" not in nic and "ipv6_access_config" not in nic
    shielded = _block(vm, "shielded_instance_config")
    assert shielded == {"enable_secure_boot": True, "enable_vtpm": True, "enable_integrity_monitoring": True}
    metadata = vm["metadata"]
    assert metadata["enable-oslogin"] == "TRUE"
    assert metadata["block-project-ssh-keys"] == "TRUE"
    assert metadata.get("serial-port-enable", "FALSE") == "FALSE"
    assert vm.get("can_ip_forward") is False
    assert "debian-12" in _block(_block(vm, "boot_disk"), "initialize_params")["image"]
    assert "google_service_account.vm.email" in _block(vm, "service_account")["email"]  # not the default account


def test_vm_reaches_google_apis_and_slack_without_external_ip(config):
    subnet = _one(config, "google_compute_subnetwork")
    assert subnet["private_ip_google_access"] is True
    _one(config, "google_compute_router")
    nat = _one(config, "google_compute_router_nat")
    assert nat["nat_ip_allocate_option"] == "AUTO_ONLY"


def _templatefile_vars(startup_script: str) -> set[str]:
    match = re.search(r"templatefile\((.*)\)\}?$", startup_script, re.S)
    assert match, startup_script
    mapping = match.group(1)[match.group(1).index("{"):]
    return set(re.findall(r"(\w+)\s*=", mapping))


def test_no_secret_in_instance_metadata(config):
    vm = _one(config, "google_compute_instance")
    metadata = vm["metadata"]
    assert set(metadata) <= {"enable-oslogin", "block-project-ssh-keys", "serial-port-enable", "startup-script"}
    passed = _templatefile_vars(metadata["startup-script"])
    assert not any(re.search(r"token|password|key", v) for v in passed), passed
    assert "secret_version" not in metadata["startup-script"] and "secret_data" not in metadata["startup-script"]
    # The secret's value never passes through Terraform: no version resource or data source anywhere.
    text = "\n".join(p.read_text() for p in TF_FILES)
    assert "google_secret_manager_secret_version" not in text
    assert "secret_data" not in text


def _iam(config) -> list[tuple[str, str, str, list[str]]]:
    out = []
    for rtype, name, body in _resources(config):
        if "_iam_" in rtype and not rtype.endswith("_custom_role"):  # a role definition, not a grant
            members = body.get("members") or [body.get("member")]
            out.append((rtype, name, body.get("role", ""), members))
    return out


def test_least_privilege_roles(config):
    iam = _iam(config)
    assert iam
    for rtype, name, role, _ in iam:
        assert role not in PRIMITIVE_ROLES, f"{rtype}.{name}: primitive role {role}"
        assert not rtype.endswith(("_iam_policy",)), f"{rtype}.{name}: authoritative policies replace others' access"
        if rtype.startswith("google_project_iam"):
            assert rtype == "google_project_iam_member", f"{rtype}.{name}: project-level bindings must be additive"
            assert role not in PROJECT_WIDE_FORBIDDEN, f"{rtype}.{name}: {role} must be granted on the resource, not the project"
            assert not role.lower().endswith("admin"), f"{rtype}.{name}: project-wide admin role {role}"
    roles = {(rtype, role) for rtype, _, role, _ in iam}
    assert ("google_storage_bucket_iam_member", "roles/storage.objectViewer") in roles
    assert ("google_storage_bucket_iam_member", "roles/storage.objectUser") in roles  # under state/ only (test_terraform_deploy)
    assert ("google_bigquery_dataset_iam_member", "roles/bigquery.dataEditor") in roles
    assert ("google_project_iam_member", "roles/bigquery.jobUser") in roles


def test_secret_is_readable_only_by_the_vm_account(config):
    _one(config, "google_secret_manager_secret")
    readers = [(rtype, role, members) for rtype, _, role, members in _iam(config) if rtype.startswith("google_secret_manager")]
    assert readers == [
        ("google_secret_manager_secret_iam_binding", "roles/secretmanager.secretAccessor", ["${google_service_account.vm.member}"])
    ]


def test_bucket_uniform_access_versioning_and_lifecycle(config):
    bucket = _one(config, "google_storage_bucket")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert _block(bucket, "versioning")["enabled"] is True
    conditions = [_block(rule, "condition") for rule in bucket["lifecycle_rule"]]
    assert any("days_since_noncurrent_time" in c or c.get("with_state") == "ARCHIVED" for c in conditions)
    assert all(_block(rule, "action")["type"] == "Delete" for rule in bucket["lifecycle_rule"])


def test_datasets_for_every_layer(config):
    variables = _variables(config)
    assert set(variables["datasets"]["default"]) == {"raw", "staging", "marts", "snapshots"}
    dataset = _one(config, "google_bigquery_dataset")
    assert "var.datasets" in dataset["for_each"]


# --- the startup script ---------------------------------------------------------------------------


def _render_startup(values: dict[str, str]) -> str:
    text = (TF_DIR / "startup.sh.tftpl").read_text()
    assert "%{" not in text  # no template directives: plain ${name} substitution is all there is
    used = set(re.findall(r"(?<!\$)\$\{(\w+)\}", text))
    assert used == set(values), used ^ set(values)
    rendered = re.sub(r"(?<!\$)\$\{(\w+)\}", lambda m: values[m.group(1)], text)
    return rendered.replace("$${", "${")


SAMPLE = {
    "project_id": "acme-estore-prod", "bucket": "acme-estore-landing", "location": "EU", "raw_dataset": "raw",
    "slack_channel": "#data-alerts", "secret_name": "projects/acme-estore-prod/secrets/estore-ops-slack-token",
    "repo_url": "https://github.com/acme/estore-ops.git", "repo_ref": "v0.1.0", "verify_schedule": "Mon *-*-* 03:00:00",
    "notifications": "pubsub://acme-estore-prod/estore-ops-landing-events", "ingest": "events",
}


def test_startup_template_variables_match_the_templatefile_call(config):
    vm = _one(config, "google_compute_instance")
    assert _templatefile_vars(vm["metadata"]["startup-script"]) == set(SAMPLE)


def test_startup_script_is_valid_bash_and_does_the_job(tmp_path):
    script = tmp_path / "startup.sh"
    script.write_text(_render_startup(SAMPLE))
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    assert "'estore-ops[gcp] @ git+https://github.com/acme/estore-ops.git@v0.1.0'" in text
    assert 'ESTORE_LANDING="gs://acme-estore-landing/landing"' in text
    assert 'ESTORE_STATE="gs://acme-estore-landing/state"' in text
    assert 'ESTORE_WAREHOUSE="bigquery://acme-estore-prod/raw?location=EU"' in text
    assert 'ESTORE_SLACK_CHANNEL="#data-alerts"' in text
    assert ('"$CURRENT/bin/estore-ops" systemd install --exe "$CURRENT/bin/estore-ops" '
            '--ingest "events" --verify-calendar \'Mon *-*-* 03:00:00\'') in text
    assert 'ESTORE_NOTIFICATIONS="pubsub://acme-estore-prod/estore-ops-landing-events"' in text
    assert "useradd --system" in text
    assert "install -d -m 0700 -o root -g root \"$CRED_DIR\"" in text
    # Every variable written to the environment file is a setting estore-ops knows (it rejects others).
    known = {f"ESTORE_{f.name.upper()}" for f in FIELDS}
    written = set(re.findall(r"^(ESTORE_[A-Z_]+)=", text, re.M))
    assert written and written <= known, written - known


def test_startup_python_block_compiles():
    text = _render_startup(SAMPLE)
    block = text.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    compile(block, "startup-python", "exec")


# --- checkov --------------------------------------------------------------------------------------


def _checkov() -> Path:
    tools = Path(os.environ.get("ESTORE_TOOLS_DIR") or REPO / ".tools")
    exe = tools / "checkov-venv" / "bin" / "checkov"
    if not exe.is_file():
        pytest.fail(f"checkov is not installed at {exe}: run `make tools` (tests/tools/install-checkov.sh) first.")
    return exe


def test_inline_checkov_skips_carry_a_reason():
    for path in TF_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_RE.search(line)
            if match:
                assert match.group(2) and len(match.group(2).strip()) >= 20, f"{path.name}:{number}: skip without a reason"


def test_checkov_finds_no_failed_check(tmp_path):
    exe = _checkov()
    env = {**os.environ, "DO_NOT_TRACK": "1", "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(
        [str(exe), "-d", str(TF_DIR), "--framework", "terraform", "secrets", "--skip-download", "-o", "json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    terraform = [r for r in reports if r.get("check_type") == "terraform"]
    assert terraform and terraform[0]["summary"]["resource_count"] > 0, proc.stdout[:2000]

    inline = {m.group(1) for p in TF_FILES for m in SKIP_RE.finditer(p.read_text())}
    failures = []
    for report in reports:
        summary = report["summary"]
        assert summary["parsing_errors"] == 0, summary
        for check in report["results"]["failed_checks"]:
            failures.append(f"{check['check_id']} {check['resource']} {check['file_path']}: {check['check_name']}")
        for check in report["results"]["skipped_checks"]:
            reason = (check.get("check_result") or {}).get("suppress_comment") or ""
            assert check["check_id"] in inline and reason.strip(), f"{check['check_id']} skipped without an inline reason"
    assert not failures, "checkov failed checks:\n" + "\n".join(failures)
    assert proc.returncode == 0


# --- event-driven arrival (notifications.tf) --------------------------------------------------------


def test_bucket_notification_publishes_finalize_events_of_the_landing_prefix(config):
    notification = _one(config, "google_storage_notification")
    assert notification["payload_format"] == "JSON_API_V1"
    assert notification["event_types"] == ["OBJECT_FINALIZE"]
    assert "google_storage_bucket.landing.name" in notification["bucket"]
    assert "google_pubsub_topic.landing_events.id" in notification["topic"]
    assert "local.landing_prefix" in notification["object_name_prefix"]
    prefix = {k: v for block in config["locals"] for k, v in block.items()}["landing_prefix"]
    # The same prefix estore-ops reads files from (ESTORE_LANDING=gs://BUCKET/landing on the VM).
    assert prefix == "landing/" and 'ESTORE_LANDING="gs://${bucket}/landing"' in (TF_DIR / "startup.sh.tftpl").read_text()


def test_subscription_has_retention_dead_letters_and_never_expires(config):
    subs = {name: body for _, name, body in _resources(config, "google_pubsub_subscription")}
    main = subs["landing_events"]
    assert "google_pubsub_topic.landing_events.id" in main["topic"]
    assert main["message_retention_duration"] == "604800s" and main["retain_acked_messages"] is False
    assert _block(main, "expiration_policy")["ttl"] == ""
    dead = _block(main, "dead_letter_policy")
    assert "google_pubsub_topic.landing_events_dead_letter.id" in dead["dead_letter_topic"]
    assert "var.notification_max_delivery_attempts" in str(dead["max_delivery_attempts"])
    assert _block(main, "retry_policy")["maximum_backoff"] == "600s"
    # Dead letters are kept somewhere (a topic without a subscription drops them).
    assert "google_pubsub_topic.landing_events_dead_letter.id" in subs["landing_events_dead_letter"]["topic"]


def test_pubsub_access_is_limited_to_the_notification_path(config):
    pubsub_iam = [(rtype, name, role, members) for rtype, name, role, members in _iam(config) if "pubsub" in rtype]
    by_name = {name: (rtype, role, members) for rtype, name, role, members in pubsub_iam}
    rtype, role, members = by_name["gcs_publishes_landing_events"]
    assert (rtype, role) == ("google_pubsub_topic_iam_member", "roles/pubsub.publisher")
    assert "google_storage_project_service_account.gcs.email_address" in members[0]
    vm = [(rtype, role) for rtype, _, role, members in pubsub_iam if members == ["${google_service_account.vm.member}"]]
    # The VM consumes and reads the one subscription: no topic, project or admin role.
    assert sorted(vm) == [("google_pubsub_subscription_iam_member", "roles/pubsub.subscriber"),
                          ("google_pubsub_subscription_iam_member", "roles/pubsub.viewer")]
    for rtype, name, role, members in pubsub_iam:
        if rtype == "google_pubsub_subscription_iam_member":
            assert _one_resource(config, rtype, name)["subscription"] == "${google_pubsub_subscription.landing_events.name}"
    assert not [r for r in _iam(config) if r[0].startswith("google_project_iam") and "pubsub" in r[2]]


def _one_resource(config, rtype: str, name: str) -> dict:
    return next(body for t, n, body in _resources(config, rtype) if n == name)


def test_the_vm_is_told_the_subscription_and_the_ingest_mode(config):
    outputs = {name: body for block in config.get("output", []) for name, body in block.items()}
    assert outputs["notifications_url"]["value"] == "pubsub://${var.project_id}/${google_pubsub_subscription.landing_events.name}"
    script = _one(config, "google_compute_instance")["metadata"]["startup-script"]
    assert "google_pubsub_subscription.landing_events.name" in script and "var.ingest" in script
    assert _variables(config)["ingest"]["default"] == "events"
    from estore_ops.config import validate_notifications

    validate_notifications(SAMPLE["notifications"], "test")  # what the VM gets is a valid setting
