"""Paths and URLs mean what they say: what could be read two ways is refused, with the right form.

- `file://relative/x` used to drop "relative" (a host name in a URL) and write at /x;
- a current folder with a '?' in its path cut the default warehouse path at the '?', while `config`
  showed the whole path;
- a query string on a `duckdb://` URL was silently ignored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from estore_ops.config import load_settings
from estore_ops.errors import ConfigError, ExitCode
from estore_ops.backends.stores import open_store
from tests.helpers import Workspace, event_lines


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("file://relative/x", "names the host 'relative', which a folder cannot have: for the folder 'relative/x' relative "
                              "to the current folder write the plain path relative/x, and for an absolute one write file:///relative/x."),
        ("file:relative/x", "is not a file:/// URL: write file:///absolute/path (three slashes) or the plain path relative/x."),
        ("file:///srv/land?x=1", "contains '?', '#' or '%'"),
        ("file:///srv/my%20landing", "write the plain path /srv/my%20landing instead"),
        ("file:///srv/a#b", "contains '?', '#' or '%'"),
    ],
)
@pytest.mark.parametrize("key", ["landing", "state"])
def test_ambiguous_file_urls_are_refused_with_the_right_form(tmp_path: Path, key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({key: value}, env={}, cwd=tmp_path)
    assert f"{key} = {value!r} (from flag --{key})" in str(err.value) and message in str(err.value)


def test_file_urls_with_an_empty_or_localhost_host_are_folders(tmp_path: Path) -> None:
    for url in (f"file://{tmp_path}/land", f"file://localhost{tmp_path}/land"):
        settings = load_settings({"landing": url}, env={}, cwd=tmp_path)
        assert open_store(settings.landing, "landing").local_root == tmp_path / "land"


def test_file_relative_url_never_writes_at_the_filesystem_root(ws: Workspace) -> None:
    import shutil
    import uuid

    folder = f"estore-test-{uuid.uuid4().hex[:12]}"  # file://data/<folder> used to mean /<folder>
    try:
        result = ws.cli("--state", f"file://data/{folder}", "cursor", "show")
        assert result.exit_code == ExitCode.USAGE
        assert f"write the plain path data/{folder}" in result.output
        assert not Path("/", folder).exists()
    finally:
        shutil.rmtree(Path("/", folder), ignore_errors=True)  # what the bug left at the root


@pytest.mark.parametrize("query", ["threads=4", "read_only=true", ""])
def test_query_strings_on_duckdb_urls_are_refused(tmp_path: Path, query: str) -> None:
    value = f"duckdb:///{tmp_path}/w.duckdb?{query}"
    with pytest.raises(ConfigError) as err:
        load_settings({"warehouse": value}, env={}, cwd=tmp_path)
    assert "estore-ops reads no parameters from a duckdb:// URL" in str(err.value)
    assert "load_memory_limit" in str(err.value)


def test_a_question_mark_in_the_working_folder_never_truncates_the_warehouse_path(tmp_path: Path) -> None:
    cwd = tmp_path / "exports?2019"
    cwd.mkdir()
    with pytest.raises(ConfigError) as err:
        load_settings(env={"ESTORE_WORK_DIR": str(tmp_path / "work")}, cwd=cwd)
    message = str(err.value)
    assert f"warehouse = 'duckdb:///{cwd}/data/warehouse.duckdb' (from default)" in message
    assert f"would cut it at '{tmp_path}/exports'" in message


def test_what_config_shows_is_the_path_that_is_used(ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    odd = tmp_path / "odd #1 [x] folder"
    monkeypatch.setenv("ESTORE_WAREHOUSE", f"duckdb:///{odd}/w.duckdb")
    shown = {r["key"]: r["value"] for r in json.loads(ws.cli("config", "--json").stdout)["settings"]}
    ws.add("a.csv", event_lines(2))
    assert ws.cli("load").exit_code == 0
    assert shown["warehouse"] == f"duckdb:///{odd}/w.duckdb" and (odd / "w.duckdb").is_file()
