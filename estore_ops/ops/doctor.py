"""`estore-ops doctor`: check that every configured backend is reachable and usable, and say how to fix what is not.

Checks, in order (a later check still runs when an earlier one fails):
1. landing: the store opens and lists (one page of one object).
2. state: the state document is readable, and the location accepts a conditional write: a probe
   object is created with if_generation_match=0, a second create must be refused (the
   compare-and-swap the cursor relies on really works there), then it is deleted.
3. warehouse: DuckDB: the file opens (or its folder can hold it); BigQuery: the dataset exists
   and a dry-run query over the raw table validates (no bytes billed).
4. dbt: the profile target builds from the warehouse; `dbt parse` runs against it when the
   transform module is available.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from estore_ops.errors import EstoreError, ObjectNotFoundError, PreconditionFailedError
from estore_ops.ingest.state import STATE_NAME

PROBE_PREFIX = ".estore-doctor-probe-"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(name: str, fn: Callable[[], str], fix: str) -> Check:
    try:
        return Check(name, True, fn())
    except EstoreError as exc:
        return Check(name, False, str(exc), fix)
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return Check(name, False, f"{type(exc).__name__}: {exc}", fix)


def check_landing(settings: Any) -> str:
    from estore_ops.backends.stores import open_store

    store = open_store(settings.landing, "landing", keyfile=settings.keyfile)
    first = next(iter(store.list(page_size=1)), None)
    if first is None:
        return f"{store.uri()} is reachable and listable (empty for now)."
    return f"{store.uri()} is reachable and listable (first object: {first.name})."


def check_state(settings: Any) -> str:
    from estore_ops.backends.stores import open_store

    store = open_store(settings.state, "state", keyfile=settings.keyfile)
    try:
        _, generation = store.read(STATE_NAME)
        doc = f"{STATE_NAME} readable (generation {generation})"
    except ObjectNotFoundError:
        doc = f"no {STATE_NAME} yet (created by the first load)"
    probe = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    generation = store.write(probe, b"estore-ops doctor probe\n", if_generation_match=0)
    try:
        try:
            store.write(probe, b"second writer\n", if_generation_match=0)
        except PreconditionFailedError:
            pass
        else:
            raise EstoreError(
                f"{store.uri()} accepted a conditional create of an object that already exists: "
                "its conditional writes are not enforced, so the state document could lose updates."
            )
    finally:
        try:
            store.delete(probe, if_generation_match=generation)
        except ObjectNotFoundError:
            pass
    return f"{store.uri()}: {doc}; conditional write, refused overwrite and delete all work."


def check_warehouse(settings: Any) -> str:
    from estore_ops import schema
    from estore_ops.backends.warehouses import open_warehouse

    url = settings.warehouse
    if url.startswith("duckdb:"):
        from estore_ops.backends.warehouses.duckdb import duckdb_path_from_url

        path = duckdb_path_from_url(url)
        if not path.exists():
            folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
            if folder is None or not os.access(folder, os.W_OK):
                raise EstoreError(f"The DuckDB warehouse {path} does not exist and {folder} is not writable.")
            return f"{path} does not exist yet; the first load creates it ({folder} is writable)."
        with open_warehouse(url, work_dir=Path(settings.work_dir), read_only=True) as wh:
            tables = wh.query(
                "SELECT count(*) FROM information_schema.tables "
                f"WHERE table_schema = '{schema.RAW_SCHEMA}' AND table_name = '{schema.RAW_TABLE}'"
            )[0][0]
        return f"{path} opens; raw table {'present' if tables else 'not created yet'}."
    from estore_ops.runtime import Runtime

    with Runtime(settings).warehouse() as wh:  # the settings' credentials and cost bounds
        check_dataset = getattr(wh, "check_dataset", None)
        if check_dataset is None:
            wh.query("SELECT 1")
            return f"{url} answers queries."
        check_dataset()
        raw_exists = wh._table_exists(wh.table_id) is not None  # type: ignore[attr-defined]
        sql = f"SELECT COUNT(*) FROM `{wh.table_id}`" if raw_exists else "SELECT 1"  # type: ignore[attr-defined]
        wh.dry_run(sql)  # type: ignore[attr-defined]
        state = "raw table present" if raw_exists else "raw table not created yet (the first load creates it)"
        return f"dataset {wh.project}.{wh.dataset} present; dry-run query validated; {state}."  # type: ignore[attr-defined]


def check_dbt(settings: Any) -> str:
    from estore_ops.runtime import Runtime

    read_only = settings.warehouse.startswith("duckdb:")
    with Runtime(settings).warehouse(read_only=read_only) as wh:
        target = wh.dbt_target(settings)
    missing = [k for k in ("type", "threads") if k not in target]
    if target.get("type") == "bigquery":
        missing += [k for k in ("project", "dataset", "method") if not target.get(k)]
        if target.get("method") == "service-account" and not Path(str(target.get("keyfile", ""))).is_file():
            raise EstoreError(f"The dbt target uses the key file {target.get('keyfile')}, which does not exist.")
    if missing:
        raise EstoreError(f"The dbt target for {settings.warehouse} lacks {missing}.")
    try:
        from estore_ops.analytics import transform
    except ImportError:
        return f"target {target['type']} built; `dbt parse` skipped (estore_ops.analytics.transform is not available)."
    project_dir = Path(settings.dbt_project_dir) if getattr(settings, "dbt_project_dir", "") else transform.default_project_dir()
    work_dir = Path(settings.work_dir) / "doctor"
    result = transform.run_dbt(project_dir=project_dir, target=target, work_dir=work_dir, command="parse", quiet=True)
    if not result.ok:
        raise EstoreError(f"`dbt parse` of {project_dir} failed: {result.error}")
    return f"target {target['type']} ({target.get('method', target.get('path', ''))}) built; `dbt parse` of {project_dir} passed."


def run_doctor(settings: Any) -> list[Check]:
    return [
        _run("landing", lambda: check_landing(settings),
             "Check the `landing` setting; for gs:// grant roles/storage.objectViewer on the bucket."),
        _run("state", lambda: check_state(settings),
             "Check the `state` setting; for gs:// grant roles/storage.objectUser on the state prefix (terraform/ does, with an IAM condition); it must support conditional writes."),
        _run("warehouse", lambda: check_warehouse(settings),
             "Check the `warehouse` setting; for BigQuery create the dataset (terraform) and grant "
             "roles/bigquery.dataEditor on it and roles/bigquery.jobUser on the project; for DuckDB stop other writers."),
        _run("dbt", lambda: check_dbt(settings),
             "Check `dbt_project_dir` and the warehouse credentials (keyfile, or `gcloud auth application-default login`)."),
    ]
