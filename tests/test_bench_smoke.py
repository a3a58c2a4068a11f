"""The benchmark harness runs end to end at tiny sizes (`python -m bench --quick`).

Asserts that every case ran and produced its series and checks, and that BENCHMARKS.md renders
from the JSON. Timings are not asserted: at these sizes they mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.cases import CASES

REPO = Path(__file__).resolve().parent.parent


def test_bench_quick_end_to_end(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--repeats", "1", "--results-dir", str(results),
         "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    latest = json.loads((results / "latest.json").read_text())
    stamped = [p for p in results.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1 and json.loads(stamped[0].read_text()) == latest
    assert latest["quick"] is True
    assert set(latest["cases"]) == set(CASES)
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
    for case in CASES:
        assert case in text
