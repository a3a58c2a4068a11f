"""Earlier formats of the state document, and how each one becomes the next.

A document written by an earlier estore-ops is migrated in memory when it is read (so every
command works on it at once) and written in the current format by the next save, which is the
usual compare-and-swap. Before that first save the document as the earlier version wrote it is
copied once to `cursor.v<N>.json` (N: its format) and never overwritten: `cursor.prev.json` only
keeps the last version, which is already in the new format after two saves.

To change the format: add the new fields to `state.FileRecord` / `state.IngestState`, bump
`state.FORMAT_VERSION`, and register here how a document of the previous version becomes one of
the new version, e.g.

    MIGRATIONS[1] = StateMigration(1, "records get `fingerprint` (unknown for files loaded before)",
                                   lambda doc: doc)   # optional fields: the defaults do it

Bump the format only when an earlier estore-ops would misread the new document. Optional fields
that older code ignores and newer code defaults (`job_attempt`, `transient_failures`, `inode`,
`ctime_ns`, `fingerprint`, `racy`, `folded_ctime`) keep format 1: a rollback to the earlier
release still reads the state instead of refusing a "future format".

A migration receives a deep copy of the document (a dict) and returns it in the next format;
`format_version` is set by `migrate`. It must keep every loaded file loaded (same generation).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from estore_ops.errors import CorruptStateError, PreconditionFailedError
from estore_ops.backends.stores.base import ObjectStore

FIRST_FORMAT = 1


@dataclass(frozen=True)
class StateMigration:
    from_version: int
    description: str
    upgrade: Callable[[dict[str, Any]], dict[str, Any]]


# from_version -> the migration to from_version + 1. Format 1 is the first one (no entries yet).
MIGRATIONS: dict[int, StateMigration] = {}


def migrate(doc: dict[str, Any], to_version: int, where: str, hint: str = "") -> tuple[dict[str, Any], list[str]]:
    """`doc` (an earlier format) brought to `to_version`; returns it and what each step did."""
    version = doc["format_version"]
    applied: list[str] = []
    while version < to_version:
        step = MIGRATIONS.get(version)
        if step is None:
            raise CorruptStateError(
                f"The state document {where} has format {version}, and this estore-ops has no migration from it "
                f"to format {version + 1}. {hint}".rstrip()
            )
        doc = step.upgrade(copy.deepcopy(doc))
        version += 1
        doc["format_version"] = version
        applied.append(f"format {version - 1} -> {version}: {step.description}")
    return doc, applied


def is_earlier_format(version: Any, current: int) -> bool:
    return isinstance(version, int) and not isinstance(version, bool) and FIRST_FORMAT <= version < current


def backup_name(name: str, version: int) -> str:
    """cursor.json -> cursor.v1.json: the document as format `version` left it."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.v{version}.{ext}" if dot else f"{name}.v{version}"


def keep_backup(store: ObjectStore, name: str, version: int, raw: bytes) -> bool:
    """Copy the earlier-format document once (an existing backup is never replaced). True if written."""
    try:
        store.write(backup_name(name, version), raw, if_generation_match=0)
    except PreconditionFailedError:
        return False
    return True
