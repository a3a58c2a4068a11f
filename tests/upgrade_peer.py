"""The previous release as a test peer: a deployment built by the OLD estore-ops, and what it holds.

`make tools` installs the release pinned in tests/tools/install-previous-release.sh into
`$ESTORE_TOOLS_DIR/previous-release/venv` (a real, separate install). `build_old_deployment` runs
that old `estore-ops` as a subprocess in a folder, the way a user's timers did: sample files loaded,
a bad file quarantined, transform, snapshot, a real change, transform, snapshot. `record` captures
everything an upgrade must keep: rows per (file, generation), the state document, every snapshot
row, every mart row.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.helpers import HEADER, REPO, event_lines, write_csv

INSTALL_SCRIPT = REPO / "tests" / "tools" / "install-previous-release.sh"
MARTS = ("fct_events", "fct_sessions", "dim_users", "dim_categories", "dim_products", "dim_user_rfm", "metrics_churn")
SNAPSHOTS = ("snap_user_rfm", "snap_user_status")
# Sort keys that make a table's rows comparable between two builds.
MART_KEYS = {
    "fct_events": "event_id", "fct_sessions": "session_id", "dim_users": "user_id", "dim_categories": "category_code",
    "dim_products": "product_id", "dim_user_rfm": "user_id", "metrics_churn": "cohort",
}
BAD_FILE = "2019-Sep-broken.csv"
MAX_ATTEMPTS = 3


def pinned_commit() -> str:
    match = re.search(r"^PREVIOUS_RELEASE_COMMIT=([0-9a-f]{40})$", INSTALL_SCRIPT.read_text(), re.MULTILINE)
    assert match, f"no PREVIOUS_RELEASE_COMMIT=<40 hex digits> line in {INSTALL_SCRIPT}"
    return match.group(1)


def previous_release_exe() -> Path:
    """The old estore-ops executable; fails (never skips) when `make tools` did not install it."""
    tools = Path(os.environ.get("ESTORE_TOOLS_DIR") or REPO / ".tools")
    home = tools / "previous-release"
    exe = home / "venv" / "bin" / "estore-ops"
    stamp = home / ".estore-commit"
    installed = stamp.read_text().strip() if stamp.exists() else None
    if not exe.exists() or installed != pinned_commit():
        pytest.fail(
            f"The previous release {pinned_commit()} is not installed in {home} (found {installed or 'nothing'}): "
            f"run `make tools` (bash {INSTALL_SCRIPT.relative_to(REPO)} TOOLS_DIR).", pytrace=False,
        )
    return exe


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ESTORE_", "SLACK_")) or k == "ESTORE_TOOLS_DIR"}
    full.update({"DO_NOT_TRACK": "1", **(env or {})})
    return subprocess.run(argv, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


def old(root: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = run([str(previous_release_exe()), *args], root)
    if ok:
        assert proc.returncode == 0, f"OLD estore-ops {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def new(root: Path, *args: str, ok: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = run([sys.executable, "-m", "estore_ops", *args], root, env)
    if ok:
        assert proc.returncode == 0, f"NEW estore-ops {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def december_purchases(root: Path) -> list[str]:
    """Purchases in December by a third of the users, of products they saw (same brand and category,
    so no product becomes a brand conflict): a real change of their RFM scores and status."""
    con = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
    try:
        picks = con.execute("""
            SELECT user_id, any_value(product_id ORDER BY event_time), any_value(category_id ORDER BY event_time),
                   any_value(coalesce(category_code, '') ORDER BY event_time), any_value(coalesce(brand, '') ORDER BY event_time),
                   any_value(price ORDER BY event_time)
            FROM raw.events WHERE user_id % 3 = 0 GROUP BY user_id ORDER BY user_id
        """).fetchall()
    finally:
        con.close()
    return [
        f"2019-12-{1 + i % 28:02d} 12:00:00 UTC,purchase,{product},{category},{code},{brand},{price},{user},dec-{i}"
        for i, (user, product, category, code, brand, price) in enumerate(picks)
    ]


@dataclass
class Recorded:
    """What a deployment holds, as the upgrade test compares it."""

    rows_by_version: dict[tuple[str, int], int]
    state: dict[str, Any]
    snapshots: dict[str, list[tuple[Any, ...]]]
    snapshot_columns: dict[str, list[str]]
    marts: dict[str, list[tuple[Any, ...]]] = field(repr=False)
    mart_columns: dict[str, list[str]] = field(default_factory=dict)

    def closed(self, snapshot: str) -> list[tuple[Any, ...]]:
        valid_to = self.snapshot_columns[snapshot].index("dbt_valid_to")
        return [row for row in self.snapshots[snapshot] if row[valid_to] is not None]

    def open(self, snapshot: str) -> list[tuple[Any, ...]]:
        valid_to = self.snapshot_columns[snapshot].index("dbt_valid_to")
        return [row for row in self.snapshots[snapshot] if row[valid_to] is None]


def _table(con: duckdb.DuckDBPyConnection, relation: str, order: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = con.execute(f"SELECT * FROM {relation} ORDER BY {order}")
    return [d[0] for d in cur.description], cur.fetchall()


def record(root: Path) -> Recorded:
    con = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
    try:
        rows = {(f, g): n for f, g, n in con.execute(
            "SELECT _source_file, _source_generation, count(*) FROM raw.events GROUP BY ALL").fetchall()}
        snaps, snap_cols, marts, mart_cols = {}, {}, {}, {}
        for name in SNAPSHOTS:
            snap_cols[name], snaps[name] = _table(con, f"snapshots.{name}", "user_id, dbt_valid_from")
        for name in MARTS:
            mart_cols[name], marts[name] = _table(con, f"marts.{name}", f"{MART_KEYS[name]}")
    finally:
        con.close()
    state = json.loads((root / "data" / "state" / "cursor.json").read_text())
    return Recorded(rows, state, snaps, snap_cols, marts, mart_cols)


def build_old_deployment(root: Path) -> Recorded:
    """A deployment as the previous release left it (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    old(root, "generate", "--months", "2", "--rows", "2000", "--users", "200")
    # A file that always fails (text in price): quarantined after MAX_ATTEMPTS loads.
    bad = event_lines(5)
    bad[2] = bad[2].rsplit(",", 3)[0] + ",not-a-price," + ",".join(bad[2].rsplit(",", 2)[1:])
    write_csv(root / "data" / "landing" / BAD_FILE, bad, header=HEADER)
    for _ in range(MAX_ATTEMPTS):
        assert old(root, "load", "-q", ok=False).returncode == 1  # the bad file fails; the others load once
    old(root, "transform", "--no-test")  # tests do not change what is stored; they cost time
    old(root, "snapshot")
    # A real change: December purchases by existing users.
    write_csv(root / "data" / "landing" / "2019-Dec.csv", december_purchases(root), header=HEADER)
    old(root, "load", "-q")
    old(root, "transform", "--no-test")
    old(root, "snapshot")
    return record(root)
