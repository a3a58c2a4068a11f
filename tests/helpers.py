"""Test helpers: write event files, run the CLI in-process or as a real subprocess, read the warehouse."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from typer.testing import CliRunner

from estore_ops.cli import app

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
REPO = Path(__file__).resolve().parent.parent


def event_lines(n: int, start: int = 0, day: int = 1) -> list[str]:
    """n valid event lines, distinct per (start, i)."""
    out = []
    for i in range(start, start + n):
        out.append(
            f"2019-10-{day:02d} {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d} UTC,view,{1000 + i},"
            f"2053013552326770905,electronics.smartphone,samsung,{10 + i % 90}.5,{500000000 + i % 50},sess-{i // 5}"
        )
    return out


def write_csv(path: Path, lines: Sequence[str], header: str = HEADER, gz: bool = False, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (newline.join([header, *lines]) + newline).encode()
    if gz or path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # atomic arrival, like a real upload
    return path


@dataclass
class Workspace:
    root: Path
    db_path: Path | None = None  # the warehouse file, when not the default one

    def __init__(self, root: Path, db: Path | None = None) -> None:
        self.root, self.db_path = root, db

    @property
    def landing(self) -> Path:
        return self.root / "data" / "landing"

    @property
    def state(self) -> Path:
        return self.root / "data" / "state"

    @property
    def db(self) -> Path:
        return self.db_path or self.root / "data" / "warehouse.duckdb"

    def add(self, name: str, lines: Sequence[str], **kw: Any) -> Path:
        return write_csv(self.landing / name, lines, **kw)

    def cli(self, *args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The CLI as a real subprocess in this workspace."""
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "estore_ops", *args], cwd=self.root, env=full_env,
            capture_output=True, text=True, timeout=timeout,
        )

    def rows_by_file(self) -> dict[str, int]:
        if not self.db.exists():
            return {}
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return dict(con.execute("SELECT _source_file, count(*) FROM raw.events GROUP BY 1").fetchall())
        finally:
            con.close()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


def fault_env(point: str) -> dict[str, str]:
    """Env for a crash at `point`. State-write points past the first target per-file state writes
    (checkpoint interval 0); the others run with the default batching, so both paths are drilled."""
    env = {"ESTORE_FAULT_POINT": point}
    name, _, nth = point.partition(":")
    if name in ("state_write", "after_state_write") and int(nth or 1) >= 2:
        env["ESTORE_STATE_CHECKPOINT_SECONDS"] = "0"
    return env


def load_into_duckdb(db: Path, landing: Path, names: Sequence[str]) -> None:
    """Load landing files into a DuckDB warehouse through the real loader (no state document)."""
    from estore_ops.schema import SOURCE_COLUMN_NAMES
    from estore_ops.backends.stores.local import LocalFolderStore
    from estore_ops.backends.warehouses.base import LoadItem
    from estore_ops.backends.warehouses.duckdb import DuckDBWarehouse

    store = LocalFolderStore(landing)
    wh = DuckDBWarehouse(f"duckdb:///{db}")
    try:
        outcomes = list(wh.load([LoadItem(store.stat(n), SOURCE_COLUMN_NAMES) for n in names], store))
    finally:
        wh.close()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
