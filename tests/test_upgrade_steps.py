"""The generic upgrade steps, each against a synthetic change of what an earlier version stored.

- state document: a format chain (1 -> 2) with compare-and-swap and a backup; a newer format refused;
- raw events: a table of an older shape (narrower types, a missing lineage column) altered in place,
  by `upgrade` and by a plain `load`, without reloading a file;
- incremental models: a model that now builds other column types is rebuilt in full before the build
  (dbt alone fails halfway), or the build stops before it starts when it cannot be rebuilt;
- snapshots: the columns of a snapshot table get the new types in place, history untouched;
- BigQuery: which type changes ALTER COLUMN SET DATA TYPE does in place (Google's coercion table);
- systemd units of an earlier version detected and replaced, stale ones removed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from estore_ops import jobs

from estore_ops.ingest import state as state_module
from estore_ops.config import load_settings
from estore_ops.deploy import systemd as sd
from estore_ops.errors import CorruptStateError, UpgradeRequiredError
from estore_ops.testing.generate import generate_files
from estore_ops.runtime import Runtime
from estore_ops.ingest.state_formats import MIGRATIONS, StateMigration
from estore_ops.analytics.transform import default_project_dir, run_dbt
from estore_ops.deploy.upgrade import dbt_schema, guard, raw_table, steps
from estore_ops.deploy.upgrade.dbt_schema import ModelCheck, Node, replace_relations
from estore_ops.deploy.upgrade.tables import ColumnChange, ColumnDiff, TableRef
from estore_ops.deploy.upgrade.tables_bigquery import BigQueryTableEditor, coercible_in_place
from tests.gcp_emulators import bq_dataset, bq_emulator, fake_gcs  # noqa: F401 - fixtures
from tests.helpers import event_lines, write_csv

# -- helpers ----------------------------------------------------------------------------------------------


def runtime(root: Path, landing: Path, **overrides: Any) -> Runtime:
    flags = {"landing": str(landing), "state": str(root / "state"), "warehouse": f"duckdb:///{root / 'warehouse.duckdb'}",
             "work_dir": str(root / "work"), **overrides}
    return Runtime(load_settings(flags, env={}, cwd=root))


def copy_deployment(src: Path, dst: Path) -> Path:
    """State and warehouse only: the landing folder is shared (a copied file is a new version)."""
    dst.mkdir(parents=True)
    shutil.copytree(src / "state", dst / "state")
    shutil.copy2(src / "warehouse.duckdb", dst / "warehouse.duckdb")
    return dst


def query(root: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def column_types(root: Path, schema: str, table: str) -> dict[str, str]:
    return dict(query(root, f"SELECT column_name, data_type FROM information_schema.columns "
                            f"WHERE table_schema = '{schema}' AND table_name = '{table}'"))


def digests(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in [root / "warehouse.duckdb", *sorted((root / "state").rglob("*"))] if p.is_file()}


def changed_project(tmp: Path, edits: dict[str, list[tuple[str, str]]]) -> Path:
    """A copy of the dbt project with text replaced in some files (the 'new code')."""
    project = tmp / "dbt"
    shutil.copytree(default_project_dir(), project, ignore=shutil.ignore_patterns("target", "logs"))
    for rel, pairs in edits.items():
        path = project / rel
        text = path.read_text()
        for old, new in pairs:
            assert old in text, f"{old!r} not in {rel}"
            text = text.replace(old, new)
        path.write_text(text)
    return project


# What a later version might change: wider money in fct_sessions (an incremental model on DuckDB) and,
# in dim_users (a table, read by snap_user_status), wider money and a flag as a BOOLEAN.
SESSIONS_MONEY = ("{{ estore_ops.money('sum(revenue)') }} as total_revenue", "cast(sum(revenue) as decimal(20, 2)) as total_revenue")
WIDER = {
    "models/marts/fct_sessions.sql": [SESSIONS_MONEY],
    "models/marts/dim_users.sql": [
        ("{{ estore_ops.money('revenue_sum') }} as customer_ltv,", "cast(revenue_sum as decimal(20, 2)) as customer_ltv,"),
        ("             and days_since_last_activity > {{ churn_days }} then 1\n        else 0\n    end as is_churned,",
         "             and days_since_last_activity > {{ churn_days }} then true\n        else false\n    end as is_churned,"),
    ],
}
MANUAL = {"models/marts/fct_sessions.sql": [
    SESSIONS_MONEY,
    ("'replace': 'sessions'},", "'replace': 'sessions', 'estore_ops': {'full_refresh': 'manual'}},"),
]}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A deployment built by this code with the shipped project: loaded, transformed, snapshotted."""
    root = tmp_path_factory.mktemp("base")
    landing = tmp_path_factory.mktemp("landing")
    generate_files(landing, months=2, rows_per_month=1500, users=150, seed=7)
    rt = runtime(root, landing)
    assert jobs.load(rt).ok
    assert jobs.transform(rt, no_test=True).ok
    assert jobs.snapshot(rt).ok
    return {"root": root, "landing": landing}


# -- state document ---------------------------------------------------------------------------------------


@pytest.fixture
def format_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """This code reads format 2, which gives each record `updated_at` (format 1 could lack it)."""
    def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
        for rec in doc["files"].values():
            rec["updated_at"] = rec.get("updated_at") or rec.get("loaded_at") or "1970-01-01T00:00:00+00:00"
        return doc

    monkeypatch.setattr(state_module, "FORMAT_VERSION", 2)
    monkeypatch.setitem(MIGRATIONS, 1, StateMigration(1, "every record has updated_at", upgrade))


def _format_1_state(root: Path, landing: Path) -> bytes:
    write_csv(landing / "a.csv", event_lines(20))
    write_csv(landing / "b.csv", event_lines(10, start=100))
    rt = runtime(root, landing)
    assert jobs.load(rt).ok
    cursor = root / "state" / "cursor.json"
    doc = json.loads(cursor.read_bytes())
    doc["format_version"] = 1  # as the earlier version wrote it
    for rec in doc["files"].values():
        rec.pop("updated_at")  # an earlier format without it
    cursor.write_bytes(json.dumps(doc).encode())
    return cursor.read_bytes()


def test_upgrade_migrates_the_state_format_in_place_and_keeps_a_backup(tmp_path: Path, format_2: None) -> None:
    landing = tmp_path / "landing"
    old = _format_1_state(tmp_path, landing)
    rt = runtime(tmp_path, landing)

    dry = jobs.upgrade(rt, dry_run=True, unit_dir=tmp_path / "units")
    step = next(s for s in dry.steps if s.name == "state document")
    assert step.status == "planned" and "format 2" in step.would_do[0]
    assert (tmp_path / "state" / "cursor.json").read_bytes() == old  # the dry run wrote nothing
    assert not (tmp_path / "state" / "cursor.v1.json").exists()

    result = jobs.upgrade(rt.next_run(), unit_dir=tmp_path / "units")
    assert result.ok, result.as_dict()
    doc = json.loads((tmp_path / "state" / "cursor.json").read_bytes())
    assert doc["format_version"] == 2
    assert all(rec["updated_at"] for rec in doc["files"].values())
    assert (tmp_path / "state" / "cursor.v1.json").read_bytes() == old
    # Every file stays loaded: nothing pending, nothing reloaded.
    assert jobs.scan(rt).pending == []
    assert jobs.load(rt.next_run()).loaded == []
    # Upgrading again finds nothing to do, and the format-1 backup is never overwritten.
    again = jobs.upgrade(rt.next_run(), unit_dir=tmp_path / "units")
    assert next(s for s in again.steps if s.name == "state document").status == "ok"
    assert (tmp_path / "state" / "cursor.v1.json").read_bytes() == old


def test_a_plain_load_migrates_the_state_too_with_the_backup(tmp_path: Path, format_2: None) -> None:
    landing = tmp_path / "landing"
    old = _format_1_state(tmp_path, landing)
    write_csv(landing / "c.csv", event_lines(5, start=500))
    result = jobs.load(runtime(tmp_path, landing))
    assert [o.name for o in result.loaded] == ["c.csv"]  # a and b are not reloaded
    assert json.loads((tmp_path / "state" / "cursor.json").read_bytes())["format_version"] == 2
    assert (tmp_path / "state" / "cursor.v1.json").read_bytes() == old
    assert query(tmp_path, "SELECT _source_file, count(*) FROM raw.events GROUP BY 1 ORDER BY 1") == [
        ("a.csv", 20), ("b.csv", 10), ("c.csv", 5)]


def test_state_migration_is_a_compare_and_swap(tmp_path: Path, format_2: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that saves between the upgrade's read and write is not overwritten: the change is re-applied."""
    landing = tmp_path / "landing"
    _format_1_state(tmp_path, landing)
    rt = runtime(tmp_path, landing)
    real_save = state_module.StateStore.save
    raced = []

    def save(self: state_module.StateStore, base: Any, state: Any) -> Any:
        if not raced:
            raced.append(True)
            other = self.read()
            other.state.forget("b.csv")  # e.g. `cursor reset --file b.csv` in between
            real_save(self, other, other.state)
        return real_save(self, base, state)

    monkeypatch.setattr(state_module.StateStore, "save", save)
    assert jobs.upgrade(rt, unit_dir=tmp_path / "units").ok
    doc = json.loads((tmp_path / "state" / "cursor.json").read_bytes())
    assert doc["format_version"] == 2 and sorted(doc["files"]) == ["a.csv"]  # the other writer's change kept


def test_a_newer_state_format_is_refused_with_exit_3(tmp_path: Path) -> None:
    (tmp_path / "data" / "state").mkdir(parents=True)
    doc = {"format_version": state_module.FORMAT_VERSION + 1, "files": {}, "folded": {}}
    (tmp_path / "data" / "state" / "cursor.json").write_text(json.dumps(doc))
    from tests.helpers import Workspace

    ws = Workspace(tmp_path)
    for args in (("upgrade",), ("upgrade", "--dry-run")):
        proc = ws.run(*args, "--unit-dir", str(tmp_path / "units"))
        assert proc.returncode == 3, proc.stderr
        assert "written by a newer estore-ops" in proc.stderr and "upgrade estore-ops" in proc.stderr


def test_a_format_without_a_migration_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, format_2: None) -> None:
    monkeypatch.setattr(state_module, "FORMAT_VERSION", 3)  # 1 -> 2 registered, 2 -> 3 missing
    with pytest.raises(CorruptStateError, match="format 2, and this estore-ops has no migration from it to format 3"):
        state_module.IngestState.from_bytes(b'{"format_version": 1, "files": {}}', "cursor.json")


# -- raw events -------------------------------------------------------------------------------------------


def _old_raw_table(root: Path, landing: Path) -> dict[tuple[str, int], int]:
    """Load with this code, then give raw.events the shape an earlier version might have had."""
    write_csv(landing / "a.csv", event_lines(30))
    write_csv(landing / "b.csv.gz", event_lines(20, start=300))
    assert jobs.load(runtime(root, landing)).ok
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    con.execute("ALTER TABLE raw.events ALTER COLUMN user_id SET DATA TYPE INTEGER")
    con.execute("ALTER TABLE raw.events ALTER COLUMN price SET DATA TYPE FLOAT")
    con.execute("ALTER TABLE raw.events DROP COLUMN _loaded_at")
    con.close()
    return dict(((f, g), n) for f, g, n in query(root, "SELECT _source_file, _source_generation, count(*) FROM raw.events GROUP BY ALL"))


def test_upgrade_alters_an_older_raw_table_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    landing = tmp_path / "landing"
    rows = _old_raw_table(tmp_path, landing)
    prices = query(tmp_path, "SELECT _source_file, sum(price)::DECIMAL(18,2) FROM raw.events GROUP BY 1 ORDER BY 1")
    monkeypatch.setitem(raw_table.RAW_BACKFILL, "_loaded_at", {"duckdb": "TIMESTAMPTZ '2019-01-01 00:00:00+00'"})
    rt = runtime(tmp_path, landing)

    before = digests(tmp_path)
    dry = jobs.upgrade(rt, dry_run=True, unit_dir=tmp_path / "units")
    assert digests(tmp_path) == before
    step = next(s for s in dry.steps if s.name == "raw events table")
    assert step.status == "planned"
    assert any("user_id: INTEGER -> BIGINT" in f for f in step.found) and any("add column _loaded_at" in f for f in step.found)

    result = jobs.upgrade(rt.next_run(), unit_dir=tmp_path / "units")
    assert next(s for s in result.steps if s.name == "raw events table").status == "done", result.as_dict()
    types = column_types(tmp_path, "raw", "events")
    assert (types["user_id"], types["price"], types["_loaded_at"]) == ("BIGINT", "DOUBLE", "TIMESTAMP WITH TIME ZONE")
    after = dict(((f, g), n) for f, g, n in query(tmp_path, "SELECT _source_file, _source_generation, count(*) FROM raw.events GROUP BY ALL"))
    assert after == rows
    assert query(tmp_path, "SELECT _source_file, sum(price)::DECIMAL(18,2) FROM raw.events GROUP BY 1 ORDER BY 1") == prices
    assert query(tmp_path, "SELECT DISTINCT _loaded_at::VARCHAR FROM raw.events") == [("2019-01-01 00:00:00+00",)]
    assert jobs.load(rt.next_run()).loaded == []


def test_a_plain_load_upgrades_an_older_raw_table_before_the_first_file(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    rows = _old_raw_table(tmp_path, landing)
    write_csv(landing / "c.csv", event_lines(7, start=900))
    result = jobs.load(runtime(tmp_path, landing))
    assert [o.name for o in result.loaded] == ["c.csv"] and result.ok
    assert column_types(tmp_path, "raw", "events")["_loaded_at"] == "TIMESTAMP WITH TIME ZONE"
    after = dict(((f, g), n) for f, g, n in query(tmp_path, "SELECT _source_file, _source_generation, count(*) FROM raw.events GROUP BY ALL"))
    assert {k: v for k, v in after.items() if k[0] != "c.csv"} == rows
    assert query(tmp_path, "SELECT count(*), count(_loaded_at) FROM raw.events WHERE _source_file = 'c.csv'") == [(7, 7)]


# -- BigQuery: what changes in place ----------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "in_place"), [
    # https://cloud.google.com/bigquery/docs/reference/standard-sql/conversion_rules ("Coerce to")
    ("INT64", "NUMERIC", True), ("INTEGER", "BIGNUMERIC", True), ("INT64", "FLOAT64", True),
    ("NUMERIC", "BIGNUMERIC", True), ("NUMERIC", "FLOAT64", True), ("BIGNUMERIC", "FLOAT64", True),
    ("DATE", "DATETIME", True),
    ("FLOAT64", "NUMERIC", False), ("FLOAT", "BIGNUMERIC", False), ("BOOL", "INT64", False),
    ("BOOLEAN", "INT64", False), ("STRING", "INT64", False), ("TIMESTAMP", "DATE", False), ("NUMERIC", "INT64", False),
    # parameterized types: widened in place, never narrowed
    ("NUMERIC(10,2)", "NUMERIC(12,2)", True), ("NUMERIC(10,2)", "NUMERIC(12,4)", True),
    ("NUMERIC(10,2)", "NUMERIC(10,4)", False), ("NUMERIC(12,2)", "NUMERIC(10,2)", False),
    ("NUMERIC(10,2)", "NUMERIC", True), ("NUMERIC", "NUMERIC(10,2)", False),
    ("STRING(10)", "STRING(20)", True), ("STRING(20)", "STRING(10)", False), ("STRING(10)", "STRING", True),
])
def test_bigquery_changes_in_place_only_what_it_coerces(old: str, new: str, in_place: bool) -> None:
    assert coercible_in_place(old, new) is in_place


class FakeBigQueryEditor(BigQueryTableEditor):
    """The BigQuery rules without a client: a raw table with an older schema."""

    def __init__(self, existing: list[tuple[str, str]]) -> None:
        self.existing = existing
        self.applied: list[list[ColumnChange]] = []
        self.rewritten: list[list[ColumnChange]] = []
        self.warehouse = type("W", (), {"raw_schema": "raw", "project": "p"})()

    def columns(self, table: TableRef) -> list[tuple[str, str]]:
        return self.existing

    def rewrite_bytes(self, table: TableRef) -> int:
        return 5 * 1024**3

    def apply(self, table: TableRef, changes: list[ColumnChange]) -> None:
        self.applied.append(changes)

    def rewrite(self, table: TableRef, changes: list[ColumnChange]) -> None:
        self.rewritten.append(changes)


def _bigquery_raw(**types: str) -> list[tuple[str, str]]:
    return [(name, types.get(name, kind)) for name, kind in raw_table.wanted_columns("bigquery") if types.get(name) != "-"]


def test_bigquery_raw_table_alters_in_place_and_rewrites_only_with_consent() -> None:
    # An earlier raw table: user_id NUMERIC-compatible INT64 is fine; product_id was INT64 and price FLOAT64,
    # and suppose this version wants product_id NUMERIC and price NUMERIC, plus a new column.
    editor = FakeBigQueryEditor(_bigquery_raw(_loaded_at="-"))
    wanted = raw_table.wanted_columns("bigquery")
    changed = [(n, {"product_id": "NUMERIC", "price": "NUMERIC"}.get(n, t)) for n, t in wanted]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(raw_table, "wanted_columns", lambda dialect: changed)
        plan = raw_table.plan_raw_table(editor, allow_rewrite=False)
        assert len(plan.actions) == 1 and "product_id: INT64 -> NUMERIC" in plan.actions[0].description
        assert "add column _loaded_at TIMESTAMP" in plan.actions[0].description
        assert plan.left and "price: FLOAT64 -> NUMERIC" in plan.left[0] and "5.0 GB" in plan.left[0]
        assert "--allow-rewrite" in plan.left[0]
        plan.actions[0].apply()
        assert [c.column for c in editor.applied[0]] == ["product_id", "_loaded_at"] and editor.rewritten == []

        consented = raw_table.plan_raw_table(editor, allow_rewrite=True)
        assert consented.left == [] and len(consented.actions) == 2
        consented.actions[1].apply()
        assert [c.column for c in editor.rewritten[0]] == ["price"]


def test_a_bigquery_rewrite_casts_only_the_changed_columns_and_keeps_every_row() -> None:
    editor = FakeBigQueryEditor([])
    sql = editor.rewrite_sql(TableRef("snapshots", "snap_user_status"), [
        ColumnChange("type", "customer_ltv", "NUMERIC", "FLOAT64", in_place=False),
        ColumnChange("type", "is_churned", "INT64", "BOOL", in_place=False),
    ])
    # One query job overwrites the table with it (WRITE_TRUNCATE keeps the table, its partitioning and
    # clustering are passed again); dbt_valid_from / dbt_valid_to and every other column pass through.
    assert sql == ("SELECT * REPLACE (CAST(`customer_ltv` AS NUMERIC) AS `customer_ltv`, CAST(`is_churned` AS INT64) "
                   "AS `is_churned`) FROM `p.snapshots.snap_user_status`")


def test_a_load_never_rewrites_bigquery_raw_events_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    editor = FakeBigQueryEditor(_bigquery_raw(price="BOOL"))  # not coercible to FLOAT64
    monkeypatch.setattr(guard, "editor_for", lambda warehouse: editor)
    warehouse = object()
    with pytest.raises(UpgradeRequiredError, match=r"estore-ops upgrade --allow-rewrite.*Nothing was loaded"):
        guard.upgrade_raw_table(warehouse)  # type: ignore[arg-type]  # a bare object: refused before use
    assert editor.applied == [] and editor.rewritten == []


# -- incremental models and snapshots -----------------------------------------------------------------------


def test_a_model_whose_columns_changed_is_rebuilt_before_the_build_and_snapshots_keep_history(
    base: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = changed_project(tmp_path, WIDER)
    snapshot_before = query(base["root"], "SELECT * FROM snapshots.snap_user_status ORDER BY user_id, dbt_valid_from")

    # Without the check, dbt stops halfway: fct_events is built, then fct_sessions fails on its schema.
    bare = copy_deployment(base["root"], tmp_path / "bare")
    target = {"type": "duckdb", "path": str(bare / "warehouse.duckdb"), "threads": 2, "schema": "main"}
    failed = run_dbt(project_dir=project, target=target, work_dir=bare / "work", command="build", no_test=True, quiet=True)
    assert not failed.ok
    assert {n.name: n.status for n in failed.nodes}["fct_events"] == "success"
    assert "fct_sessions" in (failed.error or "") and "out of sync" in " ".join(n.message or "" for n in failed.failed_nodes)

    # With it: fct_sessions is rebuilt in full first, and the build succeeds.
    root = copy_deployment(base["root"], tmp_path / "upgraded")
    rt = runtime(root, base["landing"], dbt_project_dir=str(project))
    result = jobs.transform(rt, no_test=True)
    assert result.ok, result.error
    assert len(result.notes) == 1 and "fct_sessions" in result.notes[0] and "total_revenue" in result.notes[0]
    assert column_types(root, "marts", "fct_sessions")["total_revenue"] == "DECIMAL(20,2)"
    types = column_types(root, "marts", "dim_users")
    assert (types["customer_ltv"], types["is_churned"]) == ("DECIMAL(20,2)", "BOOLEAN")
    # The rebuilt model equals a fresh full build of the new code on the same data.
    fresh = copy_deployment(root, tmp_path / "fresh")
    assert jobs.transform(runtime(fresh, base["landing"], dbt_project_dir=str(project)), full_refresh=True, no_test=True).ok
    for table, key in (("fct_sessions", "session_id"), ("dim_users", "user_id")):
        assert query(root, f"SELECT * FROM marts.{table} ORDER BY {key}") == query(fresh, f"SELECT * FROM marts.{table} ORDER BY {key}")

    # The next transform does not compile the project again for the check (same code, tables match).
    monkeypatch.setattr(guard, "compile_manifest", lambda *a, **k: pytest.fail("checked again"))
    assert jobs.transform(rt.next_run(), no_test=True).notes == []
    monkeypatch.undo()

    # Without the snapshot migration, dbt snapshot keeps the old types in the history table...
    plain = copy_deployment(root, tmp_path / "plain")
    target = {"type": "duckdb", "path": str(plain / "warehouse.duckdb"), "threads": 2, "schema": "main"}
    assert run_dbt(project_dir=project, target=target, work_dir=plain / "work", command="snapshot", quiet=True).ok
    kept = column_types(plain, "snapshots", "snap_user_status")
    assert (kept["customer_ltv"], kept["is_churned"]) == ("DECIMAL(18,2)", "INTEGER")
    # ...with it, the columns get the new types in place and the history is the same rows.
    snap = jobs.snapshot(rt.next_run())
    assert snap.ok and any("snap_user_status" in n for n in snap.notes)
    types = column_types(root, "snapshots", "snap_user_status")
    assert (types["customer_ltv"], types["is_churned"]) == ("DECIMAL(20,2)", "BOOLEAN")
    after = query(root, "SELECT * FROM snapshots.snap_user_status ORDER BY user_id, dbt_valid_from")
    cols = [c for c, in query(root, "SELECT column_name FROM information_schema.columns WHERE table_name = 'snap_user_status' ORDER BY ordinal_position")]
    assert len(after) == len(snapshot_before)  # no row closed, none added: nothing really changed
    ltv, churned, valid = cols.index("customer_ltv"), cols.index("is_churned"), (cols.index("dbt_valid_from"), cols.index("dbt_valid_to"))
    for old_row, new_row in zip(snapshot_before, after, strict=True):
        assert [new_row[i] for i in valid] == [old_row[i] for i in valid]
        assert new_row[ltv] == old_row[ltv]
        assert new_row[churned] is bool(old_row[churned])


def test_a_model_that_cannot_be_rebuilt_stops_the_build_before_it_starts(base: dict[str, Path], tmp_path: Path) -> None:
    project = changed_project(tmp_path, MANUAL)
    root = copy_deployment(base["root"], tmp_path / "d")
    rt = runtime(root, base["landing"], dbt_project_dir=str(project))
    # New raw rows (as a load would add): a build that started would put them in fct_events.
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    con.execute("INSERT INTO raw.events SELECT * REPLACE ('late.csv' AS _source_file, now() AS _loaded_at) FROM raw.events LIMIT 5")
    con.close()
    with pytest.raises(UpgradeRequiredError) as raised:
        jobs.transform(rt, no_test=True)
    assert "estore-ops transform --full-refresh --select fct_sessions" in str(raised.value)
    assert "total_revenue: DECIMAL(18,2) -> DECIMAL(20,2)" in str(raised.value)
    assert query(root, "SELECT count(*) FROM marts.fct_events WHERE _source_file = 'late.csv'") == [(0,)]
    plan = jobs.upgrade(rt.next_run(), dry_run=True, unit_dir=tmp_path / "units")
    models = next(s for s in plan.steps if s.name == "incremental models")
    assert models.status == "action needed" and "--select fct_sessions" in models.left[0]
    # The named command works, and then the plain build does.
    assert jobs.transform(rt.next_run(), select=["fct_sessions"], full_refresh=True, no_test=True).ok
    assert jobs.transform(rt.next_run(), no_test=True).ok
    assert query(root, "SELECT count(*) > 0 FROM marts.fct_events WHERE _source_file = 'late.csv'") == [(True,)]


def test_models_downstream_of_a_rebuilt_model_are_rebuilt_too(base: dict[str, Path], tmp_path: Path) -> None:
    """fct_events now builds revenue as a wider decimal: fct_sessions' columns do not change, but its
    sums were made from the old revenue, and an incremental run would recompute only the sessions whose
    events changed."""
    project = changed_project(tmp_path, {"models/marts/fct_events.sql": [
        ("case when event_type = 'purchase' then price end as revenue",
         "case when event_type = 'purchase' then cast(price as decimal(20, 2)) end as revenue"),
    ]})
    root = copy_deployment(base["root"], tmp_path / "d")
    result = jobs.transform(runtime(root, base["landing"], dbt_project_dir=str(project)), no_test=True)
    assert result.ok, result.error
    notes = {n.split(":")[1].split("(")[0].strip(): n for n in result.notes}
    assert sorted(notes) == ["fct_events", "fct_sessions"]
    assert "reads fct_events, which is rebuilt in full" in notes["fct_sessions"]
    assert "revenue: DECIMAL(18,2) -> DECIMAL(20,2)" in notes["fct_events"]
    assert column_types(root, "marts", "fct_events")["revenue"] == "DECIMAL(20,2)"


def test_on_schema_change_decides_which_changes_dbt_handles() -> None:
    def check(policy: str, *changes: ColumnChange, extra: tuple[str, ...] = ()) -> ModelCheck:
        node = Node("model.p.m", "m", "model", "incremental", '"db"."marts"."m"', TableRef("marts", "m"), [], "", policy, {})
        return ModelCheck(node, [("a", "INTEGER")], ColumnDiff(list(changes), list(extra)))

    added = ColumnChange("add", "b", "INTEGER")
    retyped = ColumnChange("type", "a", "BIGINT", "INTEGER")
    assert not check("fail", added).handled_by_dbt and check("fail", added).needs_full_refresh
    assert not check("ignore", added).handled_by_dbt  # dbt would silently not write b
    assert check("append_new_columns", added).handled_by_dbt
    assert check("append_new_columns", extra=("old",)).handled_by_dbt
    assert not check("append_new_columns", added, retyped).handled_by_dbt  # the type change would be ignored
    assert check("sync_all_columns", added, retyped, extra=("old",)).handled_by_dbt
    assert not check("fail", extra=("old",)).handled_by_dbt
    assert not check("fail").needs_full_refresh


def test_relations_are_replaced_in_code_only() -> None:
    sql = ("-- depends_on: \"db\".\"marts\".\"m\"\nselect '\"db\".\"marts\".\"m\"' as s, x from \"db\".\"marts\".\"m\" as t\n"
           "/* \"db\".\"marts\".\"m\" */ join \"db\".\"marts\".\"mm\" using (x)")
    out = replace_relations(sql, {'"db"."marts"."m"': "(select 1 as x)", '"db"."marts"."mm"': "(select 2 as x)"})
    assert out == ("-- depends_on: \"db\".\"marts\".\"m\"\nselect '\"db\".\"marts\".\"m\"' as s, x from (select 1 as x) as t\n"
                   "/* \"db\".\"marts\".\"m\" */ join (select 2 as x) using (x)")


def test_a_project_change_changes_the_fingerprint(tmp_path: Path) -> None:
    project = changed_project(tmp_path, {})
    first = dbt_schema.project_fingerprint(project, "duckdb", "duckdb:///w.duckdb")
    (project / "target").mkdir()
    (project / "target" / "manifest.json").write_text("{}")
    assert dbt_schema.project_fingerprint(project, "duckdb", "duckdb:///w.duckdb") == first  # build output ignored
    assert dbt_schema.project_fingerprint(project, "duckdb", "duckdb:///other.duckdb") != first
    (project / "models" / "marts" / "dim_users.sql").write_text("select 1 as user_id")
    assert dbt_schema.project_fingerprint(project, "duckdb", "duckdb:///w.duckdb") != first


def test_upgrade_dry_run_of_a_changed_deployment_changes_nothing(base: dict[str, Path], tmp_path: Path) -> None:
    project = changed_project(tmp_path, WIDER)
    root = copy_deployment(base["root"], tmp_path / "d")
    rt = runtime(root, base["landing"], dbt_project_dir=str(project))
    before = digests(root)
    result = jobs.upgrade(rt, dry_run=True, unit_dir=tmp_path / "units")
    assert digests(root) == before
    by_name = {s.name: s for s in result.steps}
    assert by_name["incremental models"].would_do == ["rebuild fct_sessions in full from the raw events (dbt --full-refresh)"]
    assert any("customer_ltv: DECIMAL(18,2) -> DECIMAL(20,2)" in f for f in by_name["snapshots"].found)
    # And the real upgrade does it: fct_sessions now; the snapshot columns whose source, dim_users, is a
    # table (rebuilt by every transform) with the next snapshot after the next transform.
    done = jobs.upgrade(rt.next_run(), unit_dir=tmp_path / "units")
    assert done.ok, done.as_dict()
    assert column_types(root, "marts", "fct_sessions")["total_revenue"] == "DECIMAL(20,2)"
    assert any("the next `estore-ops snapshot` changes them in place" in f for f in
               next(s for s in done.steps if s.name == "snapshots").found)
    assert jobs.transform(rt.next_run(), no_test=True).ok and jobs.snapshot(rt.next_run()).ok
    assert column_types(root, "snapshots", "snap_user_status")["customer_ltv"] == "DECIMAL(20,2)"


MARTS = ("fct_events", "fct_sessions", "dim_users", "dim_user_rfm", "dim_products", "dim_categories", "metrics_churn")


def _marts(root: Path) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(query(root, f"SELECT * EXCLUDE (_loaded_at) FROM marts.{t}") if t == "fct_events"
                      else query(root, f"SELECT * FROM marts.{t}"), key=repr) for t in MARTS}


def test_a_warehouse_built_before_the_rename_of_the_deduplicated_events_upgrades_without_losing_a_change(tmp_path: Path) -> None:
    # Issue 14 stored the deduplicated events as staging.int_events_deduped; issue 17 renamed the model
    # int_events__deduplicated. The first transform after the rename builds the new table in full and
    # must still see the file versions gone since the old table was written (an emptied file), or the
    # marts keep rows raw.events no longer has. Then `upgrade` drops the old table, not before.
    landing, root = tmp_path / "landing", tmp_path / "d"
    generate_files(landing, months=2, rows_per_month=1500, users=150, seed=11)
    rt = runtime(root, landing)
    assert jobs.load(rt).ok and jobs.transform(rt.next_run(), no_test=True).ok
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    con.execute("ALTER TABLE staging.int_events__deduplicated RENAME TO int_events_deduped")
    con.execute("UPDATE staging.int_change_log SET model_name = 'int_events_deduped' WHERE model_name = 'int_events__deduplicated'")
    november = con.execute("SELECT count(*) FROM marts.fct_events WHERE event_date >= DATE '2019-11-01'").fetchone()[0]
    con.close()
    assert november > 0
    write_csv(landing / "2019-Nov.csv.gz", [])  # emptied: its rows leave raw.events
    assert jobs.load(rt.next_run()).ok

    first = jobs.upgrade(rt.next_run(), unit_dir=tmp_path / "units")
    assert first.ok, first.as_dict()
    models = next(s for s in first.steps if s.name == "incremental models")
    assert any(f.startswith("staging.int_events_deduped: left by an earlier version") and "kept until the next" in f
               for f in models.found), models.found
    assert models.did == []

    assert jobs.transform(rt.next_run(), no_test=True).ok
    full = copy_deployment(root, tmp_path / "full")
    assert jobs.transform(runtime(full, landing), no_test=True, full_refresh=True).ok
    assert query(root, "SELECT count(*) FROM marts.fct_events WHERE event_date >= DATE '2019-11-01'") == [(0,)]
    assert _marts(root) == _marts(full)

    before = digests(root)
    planned = jobs.upgrade(rt.next_run(), dry_run=True, unit_dir=tmp_path / "units")
    assert digests(root) == before
    assert next(s for s in planned.steps if s.name == "incremental models").would_do == [
        "drop staging.int_events_deduped (retired: renamed int_events__deduplicated (dbt in layers))"]
    assert jobs.upgrade(rt.next_run(), unit_dir=tmp_path / "units").ok
    tables = {r[0] for r in query(root, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'staging'")}
    assert "int_events_deduped" not in tables and "int_events__deduplicated" in tables
    assert _marts(root) == _marts(full)


# -- systemd units and Terraform --------------------------------------------------------------------------


class FakeRun:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")


@pytest.fixture
def vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    exe = tmp_path / "venv" / "bin" / "estore-ops"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setattr(sd, "default_exe", lambda: exe)
    conf = tmp_path / "etc"
    conf.mkdir()
    options = dict(exe=exe, user="estore", env_file=conf / "estore-ops.env", state_dir=tmp_path / "state",
                   work_dir=tmp_path / "state" / "work", credential_file=conf / "slack_token")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name, text in sd.render_units(**options).items():
        (unit_dir / name).write_text(text)
    (conf / steps.LAYOUT_FILE).write_text(f"{steps.TERRAFORM_LAYOUT}\n")
    return {"unit_dir": unit_dir, "conf": conf, "options": options, "root": tmp_path}


def _deploy_plan(vm: dict[str, Any]) -> Any:
    ctx = steps.UpgradeContext(rt=None, dry_run=True, unit_dir=vm["unit_dir"])  # type: ignore[arg-type]  # no runtime: the step must not need one
    return steps.DeployStep().inspect(ctx)


def test_units_of_this_version_need_nothing(vm: dict[str, Any]) -> None:
    plan = _deploy_plan(vm)
    assert plan.left == [] and plan.actions == []
    assert any("are this version's" in f for f in plan.found) and any(f"layout {steps.TERRAFORM_LAYOUT}: current" in f for f in plan.found)


def test_units_of_an_earlier_version_are_detected_and_replaced_cleanly(vm: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    unit_dir: Path = vm["unit_dir"]
    ingest = unit_dir / "estore-ops-ingest.service"
    ingest.write_text(ingest.read_text().replace("TimeoutStartSec=45min", "TimeoutStartSec=20min"))
    (unit_dir / "estore-ops-ingest.timer").unlink()
    (unit_dir / "estore-ops-oldjob.timer").write_text("[Timer]\nOnCalendar=daily\n# estore-ops\n")
    (unit_dir / "estore-ops-oldjob.service").write_text("[Service]\nExecStart=/opt/estore-ops/venv/bin/estore-ops old\n")
    (unit_dir / "estore-ops-notours.timer").write_text("[Timer]\nOnCalendar=daily\n")  # not written by estore-ops
    plan = _deploy_plan(vm)
    found = " ".join(plan.found)
    assert "changed since: estore-ops-ingest.service" in found
    assert "not installed: estore-ops-ingest.timer" in found
    assert "no longer used: estore-ops-oldjob.service, estore-ops-oldjob.timer" in found
    assert len(plan.left) == 1 and "systemd install --user estore" in plan.left[0]
    assert f"--env-file {vm['conf'] / 'estore-ops.env'}" in plan.left[0] and f"--unit-dir {unit_dir}" in plan.left[0]

    # `systemd install` (the command named) replaces them and removes the stale ones.
    monkeypatch.setattr(sd, "_user_exists", lambda user: True)
    run = FakeRun()
    result = sd.install(sd.render_units(**vm["options"]), unit_dir=unit_dir, dry_run=False, run=run)
    assert sorted(p.name for p in result.removed) == ["estore-ops-oldjob.service", "estore-ops-oldjob.timer"]
    assert ["systemctl", "disable", "--now", "estore-ops-oldjob.timer"] in run.calls
    assert run.calls.index(["systemctl", "disable", "--now", "estore-ops-oldjob.timer"]) < run.calls.index(["systemctl", "daemon-reload"])
    assert not (unit_dir / "estore-ops-oldjob.timer").exists() and (unit_dir / "estore-ops-notours.timer").exists()
    assert _deploy_plan(vm).left == []


def test_a_vm_set_up_by_an_earlier_terraform_is_detected(vm: dict[str, Any]) -> None:
    marker: Path = vm["conf"] / steps.LAYOUT_FILE
    marker.write_text("0\n")
    assert any("earlier Terraform configuration" in item and "terraform apply" in item for item in _deploy_plan(vm).left)
    marker.unlink()  # installed by hand, or by a version before the marker: said, not required
    plan = _deploy_plan(vm)
    assert plan.left == [] and any("terraform-layout" in f for f in plan.found)


def test_the_startup_script_writes_the_layout_this_version_expects() -> None:
    from tests.helpers import REPO

    script = (REPO / "terraform" / "startup.sh.tftpl").read_text()
    assert f'echo {steps.TERRAFORM_LAYOUT} > "$CONF_DIR/{steps.LAYOUT_FILE}"' in script


# -- the command ------------------------------------------------------------------------------------------


def test_upgrade_of_a_new_deployment_has_nothing_to_do(tmp_path: Path) -> None:
    from tests.helpers import Workspace

    ws = Workspace(tmp_path)
    dry = ws.run("upgrade", "--dry-run", "--unit-dir", str(tmp_path / "units"))
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    names = [json.loads(m.group(1)) if m.group(1).startswith('"') else m.group(1)
             for line in lines if (m := re.match(r'step=("[^"]*"|\S+) status=ok ', line))]
    assert names == ["systemd units and Terraform", "state document", "raw events table", "incremental models", "snapshots"]
    assert lines[-1] == "Nothing to upgrade: this deployment is up to date."
    # The dry run created nothing (the state folder's store keeps only its empty lock file there).
    assert [p.name for p in (tmp_path / "data").rglob("*") if p.is_file()] == [".estore-write.lock"]
    done = ws.run("upgrade", "--json", "--unit-dir", str(tmp_path / "units"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["dry_run"] is False and {s["status"] for s in report["steps"]} == {"ok"}


def test_upgrade_exits_1_and_lists_what_is_left(vm: dict[str, Any]) -> None:
    from tests.helpers import Workspace

    (vm["unit_dir"] / "estore-ops-oldjob.timer").write_text("[Timer]\nOnCalendar=daily\n# estore-ops\n")
    ws = Workspace(vm["root"])
    proc = ws.run("upgrade", "--unit-dir", str(vm["unit_dir"]))
    assert proc.returncode == 1, proc.stderr
    assert "Left to do:" in proc.stdout and "systemd install" in proc.stdout
    assert ws.run("upgrade", "--dry-run", "--unit-dir", str(vm["unit_dir"])).returncode == 0


# -- BigQuery emulator: reading schemas (it accepts ALTER TABLE but does not apply it, so the
# -- changes themselves are checked against Google's rules above, not against the emulator) --------------


@pytest.mark.gcp
def test_bigquery_editor_reads_tables_and_query_schemas(bq_emulator: Any, bq_dataset: str) -> None:
    from estore_ops.deploy.upgrade.tables import editor_for
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

    warehouse = BigQueryWarehouse.from_url(bq_emulator.url(bq_dataset), client=bq_emulator.client())
    warehouse.ensure_raw_table()
    editor = editor_for(warehouse)
    table = raw_table.raw_table_ref(editor)
    assert editor.columns(table) == [(n, t) for n, t in raw_table.wanted_columns("bigquery")]
    assert editor.columns(TableRef(bq_dataset, "no_such_table")) is None
    probe = f"SELECT price, CAST(price AS NUMERIC) AS exact, user_id > 0 AS flag FROM `{editor.table_id(table)}`"
    assert editor.query_columns(probe) == [("price", "FLOAT64"), ("exact", "NUMERIC"), ("flag", "BOOL")]
    plan = raw_table.plan_raw_table(editor, allow_rewrite=False)
    assert plan.actions == [] and plan.left == [] and plan.found == [f"{bq_dataset}.events has the columns of this version"]
    retired = TableRef(bq_dataset, "retired_copy")
    warehouse.query(f"CREATE TABLE `{editor.table_id(retired)}` AS SELECT 1 AS x")
    assert editor.columns(retired) is not None
    editor.drop(retired)
    editor.drop(retired)  # gone already: nothing to do
    assert editor.columns(retired) is None
