"""Upgrading a deployment built by the previous release (issue 18), on the embedded default.

The previous release (the commit pinned in tests/tools/install-previous-release.sh, installed in its
own virtual environment by `make tools`) builds a deployment as its timers would have: two sample
files loaded, a bad file quarantined after max_attempts loads, transform, snapshot, a December file
of purchases (a real change), transform, snapshot. THIS code then runs `upgrade`, and `load`,
`transform` and `snapshot` as the timers would, and the test checks that nothing was lost:
- every file is still loaded once, with exactly its rows (per file and generation);
- the quarantined file stays quarantined;
- the snapshot history is intact: with no new data nothing changes; after a real change, the old
  closed rows are all still there and the new ones are exactly the users whose values changed;
- the marts equal a fresh full build on the same data;
- `upgrade --dry-run` changes no byte of the state or the warehouse.

The landing folder is never copied: a copy would be a new version of every file (a local file's
generation includes its ctime). Copies of a deployment share the original landing folder.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import HEADER, write_csv
from tests.upgrade_peer import (
    BAD_FILE,
    MARTS,
    SNAPSHOTS,
    Recorded,
    build_old_deployment,
    december_purchases,
    new,
    record,
)

pytestmark = pytest.mark.slow

CHECK_COLS = {
    "snap_user_rfm": ["rfm_segment", "recency_score", "frequency_score", "monetary_score", "rfm_score"],
    "snap_user_status": ["activity_status", "is_churned", "customer_ltv", "purchase_count"],
}
SOURCE_MART = {"snap_user_rfm": "dim_user_rfm", "snap_user_status": "dim_users"}


def _copy_deployment(src: Path, dst: Path) -> dict[str, str]:
    """State and warehouse copied; the landing stays where it is. Returns the env that points there."""
    (dst / "data").mkdir(parents=True)
    shutil.copytree(src / "data" / "state", dst / "data" / "state")
    shutil.copy2(src / "data" / "warehouse.duckdb", dst / "data" / "warehouse.duckdb")
    return {"ESTORE_LANDING": str(src / "data" / "landing")}


def _digests(root: Path) -> dict[str, bytes]:
    files = [root / "data" / "warehouse.duckdb", *sorted((root / "data" / "state").rglob("*"))]
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.is_file()}


@pytest.fixture(scope="module")
def old_deployment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("deployment")
    before = build_old_deployment(root)
    pristine = tmp_path_factory.mktemp("pristine")
    env = _copy_deployment(root, pristine)
    return {"root": root, "before": before, "pristine": pristine, "pristine_env": env}


@pytest.fixture(scope="module")
def upgraded(old_deployment: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The old deployment upgraded in place by this code, then run the way its timers run it."""
    root: Path = old_deployment["root"]
    out: dict[str, Any] = {}
    out["upgrade"] = json.loads(new(root, "upgrade", "--json").stdout)
    out["after_upgrade"] = record(root)
    out["load_after_upgrade"] = json.loads(new(root, "load", "--json").stdout)
    out["transform"] = json.loads(new(root, "transform", "--json").stdout)
    new(root, "snapshot")
    out["after_rerun"] = record(root)
    # Another real change, loaded and built by the new code alone.
    write_csv(root / "data" / "landing" / "2020-Jan.csv",
              [line.replace("2019-12-", "2020-01-").replace(",dec-", ",jan-") for line in december_purchases(root)[::2]],
              header=HEADER)
    out["load_new_file"] = json.loads(new(root, "load", "--json").stdout)
    new(root, "transform", "--no-test")
    new(root, "snapshot")
    out["after_change"] = record(root)
    # The same data built from scratch by this code.
    fresh = tmp_path_factory.mktemp("fresh")
    env = _copy_deployment(root, fresh)
    new(fresh, "transform", "--full-refresh", "--no-test", env=env)
    out["fresh"] = record(fresh)
    return out


def test_the_old_deployment_is_what_the_test_needs(old_deployment: dict[str, Any]) -> None:
    before: Recorded = old_deployment["before"]
    assert before.state["files"][BAD_FILE]["status"] == "quarantined"
    assert before.state["files"][BAD_FILE]["attempts"] == 3
    assert {f for f, _ in before.rows_by_version} == {"2019-Oct.csv", "2019-Nov.csv.gz", "2019-Dec.csv"}
    for name in SNAPSHOTS:
        assert before.closed(name), f"{name}: the December purchases closed no row; the test would prove nothing"
        assert before.open(name)


def test_dry_run_changes_nothing(old_deployment: dict[str, Any]) -> None:
    copy: Path = old_deployment["pristine"]
    before = _digests(copy)
    result = new(copy, "upgrade", "--dry-run", "--json", env=old_deployment["pristine_env"])
    assert json.loads(result.stdout)["dry_run"] is True
    after = _digests(copy)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert changed == []


def test_upgrade_reports_every_step(upgraded: dict[str, Any]) -> None:
    report = upgraded["upgrade"]
    assert [s["step"] for s in report["steps"]] == [
        "systemd units and Terraform", "state document", "raw events table", "incremental models", "snapshots"]
    assert report["ok"] is True and report["left"] == []
    assert not [s for s in report["steps"] if s["status"] == "failed"]


def test_every_file_stays_loaded_once_with_its_rows(old_deployment: dict[str, Any], upgraded: dict[str, Any]) -> None:
    before: Recorded = old_deployment["before"]
    assert upgraded["after_upgrade"].rows_by_version == before.rows_by_version
    assert upgraded["load_after_upgrade"]["files_loaded"] == 0  # nothing reloaded
    assert upgraded["after_rerun"].rows_by_version == before.rows_by_version
    after = upgraded["after_change"].rows_by_version
    assert {k: v for k, v in after.items() if k[0] != "2020-Jan.csv"} == before.rows_by_version
    assert [k[0] for k in after if k not in before.rows_by_version] == ["2020-Jan.csv"]
    for state in (upgraded["after_upgrade"].state, upgraded["after_rerun"].state):
        assert state["files"] == before.state["files"]
        assert state.get("folded", {}) == before.state.get("folded", {})


def test_the_quarantined_file_stays_quarantined(upgraded: dict[str, Any]) -> None:
    for stage in ("after_upgrade", "after_rerun", "after_change"):
        rec = upgraded[stage].state["files"][BAD_FILE]
        assert (rec["status"], rec["attempts"]) == ("quarantined", 3), stage
        assert BAD_FILE not in {f for f, _ in upgraded[stage].rows_by_version}
    assert upgraded["load_new_file"]["files_loaded"] == 1


def test_load_transform_and_snapshot_run_normally(upgraded: dict[str, Any]) -> None:
    assert upgraded["transform"]["ok"] is True
    assert upgraded["transform"]["notes"] == []  # same marts contract: no model needed a rebuild
    loaded = upgraded["load_new_file"]
    assert [f["name"] for f in loaded["files"] if f["status"] == "loaded"] == ["2020-Jan.csv"]


def test_snapshot_history_is_intact(old_deployment: dict[str, Any], upgraded: dict[str, Any]) -> None:
    before: Recorded = old_deployment["before"]
    rerun: Recorded = upgraded["after_rerun"]
    after: Recorded = upgraded["after_change"]
    for name in SNAPSHOTS:
        # No new data: not one row changes (no type change closed rows, nothing was rebuilt).
        assert rerun.snapshots[name] == before.snapshots[name], name
        # A real change: every earlier row is kept as it was, except that a changed user's open row closes.
        cols = after.snapshot_columns[name]
        key, valid_to = cols.index("dbt_scd_id"), cols.index("dbt_valid_to")
        earlier = {row[key]: row for row in rerun.snapshots[name]}
        now = {row[key]: row for row in after.snapshots[name]}
        assert set(earlier) <= set(now), f"{name}: rows of the history were lost"
        for scd_id, row in earlier.items():
            if row[valid_to] is not None:
                assert now[scd_id] == row, f"{name}: a closed row changed"
        newly_closed = [i for i, row in earlier.items() if row[valid_to] is None and now[i][valid_to] is not None]
        added = [now[i] for i in set(now) - set(earlier)]
        assert newly_closed, f"{name}: the January file changed nothing; the test would prove nothing"
        # Exactly the users whose checked values changed got a new version.
        checked = [cols.index(c) for c in CHECK_COLS[name]]
        user = cols.index("user_id")
        changed_users = sorted(earlier[i][user] for i in newly_closed)
        assert sorted(row[user] for row in added if any(
            row[user] == earlier[i][user] for i in newly_closed)) == changed_users
        for i in newly_closed:
            new_row = next(r for r in added if r[user] == earlier[i][user])
            assert [new_row[c] for c in checked] != [earlier[i][c] for c in checked], f"{name}: a row closed with no change"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def test_marts_equal_a_fresh_full_build(upgraded: dict[str, Any]) -> None:
    built: Recorded = upgraded["after_change"]
    fresh: Recorded = upgraded["fresh"]
    for name in MARTS:
        assert built.mart_columns[name] == fresh.mart_columns[name], name
        assert len(built.marts[name]) == len(fresh.marts[name]), name
        for a, b in zip(built.marts[name], fresh.marts[name], strict=True):
            assert all(_same(x, y) for x, y in zip(a, b, strict=True)), f"{name}: {a} != {b}"
