"""Local folder store specifics: names that escape the root, generations on quick writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from estore_ops.errors import PreconditionFailedError, UnsafeNameError
from estore_ops.backends.stores.local import LocalFolderStore


@pytest.mark.parametrize("name", ["../x.csv", "/etc/passwd", "a/../../x.csv", "a//b.csv", "./a.csv", ""])
def test_names_escaping_the_root_are_refused(tmp_path: Path, name: str) -> None:
    store = LocalFolderStore(tmp_path / "root")
    with pytest.raises(UnsafeNameError):
        store.stat(name)


def test_symlink_pointing_outside_is_refused_and_not_listed(tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("x")
    store = LocalFolderStore(tmp_path / "root")
    os.symlink(outside, tmp_path / "root" / "link.csv")
    with pytest.raises(UnsafeNameError, match="outside the store root"):
        store.open("link.csv")
    assert [o.name for o in store.list()] == []


def test_quick_writes_always_get_a_new_generation(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    gens = [store.write("doc.json", b"x")]
    for _ in range(50):
        gens.append(store.write("doc.json", b"x", if_generation_match=gens[-1]))
    assert gens == sorted(set(gens))
    with pytest.raises(PreconditionFailedError):
        store.write("doc.json", b"y", if_generation_match=gens[0])


def test_a_file_copied_with_its_old_mtime_still_arrives_later(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    (tmp_path / "new.csv").write_text("a")
    before = store.stat("new.csv").generation
    old = tmp_path / "old.csv"
    old.write_text("b")
    os.utime(old, (0, 0))  # like `cp -p` of a file from 1970
    assert store.stat("old.csv").generation > before
