"""The benchmark harness runs end to end at tiny sizes (`python -m bench --quick`).

Asserts that the cases ran and produced their series and checks, and that BENCHMARKS.md renders
from the JSON. Timings are not asserted: at these sizes they mean nothing. `make test` runs the
cases that take seconds; the dbt and `watch --events` cases (about 85 s even at these sizes, most of
the smoke test's time) run with every other case under `make drill`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cases import CASES

REPO = Path(__file__).resolve().parent.parent
SLOW_CASES = ("transform", "freshness")  # dbt runs; emulators and the timer baseline's waits


@pytest.mark.parametrize("cases", [
    pytest.param([c for c in CASES if c not in SLOW_CASES], id="fast-cases"),
    pytest.param(list(CASES), id="every-case", marks=pytest.mark.drill),
])
def test_bench_quick_end_to_end(tmp_path: Path, cases: list[str]) -> None:
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--repeats", "1", "--results-dir", str(results),
         "--cache-dir", str(tmp_path / "cache"), "--cases", ",".join(cases)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    latest = json.loads((results / "latest.json").read_text())
    stamped = [p for p in results.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1 and json.loads(stamped[0].read_text()) == latest
    assert latest["quick"] is True
    assert set(latest["cases"]) == set(cases)
    for name, case in latest["cases"].items():
        assert "error" not in case, f"{name}: {case.get('error')}"
        assert case["series"], name
        for s in case["series"]:
            assert s["repeats"] >= 1 and s["wall_s"] > 0 and s["rss_mb"] > 0, (name, s)
    roles = {s["role"] for s in latest["cases"]["load"]["series"]}
    assert roles >= {"subject", "baseline"}
    checks = {c["name"] for case in latest["cases"].values() for c in case["checks"]}
    assert any("wall time vs CTAS" in c for c in checks)
    assert any("peak RSS growth" in c for c in checks)
    if "transform" in cases:
        assert any("dbt overhead" in c for c in checks)
    assert latest["machine"]["cores"] >= 1 and latest["machine"]["duckdb"]

    markdown = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--write-markdown", "--json", str(results / "latest.json"),
         "--markdown-path", str(markdown)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    text = markdown.read_text()
    assert "## Machine" in text and "## Summary of targets" in text
    for case in cases:
        assert case in text
