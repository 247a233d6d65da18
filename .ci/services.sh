#!/usr/bin/env bash
# Services the tests need, installed when missing. PostgreSQL: tests/population/test_workers.py
# starts (initdb + pg_ctl, as the `postgres` user) and stops its own throwaway cluster, so only
# the binaries are needed here; nothing is left running.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "services.sh: PostgreSQL is not installed and this is not root — its sweep test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
