"""The steps of `estore-ops upgrade`, in the order they run, and the context they share.

Adding a step: write a class with a `name` and `inspect(ctx) -> Plan` and put it in `STEPS`.
Adding a migration to an existing step is usually data, not code: a `state_formats.MIGRATIONS`
entry, a column in `estore_ops.schema` (plus `raw_table.RAW_BACKFILL` if old rows can be given a
value), a model's new SQL (the models step compares it with the table), `TERRAFORM_LAYOUT`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from estore_ops.deploy.upgrade.framework import Action, Plan

if TYPE_CHECKING:
    from estore_ops.runtime import Runtime
    from estore_ops.deploy.upgrade.dbt_schema import DbtSetup, Manifest, ModelCheck
    from estore_ops.deploy.upgrade.tables import TableEditor

# Bumped whenever terraform/ changes what the VM needs (IAM, startup script, settings, topics...);
# the startup script writes the same number to <conf dir>/terraform-layout (terraform/startup.sh.tftpl).
# 1: the first layout with the marker; 2: releases/ + current symlink, least-privilege IAM, Pub/Sub
# notifications for watch --events.
TERRAFORM_LAYOUT = 2
LAYOUT_FILE = "terraform-layout"


@dataclass
class UpgradeContext:
    rt: Runtime
    dry_run: bool
    allow_rewrite: bool = False
    unit_dir: Path = Path("/etc/systemd/system")
    model_checks: list[ModelCheck] = field(default_factory=list)
    _setup: DbtSetup | None = None
    _manifest: Manifest | None = None

    def setup(self) -> DbtSetup:
        if self._setup is None:
            from estore_ops.jobs import dbt_setup

            # A dry run creates nothing, not even the raw table of a deployment that never loaded.
            self._setup = dbt_setup(self.rt, ensure_raw_table=not self.dry_run)
        return self._setup

    def manifest(self) -> Manifest:
        if self._manifest is None:
            from estore_ops.deploy.upgrade.dbt_schema import compile_manifest

            self._manifest = compile_manifest(self.setup())
        return self._manifest

    @contextmanager
    def editor(self) -> Iterator[TableEditor]:
        """A table editor on a connection closed afterwards (dbt needs the DuckDB file to itself)."""
        from estore_ops.deploy.upgrade.tables import editor_for

        warehouse = self.rt.warehouse(read_only=self.dry_run and self._embedded_file() is not None)
        try:
            yield editor_for(warehouse)
        finally:
            warehouse.close()

    def _embedded_file(self) -> Path | None:
        """The database file of an embedded warehouse (DuckDB), when it exists."""
        from estore_ops.backends.registry import warehouse_backend

        url = self.rt.settings.warehouse
        path = warehouse_backend(url).local_file(url)
        return path if path is not None and path.exists() else None

    def has_warehouse(self) -> bool:
        """False for an embedded warehouse file that does not exist yet (nothing to upgrade there)."""
        from estore_ops.backends.registry import warehouse_backend

        url = self.rt.settings.warehouse
        return warehouse_backend(url).local_file(url) is None or self._embedded_file() is not None

    def has_models(self) -> bool:
        """False when dbt certainly built nothing yet (then there is no need to compile the project)."""
        if not self.has_warehouse():
            return False
        with self.editor() as editor:
            return not editor.only_raw_tables(editor.warehouse.raw_schema)


# -- systemd units and Terraform ------------------------------------------------------------------------


def _directive(units: dict[str, str], key: str) -> list[str]:
    for name, text in sorted(units.items()):
        if name.endswith(".service"):
            for line in text.splitlines():
                if line.startswith(f"{key}="):
                    return line[len(key) + 1:].split()
    return []


class DeployStep:
    """systemd units installed by an earlier version (changed, missing or stale ones), and a VM set up
    by an earlier Terraform configuration. Both need root (or Terraform): the step says what to run."""

    name = "systemd units and Terraform"

    def inspect(self, ctx: UpgradeContext) -> Plan:
        from estore_ops.deploy.systemd import DeployError, default_exe, installed_units, render_units

        plan = Plan()
        installed = installed_units(ctx.unit_dir)
        if not installed:
            plan.found.append(f"no estore-ops units in {ctx.unit_dir}: not a VM deployment, nothing to do")
            return plan
        user = (_directive(installed, "User") or ["estore"])[0]
        env_file = Path((_directive(installed, "EnvironmentFile") or ["/etc/estore-ops/estore-ops.env"])[0])
        paths = _directive(installed, "ReadWritePaths")
        state_dir = Path(paths[0]) if paths else Path("/var/lib/estore-ops")
        work_dir = Path(paths[1]) if len(paths) > 1 else state_dir / "work"
        credential = next((v.split(":", 1)[1] for v in _directive(installed, "LoadCredential") if ":" in v), None)
        old_exe = Path((_directive(installed, "ExecStart") or [""])[0])
        try:
            exe = default_exe()
        except DeployError:
            exe = old_exe
        try:
            wanted = render_units(exe=exe, user=user, env_file=env_file, state_dir=state_dir, work_dir=work_dir,
                                  credential_file=Path(credential) if credential else None)
        except DeployError as exc:
            plan.left.append(f"the installed units cannot be re-rendered ({exc}); run `sudo {exe} systemd install` with your options")
            return plan
        changed = sorted(n for n in wanted if n in installed and installed[n] != wanted[n])
        missing = sorted(n for n in wanted if n not in installed)
        stale = sorted(n for n in installed if n not in wanted)
        for what, names in (("installed by an earlier version, changed since", changed),
                            ("new in this version, not installed", missing),
                            ("installed by an earlier version, no longer used", stale)):
            if names:
                plan.found.append(f"units {what}: {', '.join(names)}")
        if changed or missing or stale:
            command = [f"sudo {exe} systemd install", f"--user {user}", f"--env-file {env_file}",
                       f"--state-dir {state_dir}", f"--work-dir {work_dir}"]
            if credential:
                command.append(f"--credential-file {credential}")
            if ctx.unit_dir != Path("/etc/systemd/system"):
                command.append(f"--unit-dir {ctx.unit_dir}")
            plan.left.append(f"`{' '.join(command)}` (replaces the changed units, adds the new ones, removes the old ones)")
        else:
            plan.found.append(f"the {len(installed)} units in {ctx.unit_dir} are this version's")
        self._terraform(plan, env_file.parent)
        return plan

    @staticmethod
    def _terraform(plan: Plan, conf_dir: Path) -> None:
        marker = conf_dir / LAYOUT_FILE
        try:
            text = marker.read_text(encoding="utf-8").strip()
        except OSError:
            plan.found.append(
                f"no {marker}: this VM was not set up by this repository's Terraform (or by an earlier version of it). "
                "If Terraform manages it, run `terraform apply` in terraform/, then "
                "`sudo google_metadata_script_runner startup` on the VM (docs/deploying.md, Upgrading)"
            )
            return
        layout = int(text) if text.isdigit() else 0
        if layout < TERRAFORM_LAYOUT:
            plan.left.append(
                f"the VM was set up by an earlier Terraform configuration (layout {layout}, this version needs "
                f"{TERRAFORM_LAYOUT}): run `terraform apply` in terraform/, then `sudo google_metadata_script_runner startup` on the VM"
            )
        else:
            plan.found.append(f"Terraform layout {layout}: current")


# -- the state document -------------------------------------------------------------------------------


class StateStep:
    name = "state document"

    def inspect(self, ctx: UpgradeContext) -> Plan:
        from estore_ops.ingest.state import FORMAT_VERSION
        from estore_ops.ingest.state_formats import MIGRATIONS, backup_name

        plan = Plan()
        snap = ctx.rt.state.read()  # a newer format raises CorruptStateError (exit 3) here
        found = snap.state.read_format
        if found is None:
            plan.found.append(f"no state document at {ctx.rt.state.location} yet")
            return plan
        counts = snap.state.counts()
        plan.found.append(
            f"{ctx.rt.state.location}: format {found} ({counts['loaded']} loaded, {counts['failed']} failed, "
            f"{counts['quarantined']} quarantined)"
        )
        if found >= FORMAT_VERSION:
            return plan
        steps = "; ".join(MIGRATIONS[v].description for v in range(found, FORMAT_VERSION))
        backup = ctx.rt.state.store.uri(backup_name(ctx.rt.state.name, found))
        plan.actions.append(Action(
            f"rewrite it in format {FORMAT_VERSION} ({steps}); the format {found} document is kept as {backup}",
            lambda: ctx.rt.state.update(lambda state: None),
        ))
        return plan


# -- raw events -----------------------------------------------------------------------------------------


class RawTableStep:
    name = "raw events table"

    def inspect(self, ctx: UpgradeContext) -> Plan:
        from estore_ops.deploy.upgrade.raw_table import plan_raw_table

        if not ctx.has_warehouse():
            return Plan(found=["no warehouse yet: the first load creates it"])
        with ctx.editor() as editor:
            plan = plan_raw_table(editor, ctx.allow_rewrite)
        return Plan(plan.found, [_closing(editor, a) for a in plan.actions], plan.left)


def _closing(editor: TableEditor, action: Action) -> Action:
    """An action planned on an editor whose connection was closed: it reconnects to apply it and
    closes again, so the next step (dbt) has the DuckDB file to itself."""

    def run() -> None:
        try:
            action.apply()
        finally:
            editor.warehouse.close()

    return Action(action.description, run)


# -- incremental models -----------------------------------------------------------------------------------


# Tables an earlier version's models built that this version renamed or removed: model name ->
# (the model now in its place, why). Nothing reads them any more; on BigQuery they are billed as storage.
RETIRED_MODELS = {
    "int_events_deduped": ("int_events__deduplicated", "renamed int_events__deduplicated (dbt in layers)"),
}


class ModelsStep:
    name = "incremental models"

    def inspect(self, ctx: UpgradeContext) -> Plan:
        from estore_ops.deploy.upgrade.dbt_schema import check_models

        plan = Plan()
        if not ctx.has_models():
            plan.found.append("no model built yet: the first transform builds them with this version")
            return plan
        manifest = ctx.manifest()
        with ctx.editor() as editor:
            checks = check_models(manifest, editor)
        ctx.model_checks = checks
        for check in checks:
            if check.existing is None:
                plan.found.append(f"{check.name}: not built yet")
            elif check.because:
                plan.found.append(check.describe())
            elif not check.differences:
                plan.found.append(f"{check.name}: columns as this version builds them")
            elif not check.needs_full_refresh:
                plan.found.append(f"{check.describe()}: dbt's on_schema_change={check.node.on_schema_change} handles it")
            else:
                plan.found.append(check.describe())
        auto = [c for c in checks if c.needs_full_refresh and c.rebuildable]
        manual = [c for c in checks if c.needs_full_refresh and not c.rebuildable]
        for check in manual:
            plan.left.append(f"{check.name} cannot be rebuilt automatically ({check.why_not}): `{check.command()}`")
        if auto:
            plan.actions.append(Action(
                f"rebuild {', '.join(c.name for c in auto)} in full from the raw events (dbt --full-refresh)",
                lambda: _refresh(ctx, auto),
            ))
        self._retired(ctx, manifest, plan)
        return plan

    @staticmethod
    def _retired(ctx: UpgradeContext, manifest: Manifest, plan: Plan) -> None:
        """Drop the tables of retired models, found in the schema (dataset) of the model in their place,
        once that model is built: until then its first run reads the old table (dbt/macros/change_log.sql,
        stored_deduplicated) to find what changed since the old table was last written."""
        from dataclasses import replace

        by_name = {n.name: n for n in manifest.nodes.values() if n.resource_type == "model"}
        with ctx.editor() as editor:
            for old, (successor, why) in sorted(RETIRED_MODELS.items()):
                node = by_name.get(successor)
                if node is None or node.table is None:
                    continue
                table = replace(node.table, name=old)
                if editor.columns(table) is None:
                    continue
                if editor.columns(node.table) is None:
                    plan.found.append(
                        f"{table}: left by an earlier version ({why}); kept until the next `estore-ops transform` "
                        f"has built {successor} from it, then `estore-ops upgrade` drops it"
                    )
                    continue
                plan.found.append(f"{table}: left by an earlier version ({why}); nothing reads it")
                plan.actions.append(_closing(editor, Action(
                    f"drop {table} (retired: {why})", lambda t=table: editor.drop(t),
                )))


def _refresh(ctx: UpgradeContext, checks: list[ModelCheck]) -> None:
    from estore_ops.errors import JobFailedError
    from estore_ops.deploy.upgrade.guard import run_full_refresh

    result = run_full_refresh(ctx.setup(), ctx.manifest(), checks)
    if not result.ok:
        raise JobFailedError(result.error or "the full refresh failed")


# -- snapshots ----------------------------------------------------------------------------------------------


class SnapshotsStep:
    name = "snapshots"

    def inspect(self, ctx: UpgradeContext) -> Plan:
        from estore_ops.deploy.upgrade.dbt_schema import apply_snapshot_changes, check_snapshots

        plan = Plan()
        if not ctx.has_models():
            plan.found.append("no snapshot taken yet")
            return plan
        manifest = ctx.manifest()
        manual = {c.node.unique_id for c in ctx.model_checks if c.needs_full_refresh and not c.rebuildable}

        def waiting(node: Any) -> list[str]:
            return sorted(manifest.nodes[uid].name for uid in manifest.ancestors(node.unique_id) if uid in manual)

        with ctx.editor() as editor:
            now = {c.name: c for c in check_snapshots(manifest, editor, predicted=False)}
            later = check_snapshots(manifest, editor, predicted=True, pending_models=waiting)
        if not now and not later:
            plan.found.append("no snapshot taken yet")
        for check in later:
            current = now.get(check.name)
            now_changes = current.changes if current else []
            if now_changes:
                described = "; ".join(c.describe() for c in now_changes)
                plan.found.append(f"{check.name}: {described}")
                plan.actions.append(_closing(editor, Action(
                    f"{check.name}: change the column types in place ({described}); rows and validity ranges kept",
                    lambda c=current: apply_snapshot_changes(editor, c),
                )))
            pending = [c for c in check.changes if c.column not in {n.column for n in now_changes}]
            if pending and check.waiting_for:
                plan.left.append(
                    f"{check.name}: its columns change type once {', '.join(check.waiting_for)} is rebuilt; "
                    "after that full refresh the next `estore-ops snapshot` changes them in place"
                )
            elif pending:
                plan.found.append(
                    f"{check.name}: {'; '.join(c.describe() for c in pending)} once the models are rebuilt by "
                    "`estore-ops transform`; the next `estore-ops snapshot` changes them in place, history kept"
                )
            if not now_changes and not pending:
                plan.found.append(f"{check.name}: column types match")
        return plan


STEPS = (DeployStep(), StateStep(), RawTableStep(), ModelsStep(), SnapshotsStep())
