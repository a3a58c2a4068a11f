"""Run the dbt project in-process: profile generation, dbt invocation, results and artifacts.

dbt is imported lazily inside `run_dbt`, so importing this module (and `estore-ops --help`)
stays fast. Everything dbt writes (profiles.yml, target/, logs/) goes under `work_dir`, never
into the project folder, so a packaged, read-only project works too.

`build` never runs snapshots (they have their own schedule: `command="snapshot"`).

Stopping: `stopped_by_signals(on_stop)` turns SIGTERM (systemd's stop, or its TimeoutStartSec) and
SIGINT into `TransformStopped` inside the dbt invocation, so dbt starts no further node, and at once
starts `on_stop` in a thread: the caller cancels every BigQuery job running under this run's label
(dbt's jobs carry it through the query comment, see dbt_project.yml). Cancelling first is what lets
dbt's worker threads, which wait for those jobs, finish; a job left running goes on billing after
the process is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The environment variable the dbt project's query comment reads the run id from (job label).
RUN_ID_ENV = "ESTORE_RUN_ID"
PROFILE_NAME = "estore_ops"
TARGET_NAME = "main"
COMMANDS = ("build", "snapshot", "parse", "compile")
ARTIFACT_FILES = {"run_results": "run_results.json", "manifest": "manifest.json"}
ARTIFACTS_PREFIX = "dbt-artifacts/"
_MESSAGE_LINES = 4  # lines of a failing node's message kept in NodeResult.message / error
_FAILED_STATUSES = {"error", "fail", "runtime error"}


@dataclass
class NodeResult:
    unique_id: str
    name: str
    kind: str  # model, test, snapshot, seed, ...
    status: str  # success, error, pass, fail, warn, skipped, ...
    seconds: float
    rows_affected: int | None
    message: str | None

    @property
    def failed(self) -> bool:
        return self.status in _FAILED_STATUSES


@dataclass
class DbtRunResult:
    command: str
    ok: bool
    nodes: list[NodeResult] = field(default_factory=list)
    elapsed: float = 0.0
    error: str | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was done before the command (e.g. upgrades)

    @property
    def failed_nodes(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.failed]

    def counts(self) -> dict[str, int]:
        """Nodes per status, e.g. {'success': 9, 'pass': 80}."""
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.status] = out.get(n.status, 0) + 1
        return out


class TransformStopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived while dbt ran (dbt cancels its open queries on KeyboardInterrupt)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextmanager
def stopped_by_signals(on_stop: Callable[[], None] | None = None) -> Iterator[None]:
    """While dbt runs, SIGTERM/SIGINT start `on_stop` in a thread (once) and raise TransformStopped
    in the main thread, after calling the handler installed before (e.g. `watch`'s stop flag).
    No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    started: list[threading.Thread] = []

    def handler(signum: int, frame: Any) -> None:
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        if on_stop is not None and not started:
            started.append(threading.Thread(target=on_stop, name="cancel-jobs", daemon=True))
            started[0].start()
        raise TransformStopped(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


def default_project_dir() -> Path:
    """The repo's dbt/ in a checkout, else the copy shipped in the package."""
    package = Path(__file__).resolve().parents[1]  # estore_ops/
    checkout = package.parent / "dbt"
    if (checkout / "dbt_project.yml").is_file():
        return checkout
    return package / "dbt_project"


def write_profile(target: dict[str, Any], profiles_dir: Path) -> Path:
    """Write profiles.yml (profile `estore_ops`, target `main`) and return its path.

    JSON is valid YAML, so no YAML writer is needed. The file may hold credentials (a token,
    a keyfile path), so it is written owner-only and replaced atomically.
    """
    profiles_dir = Path(profiles_dir)
    profiles_dir.mkdir(parents=True, exist_ok=True)
    profile = {
        PROFILE_NAME: {"target": TARGET_NAME, "outputs": {TARGET_NAME: dict(target)}},
    }
    path = profiles_dir / "profiles.yml"
    tmp = profiles_dir / ".profiles.yml.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(profile, out, indent=2, default=str)
        out.write("\n")
    os.replace(tmp, path)
    return path


def _first_lines(text: str | None, n: int = _MESSAGE_LINES) -> str | None:
    if text is None:
        return None
    lines = [ln.rstrip() for ln in str(text).strip().splitlines() if ln.strip()]
    out = "\n".join(lines[:n])
    if len(lines) > n:
        out += "\n..."
    return out


def _describe_exception(exc: BaseException) -> str:
    """A readable one-paragraph error from a dbt exception (no traceback)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[:12])


def _node_results(result: Any) -> list[NodeResult]:
    results = getattr(result, "results", None)
    if not results:
        return []
    nodes: list[NodeResult] = []
    for r in results:
        node = getattr(r, "node", None)
        if node is None:
            continue
        status = getattr(r.status, "value", r.status)
        adapter_response = getattr(r, "adapter_response", None) or {}
        rows = adapter_response.get("rows_affected") if isinstance(adapter_response, dict) else None
        kind = getattr(node.resource_type, "value", node.resource_type)
        message = r.message
        if message is None and str(status) in _FAILED_STATUSES and getattr(r, "failures", None):
            message = f"{r.failures} failing rows"
        nodes.append(
            NodeResult(
                unique_id=node.unique_id,
                name=node.name,
                kind=str(kind),
                status=str(status),
                seconds=round(float(getattr(r, "execution_time", 0.0) or 0.0), 3),
                rows_affected=rows if isinstance(rows, int) else None,
                message=_first_lines(message),
            )
        )
    return nodes


def _failure_summary(command: str, nodes: list[NodeResult]) -> str:
    failed = [n for n in nodes if n.failed]
    if not failed:
        return f"dbt {command} failed (no failing node reported; see the dbt log)."
    lines = [f"dbt {command}: {len(failed)} of {len(nodes)} nodes failed:"]
    for n in failed:
        first = (n.message or "").splitlines()[0] if n.message else ""
        lines.append(f"- {n.kind} {n.name} ({n.status}): {first}".rstrip(": "))
    return "\n".join(lines)


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after an invocation.

    dbt-duckdb caches one database instance per process (class attribute of its connection
    manager). Left open, it holds the file: the next open with another configuration (e.g.
    read-only) fails, and another process cannot write. Close it so the warehouse is free.
    """
    import gc

    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
        from dbt.adapters.factory import reset_adapters
    except ImportError:  # pragma: no cover - dbt-duckdb is a core dependency
        return
    try:
        reset_adapters()  # closes every thread's connection (cursor) of the adapter
    except Exception:  # noqa: BLE001 - best effort, never hide the run's own result
        pass
    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass
    del env
    gc.collect()


def run_dbt(
    *,
    project_dir: Path,
    target: dict[str, Any],
    work_dir: Path,
    command: str,
    select: list[str] | None = None,
    exclude: list[str] | None = None,
    full_refresh: bool = False,
    no_test: bool = False,
    vars: dict[str, Any] | None = None,  # noqa: A002 - dbt's own name
    quiet: bool = False,
    run_id: str = "",
) -> DbtRunResult:
    """Invoke dbt in this process and return what happened.

    `build` runs models and tests, never snapshots; `no_test=True` skips tests too.
    A compilation or parse error comes back as ok=False with `error` set (no exception);
    failing models/tests are listed in `nodes` with the first lines of their messages.
    `run_id` labels the BigQuery jobs dbt starts (estore_run_id); TransformStopped (a stop
    signal during the run) is raised, not returned.
    """
    if command not in COMMANDS:
        raise ValueError(f"Unknown dbt command {command!r}; expected one of {', '.join(COMMANDS)}.")
    started = time.monotonic()
    project_dir = Path(project_dir).resolve()
    work_dir = Path(work_dir).resolve()
    profiles_dir = work_dir / "dbt" / "profiles"
    target_path = work_dir / "dbt" / "target"
    log_path = work_dir / "dbt" / "logs"
    target_path.mkdir(parents=True, exist_ok=True)
    log_path.mkdir(parents=True, exist_ok=True)
    write_profile(target, profiles_dir)
    # A failed parse leaves the previous run's results in place: never report those.
    (target_path / ARTIFACT_FILES["run_results"]).unlink(missing_ok=True)

    args = [
        command,
        "--project-dir", str(project_dir),
        "--profiles-dir", str(profiles_dir),
        "--profile", PROFILE_NAME,
        "--target", TARGET_NAME,
        "--target-path", str(target_path),
        "--log-path", str(log_path),
        "--no-send-anonymous-usage-stats",
        "--no-use-colors",
        "--no-version-check",
    ]
    if quiet:
        args.append("--quiet")
    if select:
        args += ["--select", *select]
    if exclude:
        args += ["--exclude", *exclude]
    if full_refresh and command in ("build", "compile"):
        args.append("--full-refresh")
    if command == "build":
        skipped = ["snapshot"] + (["test", "unit_test"] if no_test else [])
        args += ["--exclude-resource-type", *skipped]
    vars = dict(vars or {})
    if target.get("type") == "bigquery" and target.get("api_endpoint"):
        # An emulator keeps no partition modification times: find raw changes by file version
        # instead (dbt/macros/raw_changes.sql).
        vars.setdefault("raw_changes_from", "file_versions")
    if vars:
        args += ["--vars", json.dumps(vars, default=str)]

    os.environ.setdefault("DO_NOT_TRACK", "1")
    before = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run_id or "manual"
    try:
        from dbt.cli.main import dbtRunner  # lazy: dbt takes ~1 s to import

        res = dbtRunner().invoke(args)
        exception, success, result = res.exception, bool(res.success), res.result
    except Exception as exc:  # dbt raises a few (usage errors) instead of returning them
        exception, success, result = exc, False, None
    finally:
        if before is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = before
        if target.get("type") == "duckdb":
            _release_duckdb()
    if isinstance(exception, TransformStopped):
        raise exception  # dbt returned it as a result: the caller cancels this run's jobs

    nodes = _node_results(result)
    error: str | None = None
    if exception is not None:
        error = _describe_exception(exception)
        success = False
    elif not success:
        error = _failure_summary(command, nodes)

    artifacts = {
        key: target_path / name
        for key, name in ARTIFACT_FILES.items()
        if (target_path / name).is_file()
    }
    return DbtRunResult(
        command=command,
        ok=success,
        nodes=nodes,
        elapsed=round(time.monotonic() - started, 3),
        error=error,
        artifacts=artifacts,
    )


def keep_artifacts(store: Any, run_id: str, artifacts: dict[str, Path], keep: int) -> list[str]:
    """Copy run_results.json / manifest.json to `dbt-artifacts/<run_id>/` in the object store and
    delete every stored run but the newest `keep` (this one included). Runs are ordered by the
    generation of their objects (generations grow with each write). Returns the deleted run ids.
    """
    if "/" in run_id or not run_id:
        raise ValueError(f"run_id {run_id!r} must be a non-empty name without '/'.")
    if keep > 0:
        for key in ("run_results", "manifest"):
            path = artifacts.get(key)
            if path is not None and Path(path).is_file():
                store.write(f"{ARTIFACTS_PREFIX}{run_id}/{Path(path).name}", Path(path).read_bytes())

    runs: dict[str, list[Any]] = {}
    for info in store.list(ARTIFACTS_PREFIX):
        rest = info.name[len(ARTIFACTS_PREFIX):]
        rid, sep, _ = rest.partition("/")
        if not sep:
            continue
        runs.setdefault(rid, []).append(info)
    ordered = sorted(
        runs,
        key=lambda rid: (rid == run_id and keep > 0, max(i.generation for i in runs[rid]), rid),
        reverse=True,
    )
    deleted = []
    for rid in ordered[max(keep, 0):]:
        for info in runs[rid]:
            store.delete(info.name)
        deleted.append(rid)
    return deleted


def clean_work_dir(work_dir: Path) -> None:
    """Remove dbt's target and logs under work_dir (the profile is rewritten on each run)."""
    shutil.rmtree(Path(work_dir) / "dbt", ignore_errors=True)
