"""The state document: compare-and-swap, previous version, corruption, bounded size."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from estore_ops.errors import CorruptStateError, StateConflictError
from estore_ops.ingest.state import LOADED, IngestState, StateStore
from estore_ops.backends.stores.local import LocalFolderStore


def _store(tmp_path: Path) -> StateStore:
    return StateStore(LocalFolderStore(tmp_path / "state"))


def test_two_writers_one_wins_the_other_gets_a_conflict(tmp_path: Path) -> None:
    store = _store(tmp_path)
    a, b = store.read(), store.read()
    a.state.record_success("a.csv", 1, 10, 5, "run-a")
    b.state.record_success("b.csv", 2, 10, 5, "run-b")
    store.save(a, a.state)
    with pytest.raises(StateConflictError, match="was changed by another writer since it was read"):
        store.save(b, b.state)
    assert set(store.read().state.files) == {"a.csv"}


def test_update_reapplies_on_conflict_so_no_update_is_lost(tmp_path: Path) -> None:
    store = _store(tmp_path)

    def worker(prefix: str) -> None:
        for i in range(60):
            store.update(lambda st, i=i: st.record_success(f"{prefix}-{i}.csv", i + 1, 1, 1, prefix))

    threads = [threading.Thread(target=worker, args=(p,)) for p in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.read().state.files) == 120


def test_previous_version_is_kept_and_restorable(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.update(lambda st: st.record_success("a.csv", 1, 1, 1, "r1"))
    store.update(lambda st: st.record_success("b.csv", 2, 1, 1, "r2"))
    (tmp_path / "state" / "cursor.json").write_bytes(b"\x00garbage")
    with pytest.raises(CorruptStateError, match="is not valid JSON"):
        store.read()
    restored = store.restore_previous()
    assert set(restored.state.files) == {"a.csv"}
    assert set(store.read().state.files) == {"a.csv"}


def test_reset_of_a_corrupt_document_keeps_the_good_previous_version(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.update(lambda st: st.record_success("a.csv", 1, 1, 1, "r1"))
    store.update(lambda st: st.record_success("b.csv", 2, 1, 1, "r2"))
    (tmp_path / "state" / "cursor.json").write_text("{")
    store.reset()
    assert set(store.restore_previous().state.files) == {"a.csv"}


def test_compaction_folds_old_loaded_records_into_a_compact_map() -> None:
    state = IngestState()
    for g in range(1, 11):
        state.record_success(f"f{g}.csv", g, 1, 1, "r")
    state.record_failure("bad.csv", 3, 1, "boom", "r", max_attempts=3)
    assert state.compact(keep=4) == 6  # f1..f6 fold; f7..f10 are the newest four
    assert "bad.csv" in state.files  # failures are never folded
    assert state.folded["f2.csv"] == 2
    assert state.is_settled("f2.csv", 2)  # folded: loaded at that generation
    assert not state.is_settled("f2.csv", 99)  # rewritten later: pending again
    assert not state.is_settled("never-seen.csv", 1)  # an old generation alone never means loaded
    assert state.counts()[LOADED] == 10
    again = IngestState.from_bytes(state.to_bytes(), "test")
    assert again.folded == state.folded and again.counts() == state.counts()


def test_forget_of_a_folded_file_makes_it_load_again() -> None:
    state = IngestState()
    for g in range(1, 6):
        state.record_success(f"f{g}.csv", g, 1, 1, "r")
    state.compact(keep=0)
    assert state.forget("f2.csv")
    assert not state.is_settled("f2.csv", 2)


def test_a_failure_recorded_twice_by_one_run_counts_once() -> None:
    state = IngestState()
    state.record_failure("f.csv", 5, 1, "bad", "run-1", max_attempts=3)
    state.record_failure("f.csv", 5, 1, "bad", "run-1", max_attempts=3)  # the same write, retried
    assert state.files["f.csv"].attempts == 1
    state.record_failure("f.csv", 5, 1, "bad", "run-2", max_attempts=3)
    assert state.files["f.csv"].attempts == 2


def test_compactable_counts_what_compact_folds() -> None:
    state = IngestState()
    for g in range(1, 6):
        state.record_success(f"f{g}.csv", g, 1, 1, "r")
    assert state.compactable(keep=2) == 3
    assert state.compact(keep=2) == 3
    assert state.compactable(keep=2) == 0
