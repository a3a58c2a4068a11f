"""The benchmark cases. Each takes a Context and returns a JSON-able dict:

  {"series": [Series.as_dict()...],   # medians and every repeat
   "checks": [{"name", "value", "unit", "target", "met", "detail"}...],   # ratios and limits
   "info": {...}, "notes": [...]}

Subjects are real `estore-ops` processes; baselines are fresh `python -c` processes doing the same
work with DuckDB directly. Subject and baseline repeats are interleaved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.runner import (
    PYTHON,
    REPO,
    CommandFailed,
    Series,
    child_env,
    count_lines,
    estore,
    helper,
    helper_env,
    interleaved,
    python,
    run_once,
)

# -- sizes ----------------------------------------------------------------------------------------

FULL = {
    "load_big_rows": 1_000_000,
    "load_small_rows": 100_000,
    "load_small_files": 10,
    "large_rows": 10_000_000,
    "large_compare_rows": 1_000_000,
    "idle_files": 10_000,
    "first_load_files": [250, 1000],
    "listing_files": [10_000, 100_000],
    # fake-gcs-server's memory backend inserts objects in time growing with the bucket (an upload of
    # 10k objects takes over a minute, 100k would take hours), so the emulator variant stops at 10k.
    "gcs_listing_files": [1_000, 10_000],
    "transform_rows": [1_000_000, 10_000_000],
    "heavy_repeats": 3,  # cap for cases of tens of seconds per run (10M rows, dbt)
    "huge_repeats": 2,  # cap for the 10M-row dbt runs
    "verify_files": 1_000,
    "verify_rows": 10_000_000,
    # freshness: files arriving at random over the window; the timer baseline ticks every timer_s.
    "fresh_files": 50, "fresh_window_s": 60, "fresh_timer_s": 300, "fresh_catchup_s": 20, "fresh_idle_s": 30,
}
QUICK = {
    "load_big_rows": 20_000,
    "load_small_rows": 2_000,
    "load_small_files": 3,
    "large_rows": 100_000,
    "large_compare_rows": 10_000,
    "idle_files": 300,
    "first_load_files": [20, 80],
    "listing_files": [200, 2_000],
    "gcs_listing_files": [100, 1_000],
    "transform_rows": [20_000],
    "heavy_repeats": 1,
    "huge_repeats": 1,
    "verify_files": 20,
    "verify_rows": 20_000,
    "fresh_files": 8, "fresh_window_s": 6, "fresh_timer_s": 10, "fresh_catchup_s": 5, "fresh_idle_s": 3,
}

LOAD_WALL_TARGET = 1.15
LOAD_RSS_TARGET = 1.5
LARGE_RSS_GROWTH_TARGET = 1.25
CAPPED_LIMIT = "128MB"  # a load_memory_limit that a 1M-row load already reaches on 2 threads
IDLE_TARGET_S = 1.0
LISTING_GROWTH_TARGET = 15.0  # 10x more objects: ~10x time is linear; quadratic would be ~100x
STARTUP_TARGET_S = 0.6
# Incremental transform after a 1-day append vs a full refresh, at 10M events (issue 14). Smaller
# sizes are reported only: there dbt's fixed cost (start-up, parse, ~10 model round trips) dominates.
TRANSFORM_INCREMENTAL_TARGET = 0.3
TRANSFORM_TARGET_MIN_ROWS = 10_000_000
VERIFY_TARGET_S = 2.0  # issue 16: verify of 1,000 files / 10M rows on the embedded default, without --deep

# The verify baseline: the one grouped query verify runs, alone, in a fresh process.
BASELINE_GROUPED_COUNT = (
    "import sys, duckdb\n"
    "con = duckdb.connect(sys.argv[1], read_only=True)\n"
    "n = con.execute('SELECT _source_file, _source_generation, count(*) FROM raw.events GROUP BY 1, 2').fetchall()\n"
    "print(len(n), 'versions')\n"
)
CATCHUP_SCAN_TARGET_S = 2.0  # watch --events' catch-up scan of 100k objects (issue 15)

# The engine baseline: DuckDB's own reader creating the table, nothing else.
BASELINE_CTAS = (
    "import sys, duckdb\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "con.execute('CREATE TABLE events AS SELECT * FROM read_csv(?)', [sys.argv[2:] if len(sys.argv) > 3 else sys.argv[2]])\n"
    "con.close()\n"
)

# The transform baseline: the SQL dbt compiled, run directly in DuckDB in dependency order,
# each model materialized as dbt would (view or table; incremental models as tables).
BASELINE_MODELS = r'''
import json, sys, duckdb
manifest = json.load(open(sys.argv[2]))
nodes = {k: v for k, v in manifest["nodes"].items() if v["resource_type"] == "model"}
done, order = set(), []
def visit(uid):
    if uid in done: return
    done.add(uid)
    for dep in nodes[uid]["depends_on"]["nodes"]:
        if dep in nodes: visit(dep)
    order.append(uid)
for uid in sorted(nodes): visit(uid)
con = duckdb.connect(sys.argv[1])
con.execute("SET TimeZone = 'UTC'")
for uid in order:
    n = nodes[uid]
    kind = "VIEW" if n["config"]["materialized"] == "view" else "TABLE"
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{n["database"]}"."{n["schema"]}"')
    con.execute(f"CREATE OR REPLACE {kind} {n['relation_name']} AS {n['compiled_code']}")
con.close()
print(len(order), "models")
'''

@dataclass
class Context:
    work: Path  # this run's scratch folder (deleted at the end unless --keep-work)
    cache: Path  # generated inputs, reused across runs (same seed, same bytes)
    repeats: int
    quick: bool
    sizes: dict[str, Any]
    log: Callable[[str], None] = print
    _made: dict[str, Path] = field(default_factory=dict)

    def heavy(self) -> int:
        return max(1, min(self.repeats, self.sizes["heavy_repeats"]))

    def huge(self) -> int:
        return max(1, min(self.repeats, self.sizes["huge_repeats"]))

    # -- inputs ---------------------------------------------------------------------------------
    def generated(self, rows: int, files: int = 1, gzip: bool = False) -> Path:
        """A cached folder of generated monthly files (estore_ops.testing.generate.generate_files)."""
        users = max(5_000, rows // 10)
        key = f"gen-{files}x{rows}-u{users}-s46{'-gz' if gzip else ''}"
        folder = self.cache / key
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            self.log(f"  generating {files} file(s) x {rows:,} rows{' (gzip)' if gzip else ''} ...")
            args = ["generate", str(folder), "--rows", str(rows), "--files", str(files), "--users", str(users)]
            run = run_once(helper(*args + (["--gzip"] if gzip else [])), self.cache, helper_env())
            self.log(f"    {run.wall_s:.1f}s")
            (folder / ".done").write_text(run.output)
        return folder

    def tiny(self, count: int) -> Path:
        folder = self.cache / f"tiny-{count}"
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            run_once(helper("tiny", str(folder / "files"), "--count", str(count)), self.cache, helper_env())
            (folder / ".done").write_text("")
        return folder / "files"

    def files(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.name.endswith((".csv", ".csv.gz")))

    def landing(self, name: str, *sources: Path) -> Path:
        """A fresh landing folder holding hard links to the given files (no copy)."""
        dest = self.work / name
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for src in sources:
            for f in (self.files(src) if src.is_dir() else [src]):
                try:
                    os.link(f, dest / f.name)
                except OSError:
                    shutil.copy2(f, dest / f.name)
        return dest


def _rm(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            for q in (p, p.with_name(p.name + ".wal")):
                q.unlink(missing_ok=True)


def _estore_env(work_dir: Path, **extra: str) -> dict[str, str]:
    return child_env({"ESTORE_WORK_DIR": str(work_dir), "ESTORE_LOG_FORMAT": "json", **extra})


def _flags(landing: Path | str, state: Path, warehouse: Path) -> list[str]:
    return ["--landing", str(landing), "--state", str(state), "--warehouse", f"duckdb:///{warehouse}"]


def _load(flags: list[str], run_dir: Path, env: dict[str, str]) -> tuple[Any, tuple[int, int, int]]:
    """One `estore-ops load --json`: the run, and (files loaded, rows, files failed) read from its result."""
    run = run_once(estore(*flags, "load", "-q", "--json"), run_dir, env, stdout_apart=True)
    try:
        result = json.loads(run.stdout)
        return run, (int(result["files_loaded"]), int(result["rows"]), int(result["files_failed"]))
    except (ValueError, KeyError, TypeError):
        raise CommandFailed(f"no JSON load result on stdout:\n{run.stdout[-2000:]}\n{run.output[-2000:]}") from None


def _check(name: str, value: float | None, target: float | None, unit: str = "x", op: str = "<=",
           detail: str = "") -> dict[str, Any]:
    met = None if value is None or target is None else (value <= target if op == "<=" else value < target)
    return {"name": name, "value": None if value is None else round(value, 3), "unit": unit,
            "target": None if target is None else f"{op} {target:g}{'' if unit == 'x' else ' ' + unit}",
            "met": met, "detail": detail}


def _load_paths(run_dir: Path) -> tuple[Path, Path, Path]:
    """State folder, warehouse file and work folder of the loads run under run_dir."""
    return run_dir / "state", run_dir / "warehouse.duckdb", run_dir / "work"


def _run_load(landing: Path, run_dir: Path, rows: int, files: int, **env: str) -> Any:
    """One `estore-ops load` into a fresh state and warehouse; every file and row must load."""
    state, wh, work = _load_paths(run_dir)
    _rm(state, wh, work)
    run, (n_files, n_rows, failed) = _load(_flags(landing, state, wh), run_dir, _estore_env(work, **env))
    if failed or n_rows != rows or n_files != files:
        raise CommandFailed(f"expected {files} files / {rows} rows, got {n_files} / {n_rows} ({failed} failed)")
    return run


def _load_vs_ctas(ctx: Context, label: str, sources: list[Path], rows: int, repeats: int,
                  slug: str, per_file_too: bool = False) -> list[Series]:
    """Interleaved: `estore-ops load` of these files vs CTAS over read_csv of the same files (and,
    with per_file_too, the same load with one transaction per file: load_batch_mb = 0)."""
    run_dir = ctx.work / f"load-{slug}"
    landing = ctx.landing(f"load-{slug}/landing", *sources)
    files = [str(p) for p in ctx.files(landing)]
    base_db = run_dir / "baseline.duckdb"
    subject = Series(f"estore-ops load: {label}", "subject", extra={"rows": rows, "files": len(files)})
    baseline = Series(f"DuckDB CTAS read_csv: {label}", "baseline", extra={"rows": rows, "files": len(files)})

    def run_subject(**env: str) -> Any:
        return _run_load(landing, run_dir, rows, len(files), **env)

    def run_baseline() -> Any:
        _rm(base_db)
        return run_once(python("-c", BASELINE_CTAS, str(base_db), *files), run_dir)

    jobs: list[tuple[Series, Any]] = [(subject, run_subject), (baseline, run_baseline)]
    if per_file_too:
        per_file = Series(f"estore-ops load, one transaction per file: {label}", "variant",
                          extra={"rows": rows, "files": len(files)})
        jobs.append((per_file, lambda: run_subject(ESTORE_LOAD_BATCH_MB="0")))
    interleaved(repeats, *jobs)
    for s, _ in jobs:
        s.extra["rows_per_s"] = round(rows / s.wall)
    _rm(*_load_paths(run_dir), base_db)
    return [s for s, _ in jobs]


# -- 1. load throughput -------------------------------------------------------------------------------


def case_load(ctx: Context) -> dict[str, Any]:
    big, small, n_small = ctx.sizes["load_big_rows"], ctx.sizes["load_small_rows"], ctx.sizes["load_small_files"]
    variants = [
        (f"1 file x {big:,} rows", [ctx.generated(big)], big, "one"),
        (f"{n_small} files x {small:,} rows", [ctx.generated(small, files=n_small)], small * n_small, "ten"),
    ]
    series, checks = [], []
    for label, sources, rows, slug in variants:
        ctx.log(f"  {label}")
        subject, baseline, *per_file = _load_vs_ctas(ctx, label, sources, rows, ctx.repeats, slug,
                                                     per_file_too=slug == "ten")
        series += [subject, baseline, *per_file]
        if per_file:
            checks.append(_check(f"batched vs one transaction per file, {label}", subject.wall / per_file[0].wall, None,
                                 detail=f"{subject.wall:.3f}s vs {per_file[0].wall:.3f}s (load_batch_mb=0)"))
        checks.append(_check(f"wall time vs CTAS, {label}", subject.wall / baseline.wall, LOAD_WALL_TARGET,
                             detail=f"{subject.wall:.3f}s vs {baseline.wall:.3f}s"))
        checks.append(_check(f"peak RSS vs CTAS, {label}", subject.rss / baseline.rss, LOAD_RSS_TARGET,
                             detail=f"{subject.rss:.0f} MiB vs {baseline.rss:.0f} MiB"))
    return {"series": [s.as_dict() for s in series], "checks": checks}


# -- 2. large file, bounded memory ------------------------------------------------------------------


def case_large(ctx: Context) -> dict[str, Any]:
    small, large = ctx.sizes["large_compare_rows"], ctx.sizes["large_rows"]
    series, checks, by = [], [], {}
    for gz in (False, True):
        fmt = "gzip" if gz else "plain"
        for rows in (small, large):
            label = f"{rows:,} rows {fmt}"
            ctx.log(f"  {label}")
            src = ctx.generated(rows, gzip=gz)
            size = sum(p.stat().st_size for p in ctx.files(src))
            subject, baseline = _load_vs_ctas(ctx, label, [src], rows, ctx.heavy(), f"large-{fmt}-{rows}")[:2]
            for s in (subject, baseline):
                s.extra["file_mb"] = round(size / 2**20, 1)
                s.extra["mb_per_s"] = round(size / 2**20 / s.wall, 1)
            series += [subject, baseline]
            by[(fmt, rows)] = (subject, baseline)
        s_small, b_small = by[(fmt, small)]
        s_large, b_large = by[(fmt, large)]
        checks.append(_check(f"peak RSS growth {small:,} -> {large:,} rows ({fmt})", s_large.rss / s_small.rss,
                             LARGE_RSS_GROWTH_TARGET, detail=f"{s_small.rss:.0f} -> {s_large.rss:.0f} MiB "
                             f"(CTAS baseline {b_small.rss:.0f} -> {b_large.rss:.0f} MiB)"))
        checks.append(_check(f"wall time vs CTAS, {large:,} rows {fmt}", s_large.wall / b_large.wall, LOAD_WALL_TARGET,
                             detail=f"{s_large.extra['rows_per_s']:,} vs {b_large.extra['rows_per_s']:,} rows/s"))
        checks.append(_check(f"peak RSS vs CTAS, {large:,} rows {fmt}", s_large.rss / b_large.rss, LOAD_RSS_TARGET,
                             detail=f"{s_large.rss:.0f} MiB vs {b_large.rss:.0f} MiB"))
    # The limit, not the file, sets the peak: with a limit the 1M-row load already reaches, the
    # 10M-row peak is the same. (At the default limit a 1M-row load stops below it.)
    capped = {}
    for rows in (small, large):
        label = f"{rows:,} rows plain, load_memory_limit={CAPPED_LIMIT}"
        ctx.log(f"  {label}")
        capped[rows] = _load_only(ctx, label, ctx.generated(rows), rows, ctx.heavy(), f"capped-{rows}",
                                  ESTORE_LOAD_MEMORY_LIMIT=CAPPED_LIMIT)
        series.append(capped[rows])
    checks.append(_check(f"peak RSS growth {small:,} -> {large:,} rows (plain) at load_memory_limit={CAPPED_LIMIT}",
                         capped[large].rss / capped[small].rss, LARGE_RSS_GROWTH_TARGET,
                         detail=f"{capped[small].rss:.0f} -> {capped[large].rss:.0f} MiB, "
                                f"{capped[large].extra['rows_per_s']:,} rows/s at 10x the rows"))
    return {"series": [s.as_dict() for s in series], "checks": checks}


def _load_only(ctx: Context, label: str, src: Path, rows: int, repeats: int, slug: str, **env: str) -> Series:
    run_dir = ctx.work / f"load-{slug}"
    landing = ctx.landing(f"load-{slug}/landing", src)
    series = Series(f"estore-ops load: {label}", "variant", extra={"rows": rows})
    for _ in range(repeats):
        series.runs.append(_run_load(landing, run_dir, rows, len(ctx.files(landing)), **env))
    series.extra["rows_per_s"] = round(rows / series.wall)
    _rm(*_load_paths(run_dir))
    return series


# -- 3. idle tick -------------------------------------------------------------------------------------


def case_idle(ctx: Context) -> dict[str, Any]:
    from estore_ops.ingest.pipeline import KEEP_RECORDS

    n = ctx.sizes["idle_files"]
    series, checks, info, notes = [], [], {}, []
    ctx.log(f"  {n:,} loaded files in the state")
    t0 = time.perf_counter()
    landing = ctx.landing("idle/landing", ctx.tiny(n))
    info["setup_landing_s"] = round(time.perf_counter() - t0, 2)
    run_dir = ctx.work / "idle"
    for settled in (False, True):
        variant = (f"records beyond the newest {KEEP_RECORDS:,} folded (what every load leaves)" if settled
                   else "every record whole (the worst case: nothing folded yet)")
        slug = "settled" if settled else "fresh"
        state, wh, work = run_dir / f"state-{slug}", run_dir / "warehouse.duckdb", run_dir / "work"
        _rm(state)
        built = run_once(helper("state", str(landing), str(state), *(["--settled"] if settled else [])), run_dir, helper_env())
        doc = json.loads(built.output.strip().splitlines()[-1])
        info[f"state_{slug}"] = {"records": doc["records"], "folded": doc["folded"], "bytes": doc["bytes"],
                                 "setup_s": round(built.wall_s, 2)}
        scan = Series(f"scan, {n:,} files, state {variant}", "subject",
                      extra={"state_records": doc["records"], "state_bytes": doc["bytes"]})
        load = Series(f"load (nothing new), {n:,} files, state {variant}", "subject",
                      extra={"state_records": doc["records"], "state_bytes": doc["bytes"]})

        def run_scan() -> Any:
            run = run_once(estore(*_flags(landing, state, wh), "scan"), run_dir, _estore_env(work))
            if "Nothing new" not in run.output:
                raise CommandFailed(f"scan found pending files:\n{run.output[-2000:]}")
            return run

        def run_load() -> Any:
            run = run_once(estore(*_flags(landing, state, wh), "load", "-q"), run_dir, _estore_env(work))
            if "Nothing new to load" not in run.output:
                raise CommandFailed(f"idle load loaded something:\n{run.output[-2000:]}")
            return run

        interleaved(ctx.repeats, (scan, run_scan), (load, run_load))
        series += [scan, load]
        for s, what in ((scan, "scan"), (load, "load")):
            checks.append(_check(f"{what}, {n:,} files, {doc['records']:,} records ({doc['bytes'] / 1024:.0f} KiB state)",
                                 s.wall, IDLE_TARGET_S, unit="s"))
    # Setup by the real loader (not a case): the first load of many small files, per file.
    for count in ctx.sizes["first_load_files"]:
        ctx.log(f"  first load of {count} tiny files (setup cost, info)")
        land = ctx.landing(f"idle/first-{count}", ctx.tiny(count))
        state, wh = run_dir / f"first-state-{count}", run_dir / f"first-{count}.duckdb"
        _rm(state, wh)
        s = Series(f"setup: first load of {count:,} tiny files (info)", "info")
        s.runs.append(run_once(estore(*_flags(land, state, wh), "load", "-q"), run_dir, _estore_env(run_dir / "work")))
        s.extra["ms_per_file"] = round(s.wall / count * 1000, 1)
        s.extra["state_bytes"] = (state / "cursor.json").stat().st_size
        series.append(s)
        _rm(state, wh, land)
    first = [s for s in series if s.role == "info"]
    if len(first) == 2:
        a, b = ctx.sizes["first_load_files"]
        info["first_load_growth"] = round(first[1].wall / first[0].wall, 2)
        notes.append(f"First load of {b} vs {a} tiny files: {first[1].wall / first[0].wall:.1f}x the time for "
                     f"{b / a:.0f}x the files ({first[0].extra['ms_per_file']} -> {first[1].extra['ms_per_file']} ms per file).")
    return {"series": [s.as_dict() for s in series], "checks": checks, "info": info, "notes": notes}


# -- 4. listing scale ---------------------------------------------------------------------------------


class FakeGCSServer:
    """fake-gcs-server with the memory backend on a free port (objects are uploaded through its API)."""

    def __init__(self, binary: Path, log: Path, extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")  # noqa: SIM115
        self.log_path = log
        self.proc = subprocess.Popen(
            [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), "-backend", "memory",
             "-log-level", "error", "-external-url", self.endpoint, *(extra or [])],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 60) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise CommandFailed(f"fake-gcs-server exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=2):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.1)
        raise CommandFailed(f"fake-gcs-server did not start in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def _tools_dir() -> Path:
    return Path(os.environ.get("ESTORE_TOOLS_DIR") or REPO / ".tools")


def case_listing(ctx: Context) -> dict[str, Any]:
    counts = ctx.sizes["listing_files"]
    series, checks, notes, info = [], [], [], {}
    run_dir = ctx.work / "listing"
    by: dict[tuple[str, int], Series] = {}
    for n in counts:
        ctx.log(f"  local folder, {n:,} objects")
        landing = ctx.landing(f"listing/landing-{n}", ctx.tiny(n))
        state, wh = run_dir / "state", run_dir / "warehouse.duckdb"
        s = Series(f"scan, local folder, {n:,} new objects", "subject", extra={"objects": n})
        for _ in range(ctx.heavy()):
            run = run_once(estore(*_flags(landing, state, wh), "scan"), run_dir, _estore_env(run_dir / "work"))
            if count_lines(run.log, b"file=") != n:
                raise CommandFailed(f"scan did not list {n} pending files:\n{run.output[-1500:]}")
            s.runs.append(run)
        s.extra["us_per_object"] = round(s.wall / n * 1e6, 1)
        series.append(s)
        by[("local", n)] = s
        if n == max(counts):
            # The catch-up scan of `watch --events`: the same objects, all loaded (state as the
            # loader leaves it after compaction), listed and classified; nothing printed per file.
            state = run_dir / "state-settled"
            _rm(state)
            run_once(helper("state", str(landing), str(state), "--settled"), run_dir, helper_env())
            c = Series(f"catch-up scan (scan, nothing new), local folder, {n:,} loaded objects", "subject", extra={"objects": n})
            for _ in range(ctx.heavy()):
                run = run_once(estore(*_flags(landing, state, wh), "scan"), run_dir, _estore_env(run_dir / "work"))
                if "Nothing new" not in run.output:
                    raise CommandFailed(f"the catch-up scan found pending files:\n{run.output[-1500:]}")
                c.runs.append(run)
            c.extra["us_per_object"] = round(c.wall / n * 1e6, 1)
            series.append(c)
            checks.append(_check(f"catch-up scan of {n:,} loaded objects (local folder, whole process)", c.wall,
                                 CATCHUP_SCAN_TARGET_S, unit="s"))
            _rm(state)
        _rm(landing)
    binary = _tools_dir() / "bin" / "fake-gcs-server"
    if not os.access(binary, os.X_OK):
        notes.append(f"fake-gcs-server not found at {binary}: the GCS listing variant was skipped (run `make tools`).")
    else:
        sample = next(iter(ctx.files(ctx.tiny(counts[0]))))
        notes.append("The fake-gcs-server variant lists {} objects: the emulator's memory backend slows down as a "
                     "bucket fills (see the upload times in the info), so 100k objects cannot be staged in it within "
                     "the bench budget.".format(" and ".join(f"{n:,}" for n in ctx.sizes["gcs_listing_files"])))
        ctx.log("  starting fake-gcs-server (memory backend)")
        server = FakeGCSServer(binary, run_dir / "fake-gcs-server.log")
        try:
            info["fake_gcs_start_s"] = round(server.wait_ready(), 2)
            env = child_env({"STORAGE_EMULATOR_HOST": server.endpoint, "GOOGLE_CLOUD_PROJECT": "bench",
                             "ESTORE_WORK_DIR": str(run_dir / "work"), "ESTORE_LOG_FORMAT": "json"})
            for n in ctx.sizes["gcs_listing_files"]:
                up = run_once(helper("gcs-upload", server.endpoint, "--bucket", f"bench-{n}", "--prefix", "landing",
                                     "--sample", str(sample), "--count", str(n)), run_dir, helper_env())
                info[f"fake_gcs_upload_{n}_s"] = round(up.wall_s, 1)
                ctx.log(f"  fake-gcs-server, {n:,} objects (uploaded in {up.wall_s:.1f}s)")
                s = Series(f"scan, fake-gcs-server, {n:,} new objects", "subject", extra={"objects": n})
                for _ in range(ctx.heavy()):
                    run = run_once(estore(*_flags(f"gs://bench-{n}/landing", run_dir / "state", run_dir / "wh.duckdb"),
                                          "scan"), run_dir, env)
                    if count_lines(run.log, b"file=") != n:
                        raise CommandFailed(f"scan did not list {n} pending objects:\n{run.output[-1500:]}")
                    s.runs.append(run)
                s.extra["us_per_object"] = round(s.wall / n * 1e6, 1)
                series.append(s)
                by[("gcs", n)] = s
        except Exception as exc:  # noqa: BLE001  # the emulator is a stand-in: keep the local numbers
            notes.append(f"fake-gcs-server variant failed: {str(exc)[:500]}")
        finally:
            server.stop()
    for kind, label, (a, b) in (("local", "local folder", counts),
                                ("gcs", "fake-gcs-server", ctx.sizes["gcs_listing_files"])):
        if (kind, a) in by and (kind, b) in by:
            ratio = by[(kind, b)].wall / by[(kind, a)].wall
            checks.append(_check(f"scan time growth {a:,} -> {b:,} objects ({label})", ratio, LISTING_GROWTH_TARGET,
                                 detail=f"{by[(kind, a)].wall:.2f}s -> {by[(kind, b)].wall:.2f}s for {b / a:.0f}x the objects"))
    return {"series": [s.as_dict() for s in series], "checks": checks, "info": info, "notes": notes}


# -- 5. transform -------------------------------------------------------------------------------------


def _copy(src: Path, dest: Path) -> None:
    _rm(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def case_transform(ctx: Context) -> dict[str, Any]:
    series, checks, notes = [], [], []
    for rows in ctx.sizes["transform_rows"]:
        reps = ctx.huge() if rows >= 5_000_000 else ctx.heavy()
        run_dir = ctx.work / f"transform-{rows}"
        landing = ctx.landing(f"transform-{rows}/landing", ctx.generated(rows))
        state, work = run_dir / "state", run_dir / "work"
        wh = run_dir / "live" / "warehouse.duckdb"
        base_db = run_dir / "baseline" / "warehouse.duckdb"  # same file name: same database name in the SQL
        snap_loaded, snap_day = run_dir / "snap-loaded.duckdb", run_dir / "snap-day.duckdb"
        manifest = run_dir / "manifest-full-refresh.json"
        env = _estore_env(work)
        flags = _flags(landing, state, wh)
        ctx.log(f"  {rows:,} events: load + first dbt run (setup)")
        run_once(estore(*flags, "load", "-q"), run_dir, env)
        setup = run_once(estore(*flags, "transform", "--full-refresh", "--no-test"), run_dir, env)
        shutil.copyfile(work / "dbt" / "target" / "manifest.json", manifest)
        shutil.copyfile(wh, snap_loaded)
        tag = f"{rows:,} events"
        full = Series(f"transform --full-refresh --no-test, {tag}", "subject", extra={"rows": rows})
        base = Series(f"compiled model SQL in DuckDB, {tag}", "baseline", extra={"rows": rows})
        tested = Series(f"transform --full-refresh (models + tests), {tag}", "info", extra={"rows": rows})

        def run_full() -> Any:
            _copy(snap_loaded, wh)
            return run_once(estore(*flags, "transform", "--full-refresh", "--no-test"), run_dir, env)

        def run_base() -> Any:
            _copy(snap_loaded, base_db)
            return run_once(python("-c", BASELINE_MODELS, str(base_db), str(manifest)), base_db.parent)

        def run_tested() -> Any:
            _copy(snap_loaded, wh)
            return run_once(estore(*flags, "transform", "--full-refresh"), run_dir, env)

        ctx.log(f"  {tag}: full refresh vs compiled SQL")
        # Tests are reported for information only (the baseline has none); skipped by --quick.
        with_tests = not ctx.quick and rows < 5_000_000  # a 10M-row build with tests adds minutes
        jobs = [(full, run_full), (base, run_base)] + ([(tested, run_tested)] if with_tests else [])
        interleaved(reps, *jobs)
        # 1-day append: one more file with one day of events (about 1/30 of the month).
        day_rows = max(100, rows // 30)
        day = run_dir / "day" / "2019-Nov-01.csv"
        run_once(helper("day", str(day), "--rows", str(day_rows), "--users", str(max(5_000, rows // 10))), run_dir, helper_env())
        _copy(snap_loaded, wh)
        os.link(day, landing / day.name)
        loaded, (_, loaded_rows, _) = _load(flags, run_dir, env)
        if loaded_rows != day_rows:
            raise CommandFailed(f"the 1-day append did not load {day_rows} rows:\n{loaded.stdout[-1500:]}")
        shutil.copyfile(wh, snap_day)
        incr = Series(f"transform --no-test after a 1-day append ({day_rows:,} rows), {tag}", "subject",
                      extra={"rows": rows, "appended_rows": day_rows})
        refresh = Series(f"transform --full-refresh --no-test after the append, {tag}", "subject",
                         extra={"rows": rows + day_rows})

        def run_incr() -> Any:
            _copy(snap_day, wh)
            return run_once(estore(*flags, "transform", "--no-test"), run_dir, env)

        def run_refresh() -> Any:
            _copy(snap_day, wh)
            return run_once(estore(*flags, "transform", "--full-refresh", "--no-test"), run_dir, env)

        ctx.log(f"  {tag}: incremental vs full refresh after a 1-day append")
        interleaved(reps, (incr, run_incr), (refresh, run_refresh))
        series += [full, base] + ([tested] if with_tests else []) + [incr, refresh]
        full.extra["setup_first_run_s"] = round(setup.wall_s, 2)
        checks.append(_check(f"dbt overhead: full refresh vs compiled SQL, {tag}", full.wall / base.wall, None,
                             detail=f"{full.wall:.2f}s vs {base.wall:.2f}s (+{full.wall - base.wall:.2f}s)"))
        target = TRANSFORM_INCREMENTAL_TARGET if rows >= TRANSFORM_TARGET_MIN_ROWS else None
        checks.append(_check(f"incremental vs full refresh after a 1-day append, {tag}", incr.wall / refresh.wall, target,
                             detail=f"{incr.wall:.2f}s vs {refresh.wall:.2f}s"))
        _rm(run_dir)
    notes.append("The baseline runs each model's compiled SQL (from dbt's manifest of a --full-refresh run) as "
                 "CREATE OR REPLACE VIEW/TABLE in dependency order; it skips dbt's post-hooks and tests.")
    notes.append(f"Incremental vs full refresh: target <= {TRANSFORM_INCREMENTAL_TARGET}x from "
                 f"{TRANSFORM_TARGET_MIN_ROWS:,} events; smaller sizes are reported only (dbt's fixed cost dominates).")
    return {"series": [s.as_dict() for s in series], "checks": checks, "notes": notes}


# -- 6. start-up --------------------------------------------------------------------------------------


_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtime_offenders(argv: list[str], cwd: Path, env: dict[str, str], top: int = 8) -> dict[str, Any]:
    code = "import sys; sys.argv[0] = 'estore-ops'; from estore_ops.cli import main; main()"
    run = run_once([str(PYTHON), "-X", "importtime", "-c", code, *argv], cwd, env, check=False)
    rows = []
    for m in _IMPORTTIME.finditer(run.output):
        rows.append((int(m.group(1)), int(m.group(2)), len(m.group(3)), m.group(4)))
    top_level = sorted((r for r in rows if r[2] == 1), key=lambda r: -r[1])[:top]
    by_self = sorted(rows, key=lambda r: -r[0])[:top]
    return {
        "total_ms": round(sum(r[1] for r in rows if r[2] == 1) / 1000, 1),
        "top_level_cumulative_ms": [[r[3], round(r[1] / 1000, 1)] for r in top_level],
        "top_self_ms": [[r[3], round(r[0] / 1000, 1)] for r in by_self],
    }


def case_startup(ctx: Context) -> dict[str, Any]:
    run_dir = ctx.work / "startup"
    landing = ctx.landing("startup/landing", ctx.tiny(ctx.sizes["idle_files"]))
    state, wh = run_dir / "state", run_dir / "warehouse.duckdb"
    built = run_once(helper("state", str(landing), str(state), "--settled"), run_dir, helper_env())
    doc = json.loads(built.output.strip().splitlines()[-1])
    env = _estore_env(run_dir / "work")
    floor = Series("python -c pass (interpreter floor)", "baseline")
    bare = Series("python -c 'import duckdb' (floor with DuckDB)", "baseline")
    helps = Series("estore-ops --help", "subject")
    show = Series(f"estore-ops cursor show ({doc['records']:,} records)", "subject", extra={"state_bytes": doc["bytes"]})
    reps = max(ctx.repeats, 5)
    interleaved(
        reps,
        (floor, lambda: run_once(python("-c", "pass"), run_dir)),
        (bare, lambda: run_once(python("-c", "import duckdb"), run_dir)),
        (helps, lambda: run_once(estore("--help"), run_dir, env)),
        (show, lambda: run_once(estore(*_flags(landing, state, wh), "cursor", "show"), run_dir, env)),
    )
    checks, info = [], {}
    for s, argv, key in ((helps, ["--help"], "help"), (show, [*_flags(landing, state, wh), "cursor", "show"], "cursor_show")):
        checks.append(_check(s.name, s.wall, STARTUP_TARGET_S, unit="s"))
        info[f"importtime_{key}"] = importtime_offenders(argv, run_dir, env)
    return {"series": [s.as_dict() for s in (helps, show, floor, bare)], "checks": checks, "info": info}


# -- 7. verify ----------------------------------------------------------------------------------------

_VERIFIED = re.compile(r"verify: everything agrees; (\d+) file version\(s\) checked")


def case_verify(ctx: Context) -> dict[str, Any]:
    files, rows = ctx.sizes["verify_files"], ctx.sizes["verify_rows"]
    run_dir = ctx.work / "verify"
    landing = run_dir / "landing"
    ctx.log(f"  splitting {rows:,} generated rows into {files:,} files")
    split = run_once(helper("split", str(ctx.generated(rows)), str(landing), "--count", str(files)), run_dir, helper_env())
    state, wh, work = _load_paths(run_dir)
    env = _estore_env(work)
    flags = _flags(landing, state, wh)
    ctx.log(f"  loading them (setup, {split.wall_s:.1f}s to split)")
    setup = _run_load(landing, run_dir, rows, files)

    def run_verify(*extra: str) -> Any:
        run = run_once(estore(*flags, "verify", *extra), run_dir, env)
        found = _VERIFIED.search(run.output)
        if not found or int(found.group(1)) != files:
            raise CommandFailed(f"verify did not check {files} agreeing files:\n{run.output[-1500:]}")
        return run

    subject = Series(f"estore-ops verify, {files:,} files, {rows:,} rows", "subject", extra={"files": files, "rows": rows})
    baseline = Series(f"the grouped count query alone (DuckDB, fresh process), {rows:,} rows", "baseline", extra={"rows": rows})
    deep = Series(f"estore-ops verify --deep (recounts every file), {files:,} files, {rows:,} rows", "info",
                  extra={"files": files, "rows": rows})
    ctx.log(f"  verify vs the grouped query alone ({ctx.repeats} repeats), then --deep")
    interleaved(ctx.repeats, (subject, run_verify),
                (baseline, lambda: run_once(python("-c", BASELINE_GROUPED_COUNT, str(wh)), run_dir)))
    interleaved(ctx.heavy(), (deep, lambda: run_verify("--deep")))
    deep.extra["rows_per_s"] = round(rows / deep.wall)
    checks = [
        _check(f"verify, {files:,} files / {rows:,} rows, embedded, no --deep", subject.wall, VERIFY_TARGET_S, unit="s",
               detail=f"grouped query alone {baseline.wall:.2f}s; verify --deep {deep.wall:.2f}s"),
        _check("verify vs its grouped query alone", subject.wall / baseline.wall, None,
               detail=f"{subject.wall:.2f}s vs {baseline.wall:.2f}s (state read, listing, lock, run record)"),
    ]
    info = {"setup_load_s": round(setup.wall_s, 1), "setup_split_s": round(split.wall_s, 1)}
    _rm(run_dir)
    return {"series": [s.as_dict() for s in (subject, baseline, deep)], "checks": checks, "info": info}
def case_freshness(ctx: Context) -> dict[str, Any]:
    from bench.freshness import case_freshness as run

    return run(ctx)


CASES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "load": case_load,
    "large": case_large,
    "idle": case_idle,
    "listing": case_listing,
    "transform": case_transform,
    "startup": case_startup,
    "verify": case_verify,
    "freshness": case_freshness,
}
