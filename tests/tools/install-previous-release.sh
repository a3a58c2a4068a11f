#!/usr/bin/env bash
# Installs the PREVIOUS RELEASE of estore-ops (the code users deployed before this version) into its
# own virtual environment, so tests/test_upgrade.py can build a deployment with the old code as a
# real subprocess and then upgrade it with the new code:
#   $1/previous-release/venv/bin/estore-ops
# The release is a commit of this repository, pinned below (tests/upgrade_peer.py reads the pin from
# here). Its files come from `git archive` of the repository the tests run in: no network needed,
# but the commit must be in the clone (a full clone; a shallow one must fetch it first).
# Idempotent: a stamp holding the commit makes reruns free.
# Usage: bash tests/tools/install-previous-release.sh TOOLS_DIR   (TOOLS_DIR defaults to .tools)
set -euo pipefail

# The last commit of main before the "production path / marts contract / upgrades" wave.
PREVIOUS_RELEASE_COMMIT=2381b81e24166d8284c7c3521f271b7cf26f1ee5

here="$(cd "$(dirname "$0")" && pwd)"
tools="$(mkdir -p "${1:-.tools}" && cd "${1:-.tools}" && pwd)"
dest="$tools/previous-release"
stamp="$dest/.estore-commit"
python="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 DO_NOT_TRACK=1

if [ "$(cat "$stamp" 2>/dev/null)" = "$PREVIOUS_RELEASE_COMMIT" ] \
  && "$dest/venv/bin/estore-ops" --help >/dev/null 2>&1; then
  echo "previous release: already installed ($PREVIOUS_RELEASE_COMMIT) in $dest/venv"
  exit 0
fi

fail() {
  echo "previous release: ERROR: $*" >&2
  exit 1
}

command -v git >/dev/null 2>&1 || fail "git is not installed; the upgrade test needs it to take commit
  $PREVIOUS_RELEASE_COMMIT out of this repository. Install it (apt-get install -y git) and rerun \`make tools\`."
repo="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null)" || fail "$here is not inside a git clone of
  estore-ops; the upgrade test takes the previous release (commit $PREVIOUS_RELEASE_COMMIT) out of the clone.
  Run the tests from a git clone."
if ! git -C "$repo" cat-file -e "$PREVIOUS_RELEASE_COMMIT^{commit}" 2>/dev/null; then
  shallow="$(git -C "$repo" rev-parse --is-shallow-repository 2>/dev/null || echo unknown)"
  hint="Fetch it with: git -C $repo fetch origin $PREVIOUS_RELEASE_COMMIT"
  [ "$shallow" = "true" ] && hint="This clone is shallow. Fetch the history with: git -C $repo fetch --unshallow (CI: clone with fetch-depth 0)"
  fail "commit $PREVIOUS_RELEASE_COMMIT (the previous release the upgrade test starts from) is not in
  the clone at $repo. $hint, then rerun \`make tools\`."
fi

rm -rf "$dest"
mkdir -p "$dest/src"
git -C "$repo" archive --format=tar "$PREVIOUS_RELEASE_COMMIT" | tar -x -C "$dest/src"
"$python" -m venv "$dest/venv"
"$dest/venv/bin/python" -m pip install -q --upgrade pip
# A regular (non-editable) install, like the VM's: the old dbt project and unit templates ship inside
# the package, so the old code never reads this checkout's (new) dbt/ folder.
"$dest/venv/bin/python" -m pip install -q "$dest/src"
"$dest/venv/bin/estore-ops" --help >/dev/null
rm -rf "$dest/src"
printf '%s' "$PREVIOUS_RELEASE_COMMIT" > "$stamp"
echo "previous release: installed estore-ops at $PREVIOUS_RELEASE_COMMIT in $dest/venv"
