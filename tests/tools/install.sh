#!/usr/bin/env bash
# Installs the external tools the tests drive, each in its own environment under $1 (default .tools):
# the GCS and BigQuery emulators, and checkov for the Terraform checks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$(mkdir -p "${1:-.tools}" && cd "${1:-.tools}" && pwd)"
for script in "$here"/install-*.sh; do
  [ -e "$script" ] || continue
  echo "tools: $(basename "$script")"
  bash "$script" "$dest"
done
