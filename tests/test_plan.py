"""What a load picks: `classify` (one file version against the state) and `plan_load` (which files,
in which order, and which asked-for files are skipped and why), on real local folders and real
IngestState documents, without a warehouse. The CLI tests cover the same rules end to end; these
pin each rule on its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from estore_ops.backends.stores.base import ObjectInfo
from estore_ops.backends.stores.local import LocalFolderStore
from estore_ops.errors import UsageError
from estore_ops.ingest.pipeline import (
    CHANGED,
    FORCED,
    NEW,
    RETRY,
    LoadRequest,
    PendingFile,
    classify,
    file_identity,
    plan_load,
)
from estore_ops.ingest.state import LOADED, QUARANTINED, IngestState
from tests.helpers import event_lines, write_csv

MAX_ATTEMPTS = 3
SECOND_NS = 1_000_000_000


@pytest.fixture
def landing(tmp_path: Path) -> LocalFolderStore:
    return LocalFolderStore(tmp_path / "landing")


def arrive(store: LocalFolderStore, name: str, lines: int = 3, at_s: int = 0) -> ObjectInfo:
    """Write a file; `at_s` > 0 sets its mtime that many seconds ahead, which fixes its generation
    (max(mtime, ctime)) and so its arrival order."""
    path = write_csv(store.root / name, event_lines(lines, start=len(name) * 100))
    if at_s:
        future = time.time_ns() + at_s * SECOND_NS
        os.utime(path, ns=(future, future))
    return store.stat(name)


def loaded(state: IngestState, info: ObjectInfo) -> None:
    """Record `info` as loaded the way a load does (with its local identity, listed well after it was written)."""
    identity = file_identity(info, listed_ns=time.time_ns() + 60 * SECOND_NS)
    state.record_success(info.name, info.generation, info.size, 3, "r0", identity=identity)


def failed(state: IngestState, info: ObjectInfo, times: int) -> None:
    for run in range(times):
        state.record_failure(info.name, info.generation, info.size, "bad line", f"r{run}", MAX_ATTEMPTS)


def verdict(store: LocalFolderStore, state: IngestState, name: str) -> PendingFile | str:
    return classify(store.stat(name), state, MAX_ATTEMPTS, store.fingerprint)


def names(planned: list[PendingFile]) -> list[str]:
    return [p.info.name for p in planned]


# -- classify -----------------------------------------------------------------------------------


def test_a_file_never_seen_is_new_on_its_first_attempt(landing: LocalFolderStore) -> None:
    info = arrive(landing, "a.csv")
    pending = classify(info, IngestState(), MAX_ATTEMPTS)
    assert isinstance(pending, PendingFile)
    assert (pending.reason, pending.attempt, pending.why) == (NEW, 1, "new")


def test_a_loaded_version_needs_nothing(landing: LocalFolderStore) -> None:
    state = IngestState()
    loaded(state, arrive(landing, "a.csv"))
    assert verdict(landing, state, "a.csv") == LOADED


def test_a_rewritten_file_is_changed(landing: LocalFolderStore) -> None:
    state = IngestState()
    before = arrive(landing, "a.csv", lines=3)
    loaded(state, before)
    after = arrive(landing, "a.csv", lines=5)  # a new upload: new generation, size, inode
    assert after.generation != before.generation
    pending = verdict(landing, state, "a.csv")
    assert isinstance(pending, PendingFile) and (pending.reason, pending.attempt) == (CHANGED, 1)


def test_a_rewrite_that_keeps_generation_and_size_is_changed_by_its_ctime(landing: LocalFolderStore) -> None:
    """An mtime set ahead (`cp -p`, `touch -d`) outweighs ctime in the generation: a rewrite of the
    same size in place, with that mtime put back, keeps generation, size and inode. Only ctime moves."""
    state = IngestState()
    before = arrive(landing, "a.csv", at_s=3600)
    loaded(state, before)
    path = landing.root / "a.csv"
    st = os.stat(path)
    time.sleep(0.02)  # past one timestamp tick, so the rewrite gets another ctime
    data = path.read_bytes()
    with open(path, "r+b") as fh:
        fh.write(data.replace(b"view", b"cart", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime set ahead, put back
    after = landing.stat("a.csv")
    assert (after.generation, after.size, after.inode) == (before.generation, before.size, before.inode)
    assert after.ctime_ns != before.ctime_ns
    pending = verdict(landing, state, "a.csv")
    assert isinstance(pending, PendingFile) and pending.reason == CHANGED


def test_a_replaced_file_with_the_same_generation_and_size_is_changed_by_its_inode_and_ctime(landing: LocalFolderStore) -> None:
    state = IngestState()
    before = arrive(landing, "a.csv", at_s=3600)
    loaded(state, before)
    st = os.stat(landing.root / "a.csv")
    replacement = landing.root / ".a.csv.new"
    replacement.write_bytes((landing.root / "a.csv").read_bytes().replace(b"view", b"cart", 1))
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))  # `cp -p` of a file with the same mtime
    os.replace(replacement, landing.root / "a.csv")
    after = landing.stat("a.csv")
    assert (after.generation, after.size) == (before.generation, before.size) and after.inode != before.inode
    assert isinstance(verdict(landing, state, "a.csv"), PendingFile)


def test_a_version_loaded_within_a_timestamp_tick_is_checked_by_its_fingerprint(landing: LocalFolderStore) -> None:
    """A record marked racy keeps the content fingerprint: a rewrite that no timestamp shows
    (same generation, size, inode and ctime) is still found; a settled record is never read."""
    info = arrive(landing, "a.csv")
    state = IngestState()
    identity = file_identity(info, listed_ns=info.ctime_ns or 0)  # listed in the tick it was written in
    assert identity.get("racy")
    identity["fingerprint"] = "fingerprint-of-another-content"
    state.record_success(info.name, info.generation, info.size, 3, "r0", identity=identity)
    assert isinstance(classify(info, state, MAX_ATTEMPTS, landing.fingerprint), PendingFile)
    state.files["a.csv"].fingerprint = landing.fingerprint(info)
    assert classify(info, state, MAX_ATTEMPTS, landing.fingerprint) == LOADED
    state.files["a.csv"].racy = None  # settled: the stale fingerprint is not consulted
    state.files["a.csv"].fingerprint = "fingerprint-of-another-content"
    assert classify(info, state, MAX_ATTEMPTS, landing.fingerprint) == LOADED


def test_a_failed_file_is_retried_until_its_attempts_run_out(landing: LocalFolderStore) -> None:
    state = IngestState()
    info = arrive(landing, "bad.csv")
    failed(state, info, 1)
    pending = verdict(landing, state, "bad.csv")
    assert isinstance(pending, PendingFile)
    assert (pending.reason, pending.attempt, pending.why) == (RETRY, 2, f"retry 2 of {MAX_ATTEMPTS}")
    failed(state, info, 1)  # the same run id again (a retried state write) is not counted twice
    assert state.files["bad.csv"].attempts == 1
    state.record_failure(info.name, info.generation, info.size, "bad line", "r-other", MAX_ATTEMPTS)
    assert isinstance(verdict(landing, state, "bad.csv"), PendingFile)
    state.record_failure(info.name, info.generation, info.size, "bad line", "r-last", MAX_ATTEMPTS)
    assert state.files["bad.csv"].status == QUARANTINED
    assert verdict(landing, state, "bad.csv") == QUARANTINED


def test_a_quarantined_file_stays_quarantined_until_a_new_version_arrives(landing: LocalFolderStore) -> None:
    state = IngestState()
    info = arrive(landing, "bad.csv")
    for run in ("r1", "r2", "r3"):
        state.record_failure(info.name, info.generation, info.size, "bad line", run, MAX_ATTEMPTS)
    # A higher max_attempts later does not revive it: a quarantined record is only reset by the user.
    assert classify(info, state, MAX_ATTEMPTS + 5) == QUARANTINED
    arrive(landing, "bad.csv", lines=4)  # the fixed file, uploaded again
    pending = verdict(landing, state, "bad.csv")
    assert isinstance(pending, PendingFile) and (pending.reason, pending.attempt) == (CHANGED, 1)


def test_attempts_reached_quarantine_a_failed_record_when_max_attempts_is_lowered(landing: LocalFolderStore) -> None:
    state = IngestState()
    info = arrive(landing, "bad.csv")
    state.record_failure(info.name, info.generation, info.size, "bad line", "r1", MAX_ATTEMPTS)
    state.record_failure(info.name, info.generation, info.size, "bad line", "r2", MAX_ATTEMPTS)
    assert state.files["bad.csv"].status != QUARANTINED
    assert classify(info, state, 2) == QUARANTINED


def test_folded_names_keep_their_identity(landing: LocalFolderStore) -> None:
    """Loaded records beyond the newest few thousand fold into name -> generation (and ctime)."""
    state = IngestState()
    for name in ("a.csv", "b.csv", "c.csv"):
        loaded(state, arrive(landing, name))
    assert state.compact(0) == 3 and not state.files and set(state.folded) == {"a.csv", "b.csv", "c.csv"}
    assert verdict(landing, state, "a.csv") == LOADED
    arrive(landing, "b.csv", lines=7)  # rewritten after it was folded
    pending = verdict(landing, state, "b.csv")
    assert isinstance(pending, PendingFile) and pending.reason == CHANGED
    # Same generation, another ctime (a rewrite hidden behind an mtime set ahead): still changed.
    c = landing.stat("c.csv")
    state.folded_ctime["c.csv"] = (c.ctime_ns or 0) - 1
    assert isinstance(verdict(landing, state, "c.csv"), PendingFile)
    # A folded name not in the landing area any more and back under a new name is simply new.
    d = arrive(landing, "d.csv")
    assert isinstance(classify(d, state, MAX_ATTEMPTS), PendingFile)


# -- plan_load ----------------------------------------------------------------------------------


def test_files_load_in_arrival_order_not_name_order(landing: LocalFolderStore) -> None:
    arrive(landing, "2019-Oct.csv", at_s=10)
    arrive(landing, "2019-Nov.csv", at_s=20)  # sorts first by name, arrived later
    arrive(landing, "2019-Dec.csv", at_s=30)
    planned, skipped = plan_load(landing, IngestState(), MAX_ATTEMPTS)
    assert names(planned) == ["2019-Oct.csv", "2019-Nov.csv", "2019-Dec.csv"] and skipped == []


def test_only_pending_files_are_planned(landing: LocalFolderStore) -> None:
    state = IngestState()
    loaded(state, arrive(landing, "done.csv", at_s=1))
    failed(state, arrive(landing, "retry.csv", at_s=2), 1)
    quarantined = arrive(landing, "quarantined.csv", at_s=3)
    for run in ("r1", "r2", "r3"):
        state.record_failure(quarantined.name, quarantined.generation, quarantined.size, "bad", run, MAX_ATTEMPTS)
    arrive(landing, "new.csv", at_s=4)
    (landing.root / "notes.txt").write_text("not an event file")
    planned, skipped = plan_load(landing, state, MAX_ATTEMPTS)
    assert [(p.info.name, p.reason) for p in planned] == [("retry.csv", RETRY), ("new.csv", NEW)]
    assert skipped == [{"name": "quarantined.csv", "why": "quarantined (use cursor reset --file to retry)"}]


def test_prefix_limits_a_backfill(landing: LocalFolderStore) -> None:
    arrive(landing, "2019/10/a.csv", at_s=1)
    arrive(landing, "2019/11/b.csv", at_s=2)
    arrive(landing, "2020/01/c.csv", at_s=3)
    planned, _ = plan_load(landing, IngestState(), MAX_ATTEMPTS, LoadRequest(prefix="2019/"))
    assert names(planned) == ["2019/10/a.csv", "2019/11/b.csv"]


def test_force_reloads_everything_under_the_prefix_including_loaded_and_quarantined(landing: LocalFolderStore) -> None:
    state = IngestState()
    loaded(state, arrive(landing, "done.csv", at_s=1))
    bad = arrive(landing, "bad.csv", at_s=2)
    for run in ("r1", "r2", "r3"):
        state.record_failure(bad.name, bad.generation, bad.size, "bad", run, MAX_ATTEMPTS)
    arrive(landing, "new.csv", at_s=3)
    planned, skipped = plan_load(landing, state, MAX_ATTEMPTS, LoadRequest(force=True))
    assert [(p.info.name, p.reason, p.attempt) for p in planned] == [
        ("done.csv", FORCED, 1), ("bad.csv", FORCED, 1), ("new.csv", NEW, 1),
    ]
    assert skipped == []


def test_named_files_load_alone_once_each_in_arrival_order(landing: LocalFolderStore) -> None:
    arrive(landing, "a.csv", at_s=2)
    arrive(landing, "b.csv", at_s=1)
    arrive(landing, "c.csv", at_s=3)
    request = LoadRequest(files=["a.csv", "b.csv", "a.csv"])
    assert request.files == ("a.csv", "b.csv", "a.csv")  # the request is frozen: a list becomes a tuple
    planned, skipped = plan_load(landing, IngestState(), MAX_ATTEMPTS, request)
    assert names(planned) == ["b.csv", "a.csv"] and skipped == []


def test_named_files_already_loaded_or_quarantined_are_skipped_with_the_way_out(landing: LocalFolderStore) -> None:
    state = IngestState()
    loaded(state, arrive(landing, "done.csv"))
    bad = arrive(landing, "bad.csv")
    for run in ("r1", "r2", "r3"):
        state.record_failure(bad.name, bad.generation, bad.size, "bad", run, MAX_ATTEMPTS)
    planned, skipped = plan_load(landing, state, MAX_ATTEMPTS, LoadRequest(files=["done.csv", "bad.csv"]))
    assert planned == []
    assert skipped == [
        {"name": "done.csv", "why": "already loaded (use --force to load it again)"},
        {"name": "bad.csv", "why": "already quarantined (use cursor reset --file to load it again)"},
    ]
    forced, skipped = plan_load(landing, state, MAX_ATTEMPTS, LoadRequest(files=["done.csv", "bad.csv"], force=True))
    assert {(p.info.name, p.reason) for p in forced} == {("done.csv", FORCED), ("bad.csv", FORCED)} and skipped == []


def test_a_named_file_that_does_not_exist_is_a_usage_error(landing: LocalFolderStore) -> None:
    arrive(landing, "a.csv")
    with pytest.raises(UsageError, match=r"--file nope\.csv: no such file in the landing area"):
        plan_load(landing, IngestState(), MAX_ATTEMPTS, LoadRequest(files=["a.csv", "nope.csv"]))
    with pytest.raises(UsageError, match=r"--file a\.json: only \.csv and \.csv\.gz files are loaded"):
        plan_load(landing, IngestState(), MAX_ATTEMPTS, LoadRequest(files=["a.json"]))


def test_skip_missing_skips_a_named_file_deleted_before_its_load(landing: LocalFolderStore) -> None:
    """The event loop names files that may be deleted before its batch runs."""
    arrive(landing, "a.csv")
    request = LoadRequest(files=["gone.csv", "a.csv"], skip_missing=True)
    planned, skipped = plan_load(landing, IngestState(), MAX_ATTEMPTS, request)
    assert names(planned) == ["a.csv"]
    assert skipped == [{"name": "gone.csv", "why": "no longer in the landing area"}]


@pytest.mark.parametrize("named", [False, True], ids=["catch-up scan", "named files"])
def test_accept_leaves_files_still_being_written_for_later(landing: LocalFolderStore, named: bool) -> None:
    arrive(landing, "done.csv", at_s=1)
    arrive(landing, "writing.csv", at_s=2)
    request = LoadRequest(
        files=["done.csv", "writing.csv"] if named else (), skip_missing=True,
        accept=lambda info: info.name != "writing.csv",
    )
    planned, skipped = plan_load(landing, IngestState(), MAX_ATTEMPTS, request)
    assert names(planned) == ["done.csv"]
    assert skipped == [{"name": "writing.csv", "why": "not complete yet (still being written)"}]
