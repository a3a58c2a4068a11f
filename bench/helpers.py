"""Input preparation run in child processes (`python -m bench.helpers CMD ...`).

The harness itself never imports DuckDB or holds data, so its memory stays small and cannot leak
into the children's peak-RSS numbers (see bench.runner). Each command prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path


def cmd_generate(a: argparse.Namespace) -> dict:
    """Monthly files through the project's own generator (estore_ops.testing.generate.generate_files)."""
    from estore_ops.testing.generate import generate_files

    started = time.perf_counter()
    written = generate_files(Path(a.dest), months=a.files, rows_per_month=a.rows, users=a.users, seed=a.seed,
                             gzip_from=1 if a.gzip else 10_000, start=date.fromisoformat(a.start))
    return {"files": [w.name for w in written], "seconds": round(time.perf_counter() - started, 3)}


def cmd_day(a: argparse.Namespace) -> dict:
    """One day of events (the same generator SQL, estore_ops.testing.generate.events_sql) as one file."""
    import duckdb

    from estore_ops.testing.generate import events_sql

    first = date.fromisoformat(a.day)
    sql = events_sql(a.rows, a.users, a.seed, a.month, first, first + timedelta(days=1))
    dest = Path(a.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    con = duckdb.connect()
    con.execute(f"COPY ({sql}) TO '{tmp}' (HEADER, DELIMITER ',')")
    con.close()
    os.replace(tmp, dest)
    return {"file": dest.name, "rows": a.rows}


def cmd_tiny(a: argparse.Namespace) -> dict:
    """`count` small event files (a few generated rows each, same bytes) in one flat folder."""
    import duckdb

    from estore_ops.testing.generate import events_sql

    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    sample = dest.parent / f".tiny-{os.getpid()}.csv"
    con = duckdb.connect()
    con.execute(f"COPY ({events_sql(a.rows, 100, a.seed, 0, date(2019, 10, 1), date(2019, 11, 1))}) TO '{sample}' (HEADER)")
    con.close()
    data = sample.read_bytes()
    sample.unlink()
    started = time.perf_counter()
    for i in range(a.count):
        with open(dest / f"{a.stem}-{i:06d}.csv", "wb") as fh:
            fh.write(data)
    return {"count": a.count, "bytes_each": len(data), "seconds": round(time.perf_counter() - started, 3)}


def cmd_split(a: argparse.Namespace) -> dict:
    """Split the event files of a folder into `count` files of about equal rows (DuckDB's writer)."""
    import duckdb

    src = sorted(str(p) for p in Path(a.source).iterdir() if p.name.endswith((".csv", ".csv.gz")))
    dest = Path(a.dest)
    parts = dest.parent / f".{dest.name}-parts"
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(
        "COPY (SELECT *, (row_number() OVER () % ?) AS part FROM read_csv(?, header = true, all_varchar = true)) "
        f"TO '{parts}' (FORMAT csv, HEADER, PARTITION_BY (part), OVERWRITE_OR_IGNORE)", [a.count, src])
    con.close()
    dest.mkdir(parents=True, exist_ok=True)
    for folder in parts.iterdir():
        number = int(folder.name.split("=", 1)[1])
        files = sorted(folder.iterdir())
        for i, f in enumerate(files):
            os.replace(f, dest / f"{a.stem}-{number:05d}{'-' + str(i) if i else ''}.csv")
        folder.rmdir()
    parts.rmdir()
    return {"files": len(list(dest.iterdir())), "seconds": round(time.perf_counter() - started, 2)}


def cmd_state(a: argparse.Namespace) -> dict:
    """Write the state document a completed load of every landing file would leave.

    Records are made with IngestState.record_success from the files' real generations and the
    identity the loader records (inode, ctime, fingerprint; "racy" for a file written within 2 s of
    the listing), so the next scan finds them settled exactly as after a real load. With --settled
    the records beyond the newest KEEP_RECORDS are then folded, as `pipeline.load_files` does after
    every load; without it every record stays whole (the worst case for a scan: nothing folded yet).
    """
    from estore_ops.ingest import pipeline as ingest
    from estore_ops.ingest.state import IngestState, StateStore
    from estore_ops.backends.stores.local import LocalFolderStore

    started = time.perf_counter()
    landing = LocalFolderStore(a.landing, create=False)
    store = StateStore(LocalFolderStore(a.state))
    state = IngestState()
    listed_ns = time.time_ns()
    for info in landing.list_csv():
        identity = ingest.file_identity(info, listed_ns) | {"fingerprint": landing.fingerprint(info)}
        state.record_success(info.name, info.generation, info.size, 1, "bench-setup", identity=identity)
    folded = state.compact(ingest.KEEP_RECORDS) if a.settled else 0
    snap = store.save(store.read(), state)
    return {"records": len(snap.state.files), "folded": folded, "bytes": len(snap.raw),
            "seconds": round(time.perf_counter() - started, 3)}


def cmd_gcs_upload(a: argparse.Namespace) -> dict:
    """Create a bucket on fake-gcs-server and upload `count` objects through its JSON API, in parallel.

    (Its -data preloading inserts objects one by one into a sorted structure and takes minutes
    for 100k objects; uploads over a few keep-alive connections take seconds.)
    """
    import http.client
    import threading
    from urllib.parse import quote, urlparse

    url = urlparse(a.endpoint)
    data = Path(a.sample).read_bytes()
    started = time.perf_counter()

    def conn() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(url.hostname, url.port, timeout=60)

    c = conn()
    c.request("POST", "/storage/v1/b?project=bench", body=json.dumps({"name": a.bucket}),
              headers={"Content-Type": "application/json"})
    resp = c.getresponse()
    resp.read()
    if resp.status >= 300 and resp.status != 409:
        raise SystemExit(f"create bucket {a.bucket}: HTTP {resp.status}")
    errors: list[str] = []

    def worker(start: int) -> None:
        h = conn()
        for i in range(start, a.count, a.threads):
            name = quote(f"{a.prefix}/{a.stem}-{i:06d}.csv", safe="")
            h.request("POST", f"/upload/storage/v1/b/{a.bucket}/o?uploadType=media&name={name}", body=data,
                      headers={"Content-Type": "text/csv"})
            r = h.getresponse()
            r.read()
            if r.status >= 300:
                errors.append(f"{name}: HTTP {r.status}")
                return

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("upload failed: " + "; ".join(errors[:3]))
    return {"count": a.count, "seconds": round(time.perf_counter() - started, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.helpers")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("dest")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--files", type=int, default=1)
    g.add_argument("--users", type=int, default=5000)
    g.add_argument("--seed", type=int, default=46)
    g.add_argument("--gzip", action="store_true")
    g.add_argument("--start", default="2019-10-01")
    d = sub.add_parser("day")
    d.add_argument("dest")
    d.add_argument("--rows", type=int, required=True)
    d.add_argument("--users", type=int, default=5000)
    d.add_argument("--seed", type=int, default=46)
    d.add_argument("--month", type=int, default=1)
    d.add_argument("--day", default="2019-11-01")
    t = sub.add_parser("tiny")
    t.add_argument("dest")
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--rows", type=int, default=3)
    t.add_argument("--seed", type=int, default=46)
    t.add_argument("--stem", default="events")
    sp = sub.add_parser("split")
    sp.add_argument("source")
    sp.add_argument("dest")
    sp.add_argument("--count", type=int, required=True)
    sp.add_argument("--stem", default="events")
    s = sub.add_parser("state")
    s.add_argument("landing")
    s.add_argument("state")
    s.add_argument("--settled", action="store_true")
    u = sub.add_parser("gcs-upload")
    u.add_argument("endpoint")
    u.add_argument("--bucket", required=True)
    u.add_argument("--prefix", required=True)
    u.add_argument("--sample", required=True)
    u.add_argument("--count", type=int, required=True)
    u.add_argument("--threads", type=int, default=8)
    u.add_argument("--stem", default="events")
    a = p.parse_args(argv)
    result = globals()[f"cmd_{a.cmd.replace('-', '_')}"](a)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
