#!/usr/bin/env bash
# Installs rsync (tests/test_file_identity.py copies landing files with `rsync -t`, as producers do,
# to show a rewrite with copied timestamps is still seen as changed). Debian package, as root.
# Idempotent: does nothing when rsync is already there. Without root it only says what is missing.
set -euo pipefail
if command -v rsync >/dev/null 2>&1; then
  echo "rsync: already installed ($(rsync --version | head -1))"
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "rsync: not installed and cannot install it here (needs root and apt-get); the rsync case is skipped"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q rsync >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q rsync >/dev/null; }
echo "rsync: installed $(rsync --version | head -1)"
