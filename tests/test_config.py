"""Configuration precedence, provenance, validation and secret masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from estore_ops.config import Secret, load_settings
from estore_ops.errors import ConfigError
from tests.helpers import Workspace


def test_defaults_are_the_embedded_backend(tmp_path: Path) -> None:
    s = load_settings(env={}, cwd=tmp_path)
    assert s.landing == str(tmp_path / "data" / "landing")
    assert s.warehouse == f"duckdb:///{tmp_path / 'data' / 'warehouse.duckdb'}"
    assert s.state == str(tmp_path / "data" / "state")
    assert s.sources["landing"] == "default"


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    (tmp_path / "estore-ops.toml").write_text('landing = "from-file"\nstate = "state-from-file"\nmax_attempts = 7\n')
    env = {"ESTORE_LANDING": "/from/env", "ESTORE_STATE": "/state/env"}
    s = load_settings({"landing": "/from/flag"}, env=env, cwd=tmp_path)
    assert (s.landing, s.sources["landing"]) == ("/from/flag", "flag --landing")
    assert (s.state, s.sources["state"]) == ("/state/env", "env ESTORE_STATE")
    assert (s.max_attempts, s.sources["max_attempts"]) == (7, f"file {tmp_path / 'estore-ops.toml'}")
    assert s.sources["warehouse"] == "default"


def test_relative_paths_in_a_config_file_are_relative_to_that_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "estore.toml"
    conf.parent.mkdir()
    conf.write_text('landing = "landing"\nwarehouse = "duckdb:///wh.duckdb"\n')
    s = load_settings(config_file=conf, env={}, cwd=tmp_path / "elsewhere")
    assert s.landing == str(tmp_path / "etc" / "landing")
    assert s.warehouse == f"duckdb:///{tmp_path / 'etc' / 'wh.duckdb'}"


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    (tmp_path / "estore-ops.toml").write_text('landng = "x"\n')
    with pytest.raises(ConfigError, match=r"Unknown key 'landng' in .*estore-ops.toml. Known keys: landing, "):
        load_settings(env={}, cwd=tmp_path)


def test_unknown_environment_variable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown environment variable ESTORE_WAREHOSE"):
        load_settings(env={"ESTORE_WAREHOSE": "x"}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("warehouse", "postgres://x", "is not a warehouse URL"),
        ("warehouse", "bigquery://project", "is malformed: write bigquery://PROJECT/DATASET?location=US."),
        ("warehouse", "bigquery://p/d?region=EU", "has unknown parameters ['region']"),
        ("landing", "s3://bucket", "unknown scheme 's3'"),
        ("state", "gs://", "is malformed: write gs://BUCKET or gs://BUCKET/prefix."),
    ],
)
def test_malformed_urls_are_clear_errors(tmp_path: Path, key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({key: value}, env={}, cwd=tmp_path)
    assert message in str(err.value)
    assert f"{key} = {value!r} (from flag --{key})" in str(err.value)


def test_bad_number_names_its_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_attempts from env ESTORE_MAX_ATTEMPTS must be a non-negative whole number, got 'many'"):
        load_settings(env={"ESTORE_MAX_ATTEMPTS": "many"}, cwd=tmp_path)


def test_secrets_are_masked() -> None:
    secret = Secret("xoxb-123456789-abcdef")
    assert "xoxb" not in repr(secret) and "xoxb" not in str(secret) and f"{secret}" == "Secret('****')"


def test_config_command_shows_sources_and_masks_secrets(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-111-222-secretvalue")
    monkeypatch.setenv("ESTORE_MAX_ATTEMPTS", "5")
    result = ws.cli("--landing", "/srv/landing", "config", "--json")
    assert result.exit_code == 0
    assert "secretvalue" not in result.output
    rows = {r["key"]: r for r in json.loads(result.stdout)["settings"]}
    assert rows["landing"]["value"] == "/srv/landing" and rows["landing"]["source"] == "flag --landing"
    assert rows["max_attempts"]["value"] == 5 and rows["max_attempts"]["source"] == "env ESTORE_MAX_ATTEMPTS"
    assert rows["slack_bot_token"]["value"] == "****" and rows["slack_bot_token"]["source"] == "env SLACK_BOT_TOKEN"
    plain = ws.cli("config")
    assert "secretvalue" not in plain.output and "source=\"env SLACK_BOT_TOKEN\"" in plain.output


def test_cli_config_error_exits_2_with_the_message(ws: Workspace) -> None:
    (ws.root / "estore-ops.toml").write_text('bogus = 1\n')
    result = ws.cli("scan")
    assert result.exit_code == 2
    assert result.output.startswith("error: Unknown key 'bogus' in ")


def test_gcs_location_without_the_extra_says_what_to_install(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_google(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith(("google.cloud", "estore_ops.backends.stores.gcs")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_google)
    result = ws.cli("--landing", "gs://bucket/landing", "scan")
    assert result.exit_code == 2
    assert "needs the Google Cloud client libraries. Install them with: pip install 'estore-ops[gcp]'" in result.output


def test_load_memory_limit_is_validated_and_applied(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="load_memory_limit from env ESTORE_LOAD_MEMORY_LIMIT must be auto or a size like 512MB or 2GB"):
        load_settings(env={"ESTORE_LOAD_MEMORY_LIMIT": "lots"}, cwd=tmp_path)
    from estore_ops.runtime import Runtime

    rt = Runtime(load_settings(env={"ESTORE_LOAD_MEMORY_LIMIT": "300MB"}, cwd=tmp_path))
    wh = rt.warehouse()
    try:
        limit = wh.query("SELECT current_setting('memory_limit')")[0][0]
    finally:
        wh.close()
    assert limit.replace(" ", "") in ("286.1MiB", "300.0MB", "300MB"), limit


def test_auto_memory_limit_grows_with_duckdb_threads(tmp_path: Path) -> None:
    """A fixed 512MB limit made a 10M-row load run out of memory with 32 threads."""
    from estore_ops.runtime import Runtime
    from estore_ops.backends.warehouses.duckdb import auto_memory_limit

    assert [auto_memory_limit(t) for t in (1, 2, 8, 16, 64)] == ["512MB", "512MB", "512MB", "1024MB", "4096MB"]
    wh = Runtime(load_settings(env={}, cwd=tmp_path)).warehouse()  # the default is auto
    try:
        (threads, limit), = wh.query("SELECT current_setting('threads'), current_setting('memory_limit')")
    finally:
        wh.close()
    number, unit = limit.split()
    shown_mb = float(number) * (2**20 / 1_000_000 if unit == "MiB" else 2**30 / 1_000_000 if unit == "GiB" else 1)
    assert abs(shown_mb - max(512, 64 * int(threads))) < 1, limit


def test_auto_memory_limit_stays_under_the_memory_the_process_may_use(tmp_path: Path) -> None:
    from estore_ops.backends.warehouses.duckdb import auto_memory_limit, usable_memory_bytes

    assert auto_memory_limit(64, 2_000_000_000) == "1600MB"  # a 2GB container on a 64-core host
    assert auto_memory_limit(2, 500_000_000) == "400MB"
    assert auto_memory_limit(2, 64_000_000_000) == "512MB"
    assert (usable_memory_bytes() or 0) > 0


def test_work_dir_with_pattern_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"work_dir from env ESTORE_WORK_DIR .* contains one of \* \? \[ \] \{ \}"):
        load_settings(env={"ESTORE_WORK_DIR": str(tmp_path / "work[1]")}, cwd=tmp_path)
