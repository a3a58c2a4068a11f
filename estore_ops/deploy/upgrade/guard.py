"""The upgrade checks that `load`, `transform` and `snapshot` run on their own, so that the timers of a
deployment upgrade it without anyone running `estore-ops upgrade`:

- `load`: the raw events table gets the columns and types of this version before the first file of
  a run is loaded (in place; a change only a rewrite could make stops the load, naming the command,
  and no file is blamed for it). A tick with nothing to load does not look.
- `transform`: incremental models whose columns changed are rebuilt in full first, or the build
  stops before it starts and names `estore-ops transform --full-refresh --select MODEL`.
- `snapshot`: snapshot columns get the types of what the snapshot reads.

The model and snapshot checks compile the dbt project (a few seconds), so they run once per code
version: `schema-check.json` in the state location records the project fingerprint under which the
tables were last found to match, and the check is skipped while it is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from estore_ops.ops.documents import JsonDocument
from estore_ops.errors import UpgradeRequiredError
from estore_ops.logs import get_logger
from estore_ops.deploy.upgrade.dbt_schema import (
    DbtSetup,
    Manifest,
    ModelCheck,
    apply_snapshot_changes,
    check_models,
    check_snapshots,
    compile_manifest,
    project_fingerprint,
    refresh_selection,
)
from estore_ops.deploy.upgrade.raw_table import plan_raw_table
from estore_ops.deploy.upgrade.tables import editor_for
from estore_ops.backends.warehouses.base import FileOutcome, LoadItem, Warehouse

if TYPE_CHECKING:
    from estore_ops.runtime import Runtime
    from estore_ops.backends.stores.base import ObjectStore
    from estore_ops.analytics.transform import DbtRunResult

log = get_logger("upgrade")

CHECK_DOCUMENT = "schema-check.json"
MODELS, SNAPSHOTS = "models", "snapshots"


# -- load ------------------------------------------------------------------------------------------


class RawTableGuard(Warehouse):
    """Wraps the warehouse of a load: brings raw events up to date right before the first file."""

    def __init__(self, inner: Warehouse) -> None:
        self.inner = inner
        self.url = inner.url
        self.raw_schema = inner.raw_schema
        self.loads_in_process = inner.loads_in_process
        self._checked = False

    def load(
        self, items: Iterable[LoadItem], store: ObjectStore, on_begin: Callable[[list[LoadItem]], None] | None = None
    ) -> Iterator[FileOutcome]:
        items = list(items)
        if items and not self._checked:
            upgrade_raw_table(self.inner)
            self._checked = True
        yield from self.inner.load(items, store, on_begin)

    def ensure_raw_table(self) -> None:
        self.inner.ensure_raw_table()

    def rows_by_file(self) -> dict[str, int]:
        return self.inner.rows_by_file()

    def count_by_version(self, since: Any = None, until: Any = None) -> dict[tuple[str, int], int]:
        return self.inner.count_by_version(since, until)

    def count_source_rows(self, infos: Any, store: ObjectStore) -> dict[str, int | str]:
        return self.inner.count_source_rows(infos, store)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.inner.query(sql)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # what only some warehouses offer (query_records, cancel_jobs, ...)

    def dbt_target(self, settings: Any) -> dict[str, Any]:
        return self.inner.dbt_target(settings)

    def has_version(self, name: str, generation: int) -> bool:
        return self.inner.has_version(name, generation)

    def close(self) -> None:
        self.inner.close()


def upgrade_raw_table(warehouse: Warehouse) -> list[str]:
    """Apply the in-place changes raw events needs; raise UpgradeRequiredError for the others.
    A missing table needs nothing: the load creates it with this version's columns."""
    plan = plan_raw_table(editor_for(warehouse), allow_rewrite=False)
    if plan.left:
        raise UpgradeRequiredError(
            "raw events needs a change this command does not make on its own: " + " ".join(plan.left)
            + " Nothing was loaded; the files stay pending."
        )
    for action in plan.actions:
        log.info("upgrading raw events: %s", action.description)
        action.apply()
    return [a.description for a in plan.actions]


# -- transform and snapshot ----------------------------------------------------------------------------


def recorded(rt: Runtime, kind: str) -> str | None:
    """The fingerprint of the code the tables of `kind` were last found to match."""
    doc, _ = JsonDocument(rt.state_backend, CHECK_DOCUMENT).read()
    return (doc.get(kind) or {}).get("fingerprint")


def record_match(rt: Runtime, kind: str, fingerprint: str) -> None:
    """The tables of `kind` match the code with this fingerprint: later runs skip the check."""
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    JsonDocument(rt.state_backend, CHECK_DOCUMENT).update(
        lambda doc: doc.__setitem__(kind, {"fingerprint": fingerprint, "at": at, "run_id": rt.run_id})
    )


def fingerprint_of(rt: Runtime, setup: DbtSetup) -> str:
    return project_fingerprint(setup.project_dir, str(setup.target.get("type")), rt.settings.warehouse)


def _selected_models(setup: DbtSetup, select: Sequence[str], exclude: Sequence[str]) -> set[str]:
    """The models a `transform --select/--exclude` builds, as dbt resolves the selection."""
    if not select and not exclude:
        return set()
    manifest = compile_manifest(setup, select=list(select) or ["*"], exclude=list(exclude))
    return {n.name for n in manifest.of_type("model") if n.compiled_code is not None}


def guarded_build(
    rt: Runtime, setup: DbtSetup, build: Callable[[], DbtRunResult],
    select: Sequence[str] = (), exclude: Sequence[str] = (), full_refresh: bool = False,
) -> DbtRunResult:
    """Run `build` after rebuilding in full the incremental models whose columns changed.

    Raises UpgradeRequiredError, before anything is built, for a model that cannot be rebuilt on
    its own. After a successful build of the whole project the check is not repeated for this code.
    """
    whole = not select and not exclude
    fingerprint = fingerprint_of(rt, setup)
    current = recorded(rt, MODELS) == fingerprint
    refreshed = None
    # A full refresh of everything rebuilds every incremental model anyway.
    if not current and not (full_refresh and whole):
        refreshed = refresh_changed_models(rt, setup, select, exclude, full_refresh)
        if refreshed is not None and not refreshed.ok:
            return refreshed
    result = build()
    if refreshed is not None:
        result.notes = refreshed.notes + result.notes
    if result.ok and whole and not current:
        record_match(rt, MODELS, fingerprint)
    return result


def refresh_changed_models(
    rt: Runtime, setup: DbtSetup, select: Sequence[str] = (), exclude: Sequence[str] = (), full_refresh: bool = False,
) -> DbtRunResult | None:
    """Rebuild in full the incremental models whose columns changed (None: none needed it)."""
    if nothing_built(rt):
        return None  # a new deployment: no compile needed to know there is nothing to compare
    manifest = compile_manifest(setup)
    warehouse = rt.warehouse()
    try:
        every = check_models(manifest, editor_for(warehouse))
        checks = [c for c in every if c.needs_full_refresh]
    finally:
        warehouse.close()  # DuckDB allows one writer: dbt opens the file itself
    manual = [c for c in checks if not c.rebuildable]
    if manual and full_refresh:
        chosen = _selected_models(setup, select, exclude)
        manual = [c for c in manual if c.name not in chosen]
    if manual:
        raise UpgradeRequiredError(manual_message(manual))
    auto = [c for c in checks if c.rebuildable]
    if not auto:
        return None
    return run_full_refresh(setup, manifest, auto, not_built=[c.name for c in every if c.existing is None])


def nothing_built(rt: Runtime) -> bool:
    """True when the warehouse certainly holds nothing dbt built (see TableEditor.only_raw_tables)."""
    warehouse = rt.warehouse()
    try:
        return editor_for(warehouse).only_raw_tables(warehouse.raw_schema)
    finally:
        warehouse.close()


def run_full_refresh(setup: DbtSetup, manifest: Manifest, checks: list[ModelCheck], not_built: Sequence[str] = ()) -> DbtRunResult:
    from estore_ops.analytics.transform import run_dbt

    log.info("rebuilding in full (columns changed): %s", "; ".join(c.describe() for c in checks))
    result = run_dbt(
        project_dir=setup.project_dir, target=setup.target, work_dir=setup.work_dir, command="build",
        select=refresh_selection(manifest, checks, not_built), full_refresh=True, no_test=True, vars=setup.vars, quiet=True,
    )
    result.notes = [f"rebuilt in full first, its columns changed: {c.describe()}" for c in checks]
    return result


def manual_message(checks: list[ModelCheck]) -> str:
    lines = ["These incremental models were built by an earlier version with other columns and cannot be rebuilt "
             "automatically; nothing was built:"]
    for c in checks:
        lines.append(f"- {c.describe()} ({c.why_not}). Rebuild it with `{c.command()}`.")
    return "\n".join(lines)


def guarded_snapshot(rt: Runtime, setup: DbtSetup, snapshot: Callable[[], DbtRunResult], select: Sequence[str] = ()) -> DbtRunResult:
    """Run `snapshot` after giving the snapshot tables' columns the types of what they read now."""
    fingerprint = fingerprint_of(rt, setup)
    models_current = recorded(rt, MODELS) == fingerprint
    if models_current and recorded(rt, SNAPSHOTS) == fingerprint:
        return snapshot()
    notes = migrate_snapshot_types(rt, setup, select)
    result = snapshot()
    result.notes = notes + result.notes
    if result.ok and models_current and not select:
        # The models are this code's, so what the snapshots read will not change type again.
        record_match(rt, SNAPSHOTS, fingerprint)
    return result


def migrate_snapshot_types(rt: Runtime, setup: DbtSetup, select: Sequence[str] = ()) -> list[str]:
    if nothing_built(rt):
        return []
    manifest = compile_manifest(setup, select=list(select) or ["resource_type:snapshot"])
    warehouse = rt.warehouse()
    notes = []
    try:
        editor = editor_for(warehouse)
        for check in check_snapshots(manifest, editor, predicted=False):
            if check.changes:
                apply_snapshot_changes(editor, check)
                notes.append(f"{check.name}: column types changed in place, history kept "
                             f"({'; '.join(c.describe() for c in check.changes)})")
                log.info("snapshot %s", notes[-1])
    finally:
        warehouse.close()
    return notes
