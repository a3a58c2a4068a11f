"""`python -m bench`: run the cases, print medians and ratios, write bench/results/*.json.

A full run (all cases, not --quick) also renders BENCHMARKS.md; `--write-markdown` alone renders
it from bench/results/latest.json (or --json PATH) without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import cases
from bench.markdown import render_markdown
from bench.runner import PYTHON, REPO, self_rss_mb

RESULTS = REPO / "bench" / "results"
MARKDOWN = REPO / "BENCHMARKS.md"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    code = ("import duckdb, sys, platform, json\n"
            "from importlib.metadata import version\n"
            "print(json.dumps({'python': platform.python_version(), 'duckdb': duckdb.__version__,"
            " 'dbt_core': version('dbt-core'), 'dbt_duckdb': version('dbt-duckdb'), 'typer': version('typer')}))")
    versions = json.loads(subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True, check=True).stdout)
    return {
        "cpu_model": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        **versions,
    }


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return ""


def print_case(name: str, result: dict[str, Any]) -> None:
    print(f"\n== {name} ({result.get('seconds', 0):.0f}s)")
    if result.get("error"):
        print(f"   ERROR: {result['error'].splitlines()[-1]}")
        return
    print(f"   {'median wall':>11} {'peak RSS':>9}  n  series")
    for s in result.get("series", []):
        extra = s.get("extra", {})
        more = "  ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in extra.items()
                         if k in ("rows_per_s", "us_per_object", "ms_per_file", "state_bytes", "state_records"))
        print(f"   {s['wall_s']:>10.3f}s {s['rss_mb']:>7.0f}MB {s['repeats']:>2}  [{s['role']}] {s['name']}  {more}")
    for c in result.get("checks", []):
        verdict = {True: "MET ", False: "MISS", None: "info"}[c["met"]]
        unit = "x" if c["unit"] == "x" else f" {c['unit']}"
        print(f"   {verdict} {c['value']}{unit} (target {c['target'] or '-'})  {c['name']}  {c['detail']}")
    for n in result.get("notes", []):
        print(f"   note: {n}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="Tiny sizes (smoke test; seconds, numbers meaningless).")
    p.add_argument("--cases", default=",".join(cases.CASES), help=f"Comma-separated subset of: {', '.join(cases.CASES)}.")
    p.add_argument("--repeats", type=int, default=None, help="Runs per measurement (default 5; 1 with --quick). "
                   "Cases of tens of seconds per run are capped (10M-row loads at 3, 10M-row dbt runs at 2).")
    p.add_argument("--write-markdown", action="store_true",
                   help="Only render BENCHMARKS.md from the results JSON (--json, default bench/results/latest.json).")
    p.add_argument("--json", type=Path, default=None, help="Results file for --write-markdown.")
    p.add_argument("--markdown-path", type=Path, default=MARKDOWN, help="Where --write-markdown writes (default BENCHMARKS.md).")
    p.add_argument("--no-markdown", action="store_true", help="Do not render BENCHMARKS.md after a full run.")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "estore-ops-bench-cache",
                   help="Generated inputs, reused across runs (deterministic).")
    p.add_argument("--keep-work", action="store_true", help="Keep the scratch folder (printed) for inspection.")
    p.add_argument("--merge", action="store_true",
                   help="Replace only the cases run now in bench/results/latest.json (e.g. to rerun one case after "
                        "a fix); each case keeps its own started_at, shown in BENCHMARKS.md.")
    a = p.parse_args(argv)

    if a.write_markdown:
        src = a.json or a.results_dir / "latest.json"
        data = json.loads(src.read_text())
        a.markdown_path.write_text(render_markdown(data, src))
        print(f"wrote {a.markdown_path} from {src}")
        return 0

    names = [n.strip() for n in a.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in cases.CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(cases.CASES)}")
    repeats = a.repeats or (1 if a.quick else 5)
    a.cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="estore-bench-"))
    sizes = cases.QUICK if a.quick else cases.FULL
    ctx = cases.Context(work=work, cache=a.cache_dir / ("quick" if a.quick else "full"), repeats=repeats,
                        quick=a.quick, sizes=sizes, log=lambda m: print(m, flush=True))
    ctx.cache.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    data: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "quick": a.quick,
        "repeats": repeats,
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git": git_revision(),
        "machine": machine(),
        "sizes": sizes,
        "targets": {"load_wall_ratio": cases.LOAD_WALL_TARGET, "load_rss_ratio": cases.LOAD_RSS_TARGET,
                    "large_rss_growth": cases.LARGE_RSS_GROWTH_TARGET, "idle_s": cases.IDLE_TARGET_S,
                    "listing_growth": cases.LISTING_GROWTH_TARGET, "startup_s": cases.STARTUP_TARGET_S,
                    "transform_incremental_ratio": cases.TRANSFORM_INCREMENTAL_TARGET,
                    "verify_s": cases.VERIFY_TARGET_S},
        "cases": {},
    }
    print(f"estore-ops bench: cases {', '.join(names)}; repeats {repeats}; scratch {work}", flush=True)
    failed = False
    try:
        for name in names:
            print(f"\n-- {name}", flush=True)
            t0 = time.perf_counter()
            case_started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            try:
                result = cases.CASES[name](ctx)
            except Exception as exc:  # one broken case must not lose the others' numbers
                failed = True
                result = {"series": [], "checks": [], "error": "".join(traceback.format_exception(exc))[-6000:]}
            result["seconds"] = round(time.perf_counter() - t0, 1)
            result["started_at"] = case_started
            result["git"] = git_revision()
            data["cases"][name] = result
            print_case(name, result)
    finally:
        if not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    data["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data["harness_max_rss_mb"] = round(self_rss_mb(), 1)

    a.results_dir.mkdir(parents=True, exist_ok=True)
    if a.merge and (a.results_dir / "latest.json").exists():
        previous = json.loads((a.results_dir / "latest.json").read_text())
        if previous.get("quick") == a.quick:
            merged = dict(previous["cases"])
            merged.update(data["cases"])
            data["cases"] = {n: merged[n] for n in cases.CASES if n in merged}
            data["merged_from"] = previous.get("merged_from", []) + [previous["started_at"]]
            data["command"] = previous.get("command", "") + " ; " + data["command"]
            names = list(data["cases"])
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if a.quick else "")
    out = a.results_dir / f"{stamp}.json"
    text = json.dumps(data, indent=2)
    out.write_text(text)
    (a.results_dir / "latest.json").write_text(text)
    print(f"\nwrote {out} and {a.results_dir / 'latest.json'} (harness peak RSS {data['harness_max_rss_mb']} MiB)")
    complete = set(names) == set(cases.CASES) and not any(c.get("error") for c in data["cases"].values())
    full_run = not a.quick and complete
    if full_run and not a.no_markdown:
        a.markdown_path.write_text(render_markdown(data, out))
        print(f"wrote {a.markdown_path}")
    return 1 if failed else 0
