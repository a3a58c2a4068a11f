"""Drill: the GCP path under a rain of the real services' transient answers (the fault proxy).

Round after round new files land; every request to Cloud Storage and BigQuery has a chance to be
answered with a documented transient error (GCS 408/429/500/503, BigQuery 403 rateLimitExceeded,
500 internalError, 503 backendError) or to be applied with its answer lost. Each round runs `load`
through the faults, then once more without them, and checks: exact rows per file (count and
checksum), every file loaded once in the state, nothing quarantined, no job id inserted twice
upstream, no lock left. `make test` runs a short version; `make drill` the long one, with a summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from estore_ops.backends import retry
from tests import fault_proxy as fp
from tests.gcp_emulators import bq_dataset, bq_emulator, fake_gcs, gcs_bucket  # noqa: F401 - fixtures
from tests.helpers import HEADER, Workspace, event_lines

pytestmark = pytest.mark.gcp

GCS_ERRORS = (fp.GCS_TIMEOUT, fp.GCS_RATE_LIMIT, fp.GCS_INTERNAL, fp.GCS_UNAVAILABLE)
BQ_ERRORS = (fp.BQ_RATE_LIMIT, fp.BQ_INTERNAL, fp.BQ_BACKEND)


@pytest.fixture
def proxied(ws: Workspace, fake_gcs, bq_emulator, gcs_bucket, bq_dataset, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # noqa: F811
    monkeypatch.setattr(retry, "POLICY", retry.RetryPolicy(attempts=8, max_seconds=60, initial_wait=0.01, max_wait=0.2))
    with fp.gcp_through_proxies(monkeypatch, fake_gcs, bq_emulator, gcs_bucket, bq_dataset) as (gcs, bq):
        landing = fake_gcs.store(f"gs://{gcs_bucket}/landing")
        state = fake_gcs.store(f"gs://{gcs_bucket}/state")
        client = bq_emulator.client()
        yield gcs, bq, landing, state, client, f"{bq_emulator.project}.{bq_dataset}.events"


def _observed(client: Any, table: str) -> dict[str, tuple[int, int, float]]:
    try:
        rows = client.query(f"SELECT _source_file, COUNT(*), SUM(product_id), ROUND(SUM(price), 2) FROM `{table}` GROUP BY 1").result()
    except Exception as exc:  # noqa: BLE001 - no table yet
        if "Not found" in str(exc) or "does not exist" in str(exc):
            return {}
        raise
    return {r[0]: (int(r[1]), int(r[2]), float(r[3])) for r in rows}


def drill(ws: Workspace, proxied: Any, rounds: int, share: float, lost: float, seed: int) -> dict[str, Any]:
    gcs, bq, landing, state, client, table = proxied
    expected: dict[str, tuple[int, int, float]] = {}
    stats = {"rounds": 0, "faulted_runs": 0, "errors": 0, "dropped": 0, "deferred": 0, "failures": []}
    started = time.monotonic()
    for rnd in range(rounds):
        for k in range(2):
            name = f"r{rnd:03d}-{k}.csv"
            lines = event_lines(15 + rnd % 5 + k, start=(rnd * 2 + k) * 1000, day=1 + (rnd + k) % 3)
            landing.write(name, ("\n".join([HEADER, *lines]) + "\n").encode())
            rows = [ln.split(",") for ln in lines]
            expected[name] = (len(rows), sum(int(r[2]) for r in rows), round(sum(float(r[6]) for r in rows), 2))
        gcs.random = fp.RandomFaults(share, GCS_ERRORS, lost, seed=seed + rnd)
        bq.random = fp.RandomFaults(share, BQ_ERRORS, lost, seed=seed + 1000 + rnd)
        faulted = ws.cli("load", "--json")
        stats["errors"] += gcs.random.injected["error"] + bq.random.injected["error"]
        stats["dropped"] += gcs.random.injected["dropped"] + bq.random.injected["dropped"]
        stats["faulted_runs"] += faulted.exit_code != 0
        if faulted.exit_code not in (0, 1, 4):
            stats["failures"].append(f"round {rnd}: exit {faulted.exit_code}: {faulted.output[-400:]}")
        elif faulted.exit_code in (0, 1):
            stats["deferred"] += json.loads(faulted.stdout).get("files_deferred", 0)
        gcs.clear()
        bq.clear()
        clean = ws.cli("load", "--json")  # the next tick, on healthy services
        if clean.exit_code != 0:
            clean = ws.cli("load", "--json")  # a deferred file waits one more tick at most
        if clean.exit_code != 0:
            stats["failures"].append(f"round {rnd}: clean run exit {clean.exit_code}: {clean.output[-400:]}")
        observed = _observed(client, table)
        if observed != expected:
            wrong = {n: (observed.get(n), expected.get(n)) for n in set(observed) | set(expected) if observed.get(n) != expected.get(n)}
            stats["failures"].append(f"round {rnd}: rows (observed, expected) {wrong}")
        show = json.loads(ws.cli("cursor", "show", "--json").stdout)
        if show["counts"] != {"loaded": len(expected), "failed": 0, "quarantined": 0}:
            stats["failures"].append(f"round {rnd}: state counts {show['counts']}")
        if state.exists("run.lock"):
            stats["failures"].append(f"round {rnd}: run.lock left behind")
        stats["rounds"] += 1
    forwarded = [s for s in bq.seen if s.method == "POST" and s.path.endswith("/jobs") and s.answered in ("forwarded", "dropped")]
    ids = [s.body["jobReference"]["jobId"] for s in forwarded]
    if len(ids) != len(set(ids)):
        stats["failures"].append(f"job ids inserted twice upstream: {sorted({i for i in ids if ids.count(i) > 1})}")
    stats["seconds"] = round(time.monotonic() - started, 1)
    stats["rows"] = sum(v[0] for v in expected.values())
    return stats


def test_transient_faults_drill_fast(ws: Workspace, proxied: Any) -> None:
    stats = drill(ws, proxied, rounds=3, share=0.08, lost=0.03, seed=11)
    assert not stats["failures"], stats
    assert stats["errors"] + stats["dropped"] > 0, stats  # the faults did happen


@pytest.mark.drill
def test_transient_faults_drill_full(ws: Workspace, proxied: Any) -> None:
    stats = drill(ws, proxied, rounds=25, share=0.12, lost=0.04, seed=101)
    print(
        "\n| drill | rounds | injected errors | lost answers | deferred | failures | rows checked | seconds |\n|---|---|---|---|---|---|---|---|\n"
        f"| transient faults, GCS + BigQuery through the fault proxy | {stats['rounds']} | {stats['errors']} | {stats['dropped']} "
        f"| {stats['deferred']} | {len(stats['failures'])} | {stats['rows']:,} | {stats['seconds']} |"
    )
    assert not stats["failures"], stats["failures"][:10]
