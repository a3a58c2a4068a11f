"""Static check of the shipped code: a name used but never defined (a lost import after a merge, a
typo on an error path) only fails when that path runs, often on a user's machine. pyflakes finds
it without running anything. And a `type: ignore` names the error it silences and says why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_and_the_benchmarks_have_no_undefined_or_unused_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pyflakes", "estore_ops", "bench"], cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, f"pyflakes found:\n{result.stdout}{result.stderr}"


def test_every_type_ignore_says_what_it_silences_and_why() -> None:
    # A bare `type: ignore` hides every later error on its line; a code and a reason keep it honest.

    justified = re.compile(r"#\s*type:\s*ignore\[[a-z-]+(,\s*[a-z-]+)*\]\s*#\s*\S")
    bare = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("estore_ops", "bench", "tests")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"#\s*type:\s*ignore", line) and not justified.search(line)
    ]
    assert bare == []
