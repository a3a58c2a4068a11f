"""File identity on a local folder does not trust clocks.

A local file's generation is max(mtime, ctime): an mtime in the future (copied with `cp -p` or
`rsync -t` from a machine whose clock runs ahead, or set with `touch -d`) outweighs every later
ctime, so a rewrite whose timestamps come back to the same values keeps the same generation. Each
case below rewrites a loaded file that way, with the real tools, and the new content must load
(its old rows replaced). The state keeps the generation it always had, so a state written before
these identity fields existed does not make every loaded file look changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from estore_ops.ingest.pipeline import scan
from estore_ops.ingest.state import FileRecord, IngestState, StateStore
from estore_ops.backends.stores.local import LocalFolderStore
from tests.helpers import HEADER, Workspace, event_lines

FUTURE = "2031-05-01 12:00:00"
PAST = "2019-10-01 00:00:00"


def _csv(lines: list[str]) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def _same_size_versions() -> tuple[bytes, bytes]:
    """Two versions of a file with the same size (and header) but other rows."""
    old, new = _csv(event_lines(6)), _csv(event_lines(6, start=10))
    assert len(old) == len(new)
    return old, new


def _loaded_product_ids(ws: Workspace, name: str) -> list[int]:
    return [r[0] for r in ws.query(f"SELECT product_id FROM raw.events WHERE _source_file = '{name}' ORDER BY 1")]


def _src(tmp_path: Path, data: bytes, when: str) -> Path:
    src = tmp_path / "export" / "x.csv"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    subprocess.run(["touch", "-d", when, str(src)], check=True)
    return src


def cp_p(ws: Workspace, tmp_path: Path, data: bytes, when: str) -> None:
    subprocess.run(["cp", "-p", str(_src(tmp_path, data, when)), str(ws.landing / "x.csv")], check=True)


def rsync_t(ws: Workspace, tmp_path: Path, data: bytes, when: str) -> None:
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (make tools installs it when run as root)")
    # -I: copy even when size and mtime match (rsync's quick check would otherwise skip the new content).
    subprocess.run(["rsync", "-t", "-I", str(_src(tmp_path, data, when)), str(ws.landing / "x.csv")], check=True)


def rewrite_in_place_then_touch(ws: Workspace, tmp_path: Path, data: bytes, when: str) -> None:
    path = ws.landing / "x.csv"
    mode = "r+b" if path.exists() else "wb"
    with open(path, mode) as fh:  # same inode, same size: only the bytes change
        fh.write(data)
        fh.truncate()
    subprocess.run(["touch", "-d", when, str(path)], check=True)


WRITERS = {"cp -p": cp_p, "rsync -t": rsync_t, "rewrite in place + touch -d": rewrite_in_place_then_touch}


@pytest.mark.parametrize("when", [FUTURE, PAST], ids=["clock in the future", "clock in the past"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_rewrite_whose_timestamps_come_back_is_still_changed(ws: Workspace, tmp_path: Path, writer: str, when: str) -> None:
    ws.landing.mkdir(parents=True)
    old, new = _same_size_versions()
    write = WRITERS[writer]
    write(ws, tmp_path, old, when)
    assert ws.cli("load").exit_code == 0
    assert _loaded_product_ids(ws, "x.csv") == list(range(1000, 1006))
    before = os.stat(ws.landing / "x.csv")
    time.sleep(0.01)  # past the file system's timestamp tick, like any real rewrite
    write(ws, tmp_path, new, when)
    after = os.stat(ws.landing / "x.csv")
    assert after.st_mtime_ns == before.st_mtime_ns and after.st_size == before.st_size  # the clocks say "same"

    pending = json.loads(ws.cli("scan", "--json").stdout)["pending"]
    assert [(p["name"], p["reason"]) for p in pending] == [("x.csv", "changed")]
    assert ws.cli("load").exit_code == 0
    assert _loaded_product_ids(ws, "x.csv") == list(range(1010, 1016))  # the new rows, the old ones replaced
    assert json.loads(ws.cli("scan", "--json").stdout)["pending"] == []


def test_the_state_records_the_full_identity_of_a_local_file(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(3))
    assert ws.cli("load").exit_code == 0
    rec = json.loads((ws.state / "cursor.json").read_text())["files"]["a.csv"]
    st = os.stat(ws.landing / "a.csv")
    assert rec["size"] == st.st_size and rec["inode"] == st.st_ino and rec["ctime_ns"] == st.st_ctime_ns
    assert rec["fingerprint"] == LocalFolderStore(ws.landing).fingerprint(LocalFolderStore(ws.landing).stat("a.csv"))
    assert rec["generation"] == max(st.st_mtime_ns, st.st_ctime_ns) // 1000  # the generation it always had


def test_a_state_written_before_the_identity_fields_keeps_files_loaded(ws: Workspace) -> None:
    """Records without inode/ctime/fingerprint (an older estore-ops) still settle unchanged files."""
    ws.add("a.csv", event_lines(3))
    ws.add("b.csv", event_lines(3, start=50))
    assert ws.cli("load").exit_code == 0
    path = ws.state / "cursor.json"
    doc = json.loads(path.read_text())
    for rec in doc["files"].values():
        for key in ("inode", "ctime_ns", "fingerprint", "racy"):
            rec.pop(key, None)
    path.write_text(json.dumps(doc))
    assert json.loads(ws.cli("scan", "--json").stdout)["pending"] == []
    ws.add("b.csv", event_lines(4, start=50))  # a real change is still seen
    assert [p["name"] for p in json.loads(ws.cli("scan", "--json").stdout)["pending"]] == ["b.csv"]


def test_folded_records_keep_the_ctime(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded file folded into the compact map is still seen as changed after a same-timestamp rewrite."""
    import estore_ops.ingest.pipeline as ingest

    monkeypatch.setattr(ingest, "KEEP_RECORDS", 1)
    ws.landing.mkdir(parents=True)
    old, new = _same_size_versions()
    rewrite_in_place_then_touch(ws, tmp_path, old, FUTURE)
    ws.add("z-later.csv", event_lines(2, start=500))
    os.utime(ws.landing / "z-later.csv", ns=(4_200_000_000 * 10**9, 4_200_000_000 * 10**9))  # the newest: x.csv folds
    assert ws.cli("load").exit_code == 0
    doc = json.loads((ws.state / "cursor.json").read_text())
    assert "x.csv" in doc["folded"] and "x.csv" in doc["folded_ctime"]
    time.sleep(0.01)
    rewrite_in_place_then_touch(ws, tmp_path, new, FUTURE)
    assert [p["name"] for p in json.loads(ws.cli("scan", "--json").stdout)["pending"]] == ["x.csv"]


def test_only_files_listed_right_after_a_write_have_their_fingerprint_read(tmp_path: Path) -> None:
    """An idle scan reads no file: the fingerprint is read only for records marked racy (written
    within a timestamp tick of their listing), where one tick could hide a rewrite."""
    landing = LocalFolderStore(tmp_path / "landing")
    state = IngestState()
    for i in range(50):
        (landing.root / f"f{i}.csv").write_bytes(_csv(event_lines(2, start=i * 10)))
        info = landing.stat(f"f{i}.csv")
        identity = {"inode": info.inode, "ctime_ns": info.ctime_ns, "fingerprint": landing.fingerprint(info)}
        state.record_success(info.name, info.generation, info.size, 2, "r", identity=identity | ({"racy": True} if i == 0 else {}))
    reads: list[str] = []
    real = landing.fingerprint
    landing.fingerprint = lambda info: reads.append(info.name) or real(info)  # type: ignore[method-assign]
    result = scan(landing, state, 3)
    assert result.pending == [] and result.settled == 50
    assert reads == ["f0.csv"]

    # A same-size rewrite of the racy file within one timestamp tick: stat says "same", content does not.
    info = landing.stat("f0.csv")
    rec = state.files["f0.csv"]
    assert rec.changed(info, lambda i: "other-content") is True
    assert FileRecord(**{**rec.__dict__, "racy": None}).changed(info, lambda i: "other-content") is False


def test_state_documents_without_identity_fields_round_trip(tmp_path: Path) -> None:
    store = StateStore(LocalFolderStore(tmp_path / "state"))
    old = {"format_version": 1, "updated_at": None, "folded": {"old.csv": 5},
           "files": {"a.csv": {"generation": 7, "size": 3, "status": "loaded", "attempts": 1}}}
    store.store.write("cursor.json", json.dumps(old).encode())
    snap = store.read()
    assert snap.state.files["a.csv"].inode is None and snap.state.folded == {"old.csv": 5}
    saved = json.loads(store.save(snap, snap.state).raw)
    assert "inode" not in saved["files"]["a.csv"] and "folded_ctime" not in saved


def test_a_file_listed_right_after_its_write_is_marked_racy(ws: Workspace) -> None:
    """A file written moments before the load that lists it gets `racy` (its fingerprint is re-read);
    one written long before does not."""
    from estore_ops.ingest.pipeline import file_identity
    from estore_ops.ingest.state import racy_window_ns

    ws.add("old.csv", event_lines(2))
    os.utime(ws.landing / "old.csv")
    store = LocalFolderStore(ws.landing)
    info = store.stat("old.csv")
    assert file_identity(info, info.ctime_ns + 5 * racy_window_ns(info.ctime_ns)) == {"inode": info.inode, "ctime_ns": info.ctime_ns}
    assert file_identity(info, info.ctime_ns + 1)["racy"] is True
    assert racy_window_ns(3 * 10**9) == 2 * 10**9  # whole-second ctimes: a coarse file system
