#!/usr/bin/env bash
# Installs headless Chromium (Debian package `chromium`) for the browser test of the HTML report
# (tests/test_report_html.py), and links it as $1/bin/chromium so the test finds it in one place.
# Playwright drives this browser; it never downloads one of its own (`playwright install` cannot
# reach its CDN here, and the distribution's package gets security updates).
# Idempotent: does nothing when a working chromium is already installed.
# Usage: bash tests/tools/install-chromium.sh TOOLS_DIR   (TOOLS_DIR defaults to .tools)
set -euo pipefail
tools="$(mkdir -p "${1:-.tools}/bin" && cd "${1:-.tools}" && pwd)"

found="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$found" ] || ! "$found" --version >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "chromium: not installed; run as root or: sudo apt-get install -y chromium" >&2
    exit 1
  fi
  echo "chromium: installing the Debian package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  found="$(command -v chromium)"
fi
ln -sf "$found" "$tools/bin/chromium"
echo "chromium: $("$found" --version 2>/dev/null) at $found"
