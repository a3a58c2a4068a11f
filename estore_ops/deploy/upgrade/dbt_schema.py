"""What the new dbt code would build, compared with the relations a deployment already has.

`compile_manifest` runs `dbt compile --full-refresh` on the incremental models, the snapshots and
everything upstream of them (tests excluded): a few seconds, no data read, nothing built.
`Manifest.inline(node)` turns a node's compiled SQL into one self-contained query: every `ref` to
another model is replaced by that model's own compiled SQL, recursively down to the sources. So
its columns are what the node will have once THIS code has rebuilt everything upstream, even while
the relations upstream are still the old ones (a staging view that now casts price to DECIMAL
has not been rebuilt yet when the check runs). The columns are read without running anything
(DuckDB `DESCRIBE`, a BigQuery dry run).

Incremental models (`check_models`): where the existing table's columns differ from what the
model now builds, dbt's `on_schema_change` decides what an incremental run would do:
- `fail` (this project's setting) stops the build halfway, after the models before it were built;
- `ignore` (dbt's default) keeps the old columns: a new column is silently not written, a changed
  type silently cast back into the old one;
- `append_new_columns` adds new columns, NULL in every row built before, and ignores type changes;
- `sync_all_columns` also drops removed columns and changes types, by casting the stored values
  (on BigQuery dbt-bigquery rewrites the whole table for each type change instead of using ALTER
  COLUMN SET DATA TYPE where BigQuery allows it).
None of them recomputes the rows already built, which is what a changed formula or a new derived
column needs. So a model whose columns changed is rebuilt in full before the build, unless its
`on_schema_change` handles exactly that kind of change (append_new_columns: only new columns;
sync_all_columns: any). A model is rebuilt automatically when it can be rebuilt from the raw events
(and snapshots) alone; otherwise, or with `meta: {estore_ops: {full_refresh: manual}}` in its
config, the build stops before it starts and names `estore-ops transform --full-refresh --select
MODEL`.

Snapshots (`check_snapshots`): a column whose type changes upstream keeps its old type in the
snapshot table (dbt snapshots add new columns, they never change types), and comparing an old-typed
value with a new-typed one can close every open row (BigQuery compares FLOAT64 and NUMERIC as
FLOAT64) or fail the snapshot (BOOL against INT64). The snapshot tables' column types are changed
in place instead: stored values are cast, `dbt_valid_from` / `dbt_valid_to` are not touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from estore_ops import schema
from estore_ops.errors import EstoreError
from estore_ops.deploy.upgrade.tables import TYPE, ColumnChange, ColumnDiff, Columns, TableEditor, TableRef

SNAPSHOT_META_COLUMNS = frozenset({"dbt_scd_id", "dbt_updated_at", "dbt_valid_from", "dbt_valid_to", "dbt_is_deleted"})
CHECK_SELECTION = ["+config.materialized:incremental", "+resource_type:snapshot"]
NOT_COMPILED = ["resource_type:test", "resource_type:unit_test"]
HANDLES_NEW_COLUMNS = "append_new_columns"
HANDLES_ALL = "sync_all_columns"
MANUAL, AUTO = "manual", "auto"


class DbtCompileError(EstoreError):
    """The new dbt project does not compile: nothing can be compared (nor built)."""


@dataclass
class Node:
    unique_id: str
    name: str
    resource_type: str
    materialized: str | None
    relation_name: str | None
    table: TableRef | None
    depends_on: list[str]
    compiled_code: str | None
    on_schema_change: str
    meta: dict[str, Any]
    source_key: tuple[str, str] | None = None  # sources: (source_name, table name)


class Manifest:
    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        nodes: dict[str, Node] = {}
        for uid, raw in {**data.get("nodes", {}), **data.get("sources", {})}.items():
            kind = raw.get("resource_type")
            if kind not in ("model", "snapshot", "source", "seed"):
                continue
            config = raw.get("config") or {}
            table = None
            if raw.get("relation_name"):
                table = TableRef(raw.get("schema") or "", raw.get("alias") or raw.get("identifier") or raw["name"], raw.get("database"))
            nodes[uid] = Node(
                unique_id=uid, name=raw["name"], resource_type=kind, materialized=config.get("materialized"),
                relation_name=raw.get("relation_name"), table=table,
                depends_on=list((raw.get("depends_on") or {}).get("nodes") or []),
                compiled_code=raw.get("compiled_code"), on_schema_change=config.get("on_schema_change") or "ignore",
                meta=dict(config.get("meta") or raw.get("meta") or {}),
                source_key=(raw.get("source_name"), raw["name"]) if kind == "source" else None,
            )
        return cls(nodes)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def of_type(self, resource_type: str, materialized: str | None = None) -> list[Node]:
        return sorted(
            (n for n in self.nodes.values() if n.resource_type == resource_type and (materialized is None or n.materialized == materialized)),
            key=lambda n: n.name,
        )

    def ancestors(self, uid: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.nodes[uid].depends_on)
        while todo:
            dep = todo.pop()
            if dep in seen:
                continue
            seen.add(dep)
            if dep in self.nodes:
                todo += self.nodes[dep].depends_on
        return seen

    def inline(self, uid: str, _memo: dict[str, str] | None = None) -> str:
        """The node's compiled SQL with every upstream model's relation replaced by its SQL."""
        memo = {} if _memo is None else _memo
        if uid in memo:
            return memo[uid]
        node = self.nodes[uid]
        if node.compiled_code is None:
            raise DbtCompileError(f"dbt did not compile {node.name}: run `estore-ops transform` to see why.")
        mapping = {}
        for dep in node.depends_on:
            up = self.nodes.get(dep)
            if up is None or up.resource_type != "model" or not up.relation_name or up.materialized == "ephemeral":
                continue  # sources, snapshots and seeds are read as they are
            mapping[up.relation_name] = "(\n" + self.inline(dep, memo) + "\n)"
        memo[uid] = replace_relations(node.compiled_code, mapping)
        return memo[uid]


def replace_relations(sql: str, mapping: dict[str, str]) -> str:
    """Replace relation names in SQL code, never inside comments or string literals."""
    if not mapping:
        return sql
    names = sorted(mapping, key=len, reverse=True)
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        for name in names:
            if sql.startswith(name, i):
                out.append(mapping[name])
                i += len(name)
                break
        else:
            ch = sql[i]
            if sql.startswith("--", i) or ch == "#":
                end = sql.find("\n", i)
                end = n if end < 0 else end
            elif sql.startswith("/*", i):
                end = sql.find("*/", i + 2)
                end = n if end < 0 else end + 2
            elif ch == "'":
                end = i + 1
                while end < n and sql[end] != "'":
                    end += 2 if sql[end] == "\\" else 1
                end = min(end + 1, n)
            else:
                end = i + 1
            out.append(sql[i:end])
            i = end
    return "".join(out)


# -- compile ----------------------------------------------------------------------------------------


@dataclass
class DbtSetup:
    """What a dbt invocation needs, as `jobs` builds it."""

    project_dir: Path
    target: dict[str, Any]
    work_dir: Path
    vars: dict[str, Any]


def compile_manifest(setup: DbtSetup, select: list[str] | None = None, exclude: list[str] | None = None) -> Manifest:
    """Compile (as a full refresh) the selected nodes, by default everything the checks need."""
    from estore_ops.analytics.transform import run_dbt

    result = run_dbt(
        project_dir=setup.project_dir, target=setup.target, work_dir=setup.work_dir, command="compile",
        select=select or CHECK_SELECTION, exclude=[*(exclude or []), *NOT_COMPILED], full_refresh=True,
        vars=setup.vars, quiet=True,
    )
    path = result.artifacts.get("manifest")
    if not result.ok or path is None:
        raise DbtCompileError(
            f"The dbt project does not compile, so its models cannot be checked against the warehouse: "
            f"{result.error or 'no manifest was written'}"
        )
    return Manifest.load(path)


def project_fingerprint(project_dir: Path, target_type: str, warehouse_url: str) -> str:
    """Changes when the dbt code, the raw table's definition or the warehouse change."""
    digest = hashlib.sha256()
    digest.update(f"{target_type}\x1f{warehouse_url}\x1f".encode())
    digest.update(repr(schema.ALL_COLUMNS).encode())
    root = Path(project_dir)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.split("/")[0] in ("target", "logs", "dbt_packages"):
            continue
        if path.suffix in (".sql", ".yml", ".yaml", ".csv", ".md"):
            digest.update(rel.encode() + b"\x00" + path.read_bytes() + b"\x00")
    return digest.hexdigest()


# -- incremental models --------------------------------------------------------------------------------


@dataclass
class ModelCheck:
    node: Node
    existing: Columns | None
    diff: ColumnDiff | None = None
    rebuildable: bool = True
    why_not: str = ""
    because: list[str] = field(default_factory=list)  # rebuilt models it reads (its columns may be unchanged)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def differences(self) -> list[str]:
        if self.diff is None:
            return []
        return [c.describe() for c in self.diff.changes] + [f"column {c} is no longer built" for c in self.diff.extra]

    @property
    def handled_by_dbt(self) -> bool:
        if self.diff is None:
            return True
        policy = self.node.on_schema_change
        if policy == HANDLES_ALL:
            return True
        return policy == HANDLES_NEW_COLUMNS and not any(c.kind == TYPE for c in self.diff.changes)

    @property
    def needs_full_refresh(self) -> bool:
        return bool(self.because) or (bool(self.differences) and not self.handled_by_dbt)

    def describe(self) -> str:
        why = self.differences or [f"it reads {', '.join(self.because)}, which is rebuilt in full"]
        return f"{self.name} ({self.node.table}): {'; '.join(why)}"

    def command(self) -> str:
        return f"estore-ops transform --full-refresh --select {self.name}"


def _rebuildable(manifest: Manifest, node: Node) -> tuple[bool, str]:
    options = node.meta.get("estore_ops")
    setting = options.get("full_refresh") if isinstance(options, dict) else None
    if setting == MANUAL:
        return False, "its config says meta.estore_ops.full_refresh: manual"
    if setting == AUTO:
        return True, ""
    others = sorted(
        ".".join(up.source_key) for uid in manifest.ancestors(node.unique_id)
        if (up := manifest.nodes.get(uid)) is not None and up.source_key is not None
        and up.source_key != ("raw", schema.RAW_TABLE)
    )
    if others:
        return False, f"it reads {', '.join(others)}, which may not hold everything it was built from"
    return True, ""


def check_models(manifest: Manifest, editor: TableEditor) -> list[ModelCheck]:
    """Each incremental model, with its differences from what the code builds now (none when its
    table does not exist yet).

    An incremental model downstream of one that is rebuilt in full is rebuilt too when it can be:
    its rows were computed from the old contents (say, float revenue now summed as decimals) and an
    incremental run would recompute only the rows whose input rows changed."""
    checks = []
    for node in manifest.of_type("model", "incremental"):
        if node.table is None:
            continue
        existing = editor.columns(node.table)
        check = ModelCheck(node, existing)
        if existing is not None:
            predicted = editor.query_columns(manifest.inline(node.unique_id))
            check.diff = editor.diff(existing, predicted)
            check.rebuildable, check.why_not = _rebuildable(manifest, node)
        checks.append(check)
    changed = {c.node.unique_id: c.name for c in checks if c.needs_full_refresh and c.rebuildable}
    for check in checks:
        upstream = sorted(changed[uid] for uid in manifest.ancestors(check.node.unique_id) if uid in changed)
        if check.existing is not None and check.rebuildable and upstream and not check.needs_full_refresh:
            check.because = upstream
    return checks


def refresh_selection(manifest: Manifest, checks: list[ModelCheck], not_built: Iterable[str] = ()) -> list[str]:
    """Models to build with --full-refresh: the ones to rebuild and the views/tables upstream of them
    (rebuilt anyway, and the rebuild must read their new definitions); never another incremental model
    that is built already. An upstream incremental model `not_built` yet (new in this version, or
    renamed) is built too: the views read it, and its first build is a full one anyway."""
    new = set(not_built)
    names = {c.name for c in checks}
    for check in checks:
        for uid in manifest.ancestors(check.node.unique_id):
            up = manifest.nodes.get(uid)
            if up is None or up.resource_type != "model" or up.materialized == "ephemeral":
                continue
            if up.materialized != "incremental" or up.name in new:
                names.add(up.name)
    return sorted(names)


# -- snapshots ------------------------------------------------------------------------------------------


@dataclass
class SnapshotCheck:
    node: Node
    changes: list[ColumnChange] = field(default_factory=list)
    waiting_for: list[str] = field(default_factory=list)  # upstream models that must be rebuilt first

    @property
    def name(self) -> str:
        return self.node.name


def check_snapshots(
    manifest: Manifest, editor: TableEditor, predicted: bool, names: Iterable[str] | None = None,
    pending_models: Callable[[Node], list[str]] | None = None,
) -> list[SnapshotCheck]:
    """Type changes of columns a snapshot table shares with what its query returns.

    predicted=False compares with what the snapshot reads now (the relations as they are: what
    `dbt snapshot` is about to compare); True with what it will read once the new code has built
    the models upstream (`estore-ops upgrade`)."""
    wanted = set(names) if names is not None else None
    checks = []
    for node in manifest.of_type("snapshot"):
        if (wanted is not None and node.name not in wanted) or node.table is None or node.compiled_code is None:
            continue
        existing = editor.columns(node.table)
        if existing is None:
            continue  # not snapshotted yet
        check = SnapshotCheck(node)
        if pending_models is not None:
            check.waiting_for = pending_models(node)
        sql = manifest.inline(node.unique_id) if predicted else node.compiled_code
        incoming = editor.query_columns(sql)
        kept = [(name, kind) for name, kind in existing if name.lower() not in SNAPSHOT_META_COLUMNS]
        shared = {name.lower() for name, _ in kept}
        diff = editor.diff(kept, [(name, kind) for name, kind in incoming if name.lower() in shared])
        check.changes = [c for c in diff.changes if c.kind == TYPE]
        checks.append(check)
    return checks


def apply_snapshot_changes(editor: TableEditor, check: SnapshotCheck) -> None:
    """Cast the columns in place; a warehouse that cannot (BigQuery, e.g. FLOAT64 -> NUMERIC) rewrites
    the snapshot table once, with the same rows and validity ranges (snapshot tables are small: one
    row per key and change, next to the events they summarise)."""
    assert check.node.table is not None
    in_place = [c for c in check.changes if c.in_place]
    rewrite = [c for c in check.changes if not c.in_place]
    if in_place:
        editor.apply(check.node.table, in_place)
    if rewrite:
        editor.rewrite(check.node.table, rewrite)
