"""The package tree reads as the architecture (README, "Architecture"): modules live in groups
(ingest/, backends/, ops/, analytics/, deploy/, testing/, ...), each group says in its __init__
docstring what it is for, and only the few modules every group shares sit at the top. A new module
at the top of estore_ops/ fails here: put it in the group whose job it does."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "estore_ops"

# The CLI, the library's entry points (jobs) and what every group shares.
TOP_LEVEL = {"cli", "jobs", "config", "runtime", "errors", "schema", "logs", "output", "redact", "render", "demo",
             "__init__", "__main__"}


def _python_folders() -> list[Path]:
    """Every folder under estore_ops/ that holds Python modules (templates and data folders hold none)."""
    return sorted({p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts} - {PACKAGE})


def test_every_group_is_a_package_that_says_what_it_is_for() -> None:
    missing, undocumented = [], []
    for folder in _python_folders():
        init = folder / "__init__.py"
        name = folder.relative_to(PACKAGE.parent).as_posix()
        if not init.exists():
            missing.append(name)
        elif not (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "").strip():
            undocumented.append(name)
    assert not missing, f"folders of modules without an __init__.py: {missing}"
    assert not undocumented, f"packages whose __init__.py has no docstring saying what the group is for: {undocumented}"


def test_only_the_shared_modules_sit_at_the_top_of_the_package() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    stray = sorted(top - TOP_LEVEL)
    assert not stray, (
        f"modules at the top of estore_ops/: {stray}. Move each into the group whose job it does "
        "(ingest/, backends/, ops/, analytics/, deploy/, testing/), or, if every group shares it, "
        "add it to TOP_LEVEL in this test and to the README's architecture section."
    )
