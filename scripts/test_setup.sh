#!/usr/bin/env bash
# What only the test suite needs beyond .venv: headless Chromium, which renders the HTML report in
# tests/test_report_html.py. Installed from Debian's archive on fresh CI machines when missing and
# we are root with apt-get; idempotent. scripts/test.sh runs it; the main job (scripts/demo.sh) does not.
# UNLEARN_GUARD_CHROMIUM names the browser to look for (default /usr/bin/chromium).
set -euo pipefail
chromium="${UNLEARN_GUARD_CHROMIUM:-/usr/bin/chromium}"
log=/tmp/unlearn_guard_chromium.log
if [ ! -x "$chromium" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the HTML report test (log: $log)"
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } >"$log" 2>&1; then
    echo "apt-get install chromium failed; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
fi
