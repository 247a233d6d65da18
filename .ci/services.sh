#!/usr/bin/env bash
# Services the tests need, installed when missing. PostgreSQL: tests/population/test_workers.py
# starts (initdb + pg_ctl, as the `postgres` user) and stops its own throwaway cluster, so only
# the binaries are needed here; nothing is left running. Chromium: tests/records/test_report.py
# opens `fdl report`'s page headless. A test whose service is missing skips and says why.
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "services.sh: ${missing[*]} not installed and this is not root — their tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
