"""Reliability drills with real processes: SIGKILL at many points, and runs racing for the lock.

Crash drill: `load` runs as a subprocess over several files and is killed with SIGKILL at a fault
point (inside the warehouse transaction, between commit and state write, during the state write,
after it) or at a timed offset while DuckDB reads a large file (BigQuery: while its jobs run).
After each kill a plain rerun must exit 0 and leave, per file, exactly the file's rows (count and
a checksum: sums of product_id, user_id and price), a state document with every file loaded with
its row count, no lock left, and a third run that finds nothing to load.

Disk-full drill: the disk under the warehouse (a tmpfs mounted by the test as root, else a file-size
limit) is filled, runs fail with exit 4 blaming no file and alerting once, space returns, and the
next run loads every file exactly.

Concurrency drill: 2, then 4 `load` processes started together, round after round, each round with
new files: zero duplicated or lost rows, zero lost state updates, only exit codes 0 and 75, and the
processes that did not get the lock exit with 75 within a second of the lock being held.

`make test` runs the fast versions (a few points and rounds on the embedded default); `make drill`
(`-m drill -s`) runs the full versions, also on the GCP emulators, and prints a summary table.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from estore_ops.errors import ExitCode
from estore_ops.ingest.state import IngestState
from tests.corpus import make_corpus
from tests.helpers import HEADER, event_lines, fault_env
from tests.slack_server import slack  # noqa: F401 - fixture

Checksum = tuple[int, int, int, float]  # rows, sum(product_id), sum(user_id), sum(price)


def checksum(lines: list[str]) -> Checksum:
    rows = [ln.split(",") for ln in lines]
    return (len(rows), sum(int(r[2]) for r in rows), sum(int(r[7]) for r in rows), round(sum(float(r[6]) for r in rows), 2))


def csv_bytes(lines: list[str], gz: bool = False) -> bytes:
    data = ("\n".join([HEADER, *lines]) + "\n").encode()
    return gzip.compress(data, mtime=0) if gz else data


# -- results table -------------------------------------------------------------------------------


@dataclass
class DrillStats:
    name: str
    points: int = 0
    failures: list[str] = field(default_factory=list)
    rows_checked: int = 0
    missed: int = 0  # timed kills that came after the process had already exited
    seconds: float = 0.0


SUMMARY: list[DrillStats] = []


@pytest.fixture(scope="module", autouse=True)
def _print_summary() -> Iterator[None]:
    yield
    if not SUMMARY:
        return
    lines = [
        "",
        "| drill | points / rounds | failures | rows checked | timed kills missed | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for s in SUMMARY:
        lines.append(f"| {s.name} | {s.points} | {len(s.failures)} | {s.rows_checked:,} | {s.missed} | {s.seconds:.0f} |")
    for s in SUMMARY:
        for f in s.failures[:10]:
            lines.append(f"FAILURE {s.name}: {f}")
    print("\n".join(lines))
    SUMMARY.clear()


def _env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ESTORE_", "SLACK_"))}
    return {**base, "DO_NOT_TRACK": "1", **extra}


def _spawn(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "estore_ops", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- targets: where a drill runs -----------------------------------------------------------------


class LocalTarget:
    """Landing and state folders, a DuckDB warehouse: the embedded default."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.landing, self.state, self.db = root / "landing", root / "state", root / "warehouse.duckdb"
        self.landing.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return _env({"ESTORE_LANDING": str(self.landing), "ESTORE_STATE": str(self.state),
                     "ESTORE_WAREHOUSE": f"duckdb:///{self.db}", "ESTORE_WORK_DIR": str(self.root / "work")})

    def put(self, name: str, data: bytes) -> None:
        tmp = self.landing / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.landing / name)

    def put_file(self, name: str, path: Path) -> None:
        os.link(path, self.landing / name)

    def fresh(self) -> None:
        """Forget every load: state and warehouse go, the landing files stay."""
        import shutil

        shutil.rmtree(self.state, ignore_errors=True)
        for p in self.root.glob("warehouse.duckdb*"):
            p.unlink()

    def observed(self) -> dict[str, Checksum]:
        import duckdb

        if not self.db.exists():
            return {}
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            rows = con.execute(
                "SELECT _source_file, count(*), sum(product_id), sum(user_id), round(sum(price), 2) FROM raw.events GROUP BY 1"
            ).fetchall()
        finally:
            con.close()
        return {r[0]: (int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows}

    def state_doc(self) -> IngestState | None:
        path = self.state / "cursor.json"
        return IngestState.from_bytes(path.read_bytes(), str(path)) if path.exists() else None

    def lock_held(self) -> bool:
        return (self.state / "run.lock").exists()

    def busy(self, pid: int) -> bool:
        """The process has the DuckDB file open (it is loading)."""
        try:
            return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(self.db) for fd in os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return False


class GcpTarget:
    """Landing and state in fake-gcs-server, the warehouse in bqemulator."""

    name = "gcp-emulators"

    def __init__(self, root: Path, fake_gcs: Any, bq_emulator: Any) -> None:
        self.root, self.gcs, self.bq = root, fake_gcs, bq_emulator
        self.files: dict[str, bytes] = {}
        self.fresh()

    def fresh(self) -> None:
        self.bucket = self.gcs.create_bucket()
        self.dataset = self.bq.create_dataset()
        self.landing_store = self.gcs.store(f"gs://{self.bucket}/landing")
        self.state_store = self.gcs.store(f"gs://{self.bucket}/state")
        for name, data in self.files.items():
            self.landing_store.write(name, data)

    @property
    def env(self) -> dict[str, str]:
        return _env({**self.gcs.env, "ESTORE_LANDING": f"gs://{self.bucket}/landing",
                     "ESTORE_STATE": f"gs://{self.bucket}/state", "ESTORE_WAREHOUSE": self.bq.url(self.dataset),
                     "ESTORE_WORK_DIR": str(self.root / "work")})

    def put(self, name: str, data: bytes) -> None:
        self.files[name] = data
        self.landing_store.write(name, data)

    def observed(self) -> dict[str, Checksum]:
        client = self.bq.client()
        try:
            rows = list(client.query(
                f"SELECT _source_file, COUNT(*), SUM(product_id), SUM(user_id), ROUND(SUM(price), 2) "
                f"FROM `{self.bq.project}.{self.dataset}.events` GROUP BY _source_file").result())
        except Exception as exc:  # noqa: BLE001 - no table yet
            if "Not found" in str(exc) or "does not exist" in str(exc):
                return {}
            raise
        return {r[0]: (int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows}

    def state_doc(self) -> IngestState | None:
        from estore_ops.errors import ObjectNotFoundError

        try:
            raw, _ = self.state_store.read("cursor.json")
        except ObjectNotFoundError:
            return None
        return IngestState.from_bytes(raw, "cursor.json")

    def lock_held(self) -> bool:
        return self.state_store.exists("run.lock")

    def busy(self, pid: int) -> bool:
        return self.lock_held()


# -- checks ------------------------------------------------------------------------------------


def verify(target: Any, expected: dict[str, Checksum], stats: DrillStats, label: str) -> bool:
    """Exact rows per file, a consistent state, no lock left. Records a failure and returns False."""
    problems = []
    observed = target.observed()
    if observed != expected:
        wrong = {n: (observed.get(n), expected.get(n)) for n in set(observed) | set(expected) if observed.get(n) != expected.get(n)}
        problems.append(f"rows (observed, expected): {wrong}")
    state = target.state_doc()
    if state is None:
        problems.append("no state document")
    else:
        for name, (rows, *_) in expected.items():
            rec = state.files.get(name)
            if rec is None or rec.status != "loaded" or rec.rows != rows:
                problems.append(f"state record of {name}: {rec}")
        extra = set(state.files) - set(expected)
        if extra:
            problems.append(f"state records for unknown files {extra}")
    if target.lock_held():
        problems.append("run.lock left behind")
    stats.rows_checked += sum(c[0] for c in observed.values())
    if problems:
        stats.failures.append(f"{label}: " + "; ".join(problems))
        return False
    return True


def _started_at(stderr: str) -> float | None:
    """Wall time of the run's "load started" log line (JSON logs: no terminal)."""
    from datetime import datetime

    for line in stderr.splitlines():
        if '"msg": "load started"' in line:
            try:
                return datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
            except (ValueError, KeyError):
                return None
    return None


# -- crash drill ---------------------------------------------------------------------------------

SMALL = {"a.csv": (400, 1_000_000), "b.csv.gz": (300, 2_000_000), "c.csv": (250, 3_000_000), "d.csv": (350, 4_000_000)}
BIG_ROWS = 400_000


def _small_files(target: Any) -> dict[str, Checksum]:
    expected = {}
    for name, (n, start) in SMALL.items():
        lines = event_lines(n, start=start)
        target.put(name, csv_bytes(lines, gz=name.endswith(".gz")))
        expected[name] = checksum(lines)
    return expected


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Checksum]:
    path = make_corpus.big_events_csv(tmp_path_factory.mktemp("big") / "big.csv", BIG_ROWS)
    lines = [make_corpus.row(i) for i in range(BIG_ROWS)]
    return path, checksum(lines)


def _kill_at_point(target: Any, point: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "estore_ops", "load"], cwd=target.root,
                          env={**target.env, **fault_env(point)}, capture_output=True, text=True, timeout=600)
    return "killed" if proc.returncode == -signal.SIGKILL else f"exited {proc.returncode}: {proc.stderr[-300:]}"


def _kill_after(target: Any, offset: float) -> str:
    """Start a load, wait until it is working on the warehouse, then SIGKILL it `offset` seconds later."""
    proc = _spawn(target.root, target.env, "load")
    deadline = time.monotonic() + 120
    while not target.busy(proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.communicate()
            return "missed"
        time.sleep(0.002)
    time.sleep(offset)
    if proc.poll() is not None:
        proc.communicate()
        return "missed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return "killed"


def _rerun_and_verify(target: Any, expected: dict[str, Checksum], stats: DrillStats, label: str) -> None:
    rerun = subprocess.run([sys.executable, "-m", "estore_ops", "load"], cwd=target.root, env=target.env,
                           capture_output=True, text=True, timeout=600)
    if rerun.returncode != 0:
        stats.failures.append(f"{label}: rerun exited {rerun.returncode}: {rerun.stderr[-400:]}")
        return
    if not verify(target, expected, stats, label):
        return
    third = subprocess.run([sys.executable, "-m", "estore_ops", "load", "--json"], cwd=target.root, env=target.env,
                           capture_output=True, text=True, timeout=600)
    if third.returncode != 0 or json.loads(third.stdout)["files_loaded"] != 0:
        stats.failures.append(f"{label}: a third run loaded again: {third.stdout[-300:]} {third.stderr[-300:]}")


def crash_drill(target: Any, points: list[str], timed: list[float], stats: DrillStats,
                expected: dict[str, Checksum]) -> None:
    started = time.monotonic()
    for point in points:
        target.fresh()
        how = _kill_at_point(target, point)
        if how != "killed":
            stats.failures.append(f"{point}: the process was not killed there ({how})")
            continue
        stats.points += 1
        _rerun_and_verify(target, expected, stats, point)
    for offset in timed:
        target.fresh()
        label = f"timed kill {offset * 1000:.0f} ms after the warehouse opened"
        how = _kill_after(target, offset)
        if how == "missed":
            stats.missed += 1
            continue
        stats.points += 1
        _rerun_and_verify(target, expected, stats, label)
    stats.seconds = time.monotonic() - started
    SUMMARY.append(stats)


def _calibrate(target: Any) -> float:
    """Seconds from the warehouse being opened to the end of a full load."""
    target.fresh()
    proc = _spawn(target.root, target.env, "load")
    while not target.busy(proc.pid) and proc.poll() is None:
        time.sleep(0.002)
    t0 = time.monotonic()
    proc.communicate()
    return max(time.monotonic() - t0, 0.05)


LOCAL_POINTS_ALL = (
    [f"inside_transaction:{i}" for i in range(1, 6)]
    + [f"after_commit:{i}" for i in range(1, 6)]
    + [f"state_write:{i}" for i in range(1, 6)]  # one per file record (no compaction write: nothing to fold)
    + [f"after_state_write:{i}" for i in range(1, 6)]
)
LOCAL_POINTS_FAST = ["inside_transaction:2", "inside_transaction:3", "after_commit:1", "after_commit:5",
                     "state_write:3", "state_write:5", "after_state_write:2"]


def _local_crash_setup(tmp_path: Path, big_file: tuple[Path, Checksum]) -> tuple[LocalTarget, dict[str, Checksum]]:
    target = LocalTarget(tmp_path)
    expected = _small_files(target)
    # The big file arrives between the small ones, so kills land before, in and after its read.
    target.put_file("e-big.csv", big_file[0])
    expected["e-big.csv"] = big_file[1]
    os.utime(target.landing / "c.csv")  # c.csv and d.csv arrive after e-big.csv
    target.put("d.csv", (target.landing / "d.csv").read_bytes())
    return target, expected


def test_crash_drill_fast(tmp_path: Path, big_file: tuple[Path, Checksum]) -> None:
    target, expected = _local_crash_setup(tmp_path, big_file)
    duration = _calibrate(target)
    stats = DrillStats("crash, local (fast)")
    crash_drill(target, LOCAL_POINTS_FAST, [duration * f for f in (0.3, 0.6)], stats, expected)
    assert not stats.failures, stats.failures
    assert stats.points >= 8 - stats.missed


@pytest.mark.drill
def test_crash_drill_full(tmp_path: Path, big_file: tuple[Path, Checksum]) -> None:
    target, expected = _local_crash_setup(tmp_path, big_file)
    duration = _calibrate(target)
    rng = random.Random(7)
    timed = sorted(rng.uniform(0.02, 0.98) * duration for _ in range(12))
    stats = DrillStats("crash, local (full)")
    crash_drill(target, LOCAL_POINTS_ALL, timed, stats, expected)
    assert not stats.failures, stats.failures
    assert stats.points >= 20


# -- concurrency drill ---------------------------------------------------------------------------


def concurrency_drill(target: Any, processes: int, rounds: int, stats: DrillStats, tmp: Path, files_per_round: int = 2) -> None:
    started = time.monotonic()
    expected: dict[str, Checksum] = {}
    latencies: list[float] = []
    startup: list[float] = []
    for rnd in range(rounds):
        for k in range(files_per_round):
            name = f"r{rnd:03d}-{k}.csv" if (rnd + k) % 3 else f"r{rnd:03d}-{k}.csv.gz"
            lines = event_lines(20 + rnd % 7 + k, start=(rnd * files_per_round + k) * 1000)
            target.put(name, csv_bytes(lines, gz=name.endswith(".gz")))
            expected[name] = checksum(lines)
        paused = rnd % 2 == 0  # even rounds: the winner parks holding the lock, losers must give up at once
        barrier = tmp / f"barrier-{processes}-{rnd}"
        barrier.mkdir()
        env = {**target.env, **({"ESTORE_PAUSE_POINT": f"lock_held:{barrier}"} if paused else {})}
        procs = [_spawn(target.root, env, "load", "--quiet") for _ in range(processes)]
        spawned = time.monotonic()
        ended: dict[int, float] = {}
        ended_wall: dict[int, float] = {}
        reached_at = None
        deadline = spawned + 120
        while len(ended) < processes and time.monotonic() < deadline:
            now = time.monotonic()
            if paused and reached_at is None and (barrier / "reached").exists():
                reached_at = now
            for p in procs:
                if p.pid not in ended and p.poll() is not None:
                    ended[p.pid] = now
                    ended_wall[p.pid] = time.time()
            if paused and reached_at is not None and len(ended) == processes - 1:
                (barrier / "release").write_text("go")
            time.sleep(0.005)
        codes = []
        errs: dict[int, str] = {}
        for p in procs:
            if p.poll() is None:
                p.kill()
            out, err = p.communicate()
            errs[p.pid] = err
            codes.append(p.returncode)
            if p.returncode not in (0, ExitCode.LOCKED):
                stats.failures.append(f"{processes} procs, round {rnd}: exit {p.returncode}: {err[-300:]}")
        if codes.count(0) < 1:
            stats.failures.append(f"{processes} procs, round {rnd}: nobody loaded (codes {codes})")
        if paused:
            winner = int((barrier / "reached").read_text()) if (barrier / "reached").exists() else None
            if codes.count(ExitCode.LOCKED) != processes - 1:
                stats.failures.append(f"{processes} procs, round {rnd} (paused): codes {codes}, expected one 0 and the rest 75")
            for p in procs:
                if p.pid != winner and reached_at is not None and p.pid in ended:
                    # From the loser's own "load started" log line (just before it tries the lock) to
                    # its exit: its Python start-up under CPU contention is not lock waiting.
                    tried = _started_at(errs[p.pid])
                    latency = ended_wall[p.pid] - tried if tried else ended[p.pid] - max(reached_at, spawned)
                    latencies.append(latency)
                    startup.append(ended[p.pid] - spawned)
                    if latency > 1.0:
                        stats.failures.append(f"{processes} procs, round {rnd}: a loser exited {latency:.2f}s after trying the lock")
        stats.points += 1
        verify(target, expected, stats, f"{processes} procs, round {rnd}")
    stats.seconds = time.monotonic() - started
    if latencies:
        stats.name += (f" (losers: exit <= {max(latencies):.2f}s after trying the lock, "
                       f"<= {max(startup):.2f}s after spawn)")
    SUMMARY.append(stats)


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrency_drill_fast(tmp_path: Path, processes: int) -> None:
    stats = DrillStats(f"concurrency, local, {processes} processes (fast)")
    concurrency_drill(LocalTarget(tmp_path), processes, 3, stats, tmp_path)
    assert not stats.failures, stats.failures


@pytest.mark.drill
@pytest.mark.parametrize("processes", [2, 4])
def test_concurrency_drill_full(tmp_path: Path, processes: int) -> None:
    stats = DrillStats(f"concurrency, local, {processes} processes")
    concurrency_drill(LocalTarget(tmp_path), processes, 50, stats, tmp_path)
    assert not stats.failures, stats.failures


# -- disk-full drill -------------------------------------------------------------------------------------


def disk_full_drill(tmp: Path, slack: Any, rounds: int, command: list[str], stats: DrillStats) -> int:
    """The warehouse's disk fills up (before a run, or with room for part of it), runs fail, space returns.

    Each round: a few files load, the disk holding the warehouse is filled to a different amount of
    room left, three runs of `command` start (each must end 0 or 4, never blaming a file), then the
    space is freed and one more run must leave exactly every file's rows, every file recorded
    loaded at attempt 1 (nothing failed, nothing quarantined), and exactly one failure alert plus
    one recovery message for a round whose runs failed (none for a round that had room enough).
    """
    from tests.disk import CappedDisk

    started = time.monotonic()
    episodes = 0
    for rnd in range(rounds):
        root = tmp / f"round-{rnd}"
        disk = CappedDisk(root / "disk", size_mb=64)  # room for the models too, once space returns
        try:
            target = LocalTarget(root)
            target.db = db = disk.path / "warehouse.duckdb"
            env = {**target.env, "ESTORE_WAREHOUSE": f"duckdb:///{db}", "SLACK_WEBHOOK_URL": slack.webhook_url,
                   "ESTORE_MAX_ATTEMPTS": "2", "ESTORE_ALERT_DEDUP_MINUTES": "0"}
            expected: dict[str, Checksum] = {}
            lines = event_lines(50, start=rnd * 1_000_000)
            target.put("first.csv", csv_bytes(lines))
            expected["first.csv"] = checksum(lines)
            first = subprocess.run([sys.executable, "-m", "estore_ops", *command], cwd=root, env=env,
                                   capture_output=True, text=True, timeout=600)
            if first.returncode != 0:
                stats.failures.append(f"round {rnd}: the first run failed: {first.stderr[-300:]}")
                continue
            for k in range(4):
                lines = event_lines(15_000 + 5_000 * k, start=rnd * 1_000_000 + (k + 1) * 100_000)
                name = f"r{rnd}-{k}.csv.gz" if k % 2 else f"r{rnd}-{k}.csv"
                target.put(name, csv_bytes(lines, gz=name.endswith(".gz")))
                expected[name] = checksum(lines)
            requests_before = len(slack.requests)
            disk.fill(leave=[16 << 10, 256 << 10, 1 << 20, 3 << 20][rnd % 4])
            failed_runs = 0
            for attempt in range(3):
                run = subprocess.run([sys.executable, "-m", "estore_ops", *command], cwd=root, env=env,
                                     capture_output=True, text=True, timeout=600, **disk.popen_kwargs())
                if run.returncode == ExitCode.BACKEND:
                    failed_runs += 1
                    if "No file was blamed" not in run.stderr or str(disk.path) not in run.stderr:
                        stats.failures.append(f"round {rnd}, run {attempt}: exit 4 without naming the place: {run.stderr[-300:]}")
                elif run.returncode != 0:
                    stats.failures.append(f"round {rnd}, run {attempt}: exit {run.returncode}: {run.stderr[-400:]}")
            state = target.state_doc()
            blamed = {n: r.status for n, r in (state.files.items() if state else []) if r.status != "loaded"}
            if blamed:
                stats.failures.append(f"round {rnd}: files blamed for a full disk: {blamed}")
            disk.free()
            last = subprocess.run([sys.executable, "-m", "estore_ops", *command], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=600)
            if last.returncode != 0:
                stats.failures.append(f"round {rnd}: the run after space returned exited {last.returncode}: {last.stderr[-400:]}")
            sums = target.observed()
            stats.rows_checked += sum(c[0] for c in sums.values())
            if sums != expected:
                stats.failures.append(f"round {rnd}: rows after recovery {sums} != {expected}")
            state = target.state_doc()
            wrong = {n: (r.status, r.attempts) for n, r in (state.files.items() if state else [])
                     if r.status != "loaded" or r.attempts != 1}
            if wrong:
                stats.failures.append(f"round {rnd}: state records not loaded at attempt 1: {wrong}")
            messages = [r["body"].get("text", "") for r in slack.requests[requests_before:]]
            alerts = [m for m in messages if "failed" in m]
            recoveries = [m for m in messages if "recovered" in m]
            want = 1 if failed_runs else 0
            if len(alerts) != want or len(recoveries) != want:
                stats.failures.append(f"round {rnd}: {failed_runs} failed runs but {len(alerts)} failure alert(s) and "
                                      f"{len(recoveries)} recovery message(s)")
            stats.points += 1
            episodes += 1 if failed_runs else 0  # a round with room enough has nothing to fail
        finally:
            disk.close()
    stats.seconds = time.monotonic() - started
    stats.name += f" ({disk.mode}; runs failed for lack of space in {episodes} of {rounds} rounds)"
    SUMMARY.append(stats)
    return episodes


def test_disk_full_drill_fast(tmp_path: Path, slack: Any) -> None:  # noqa: F811
    stats = DrillStats("disk full, local: `load` with the warehouse disk filled, 3 runs, space freed (fast)")
    episodes = disk_full_drill(tmp_path, slack, 2, ["load"], stats)
    assert not stats.failures, stats.failures
    assert stats.points == 2 and episodes == 2


@pytest.mark.drill
def test_disk_full_drill_full(tmp_path: Path, slack: Any) -> None:  # noqa: F811
    stats = DrillStats("disk full, local: `watch --once` with the warehouse disk filled to 16 KiB-3 MiB left, 3 runs, "
                       "space freed")
    episodes = disk_full_drill(tmp_path, slack, 12, ["watch", "--once"], stats)
    assert not stats.failures, stats.failures
    assert stats.points == 12 and episodes >= 6


# -- the same drills on the GCP emulators (make drill) -----------------------------------------------

try:
    from tests.gcp_emulators import bq_emulator, fake_gcs  # noqa: F401 - fixtures
except ImportError:  # pragma: no cover - the gcp extra is not installed
    pass

GCP_POINTS = ["state_write:1", "state_write:2", "state_write:3", "state_write:4", "after_state_write:1", "after_state_write:3"]


@pytest.mark.drill
@pytest.mark.gcp
def test_crash_drill_gcp_emulators(tmp_path: Path, fake_gcs: Any, bq_emulator: Any) -> None:  # noqa: F811
    target = GcpTarget(tmp_path, fake_gcs, bq_emulator)
    expected = _small_files(target)
    duration = _calibrate(target)
    stats = DrillStats("crash, GCS + BigQuery emulators")
    crash_drill(target, GCP_POINTS, [duration * f for f in (0.1, 0.3, 0.5, 0.7, 0.9)], stats, expected)
    assert not stats.failures, stats.failures
    assert stats.points >= 8


@pytest.mark.drill
@pytest.mark.gcp
@pytest.mark.parametrize("processes", [2, 4])
def test_concurrency_drill_gcp_emulators(tmp_path: Path, fake_gcs: Any, bq_emulator: Any, processes: int) -> None:  # noqa: F811
    stats = DrillStats(f"concurrency, GCS + BigQuery emulators, {processes} processes")
    concurrency_drill(GcpTarget(tmp_path, fake_gcs, bq_emulator), processes, 10, stats, tmp_path)
    assert not stats.failures, stats.failures
