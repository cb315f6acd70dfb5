#!/usr/bin/env bash
# Install everything the test suite needs and run it on SQLite, then on PostgreSQL.
# Needs: python3, root (or sudo) for `apt-get install chromium`, PostgreSQL on 127.0.0.1:5432
# with trust auth for user postgres (override with CONNECT_TEST_PG_ADMIN_URL).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' -e tests/plugins/acme_helpdesk -e tests/plugins/toolhub_accounts

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PG_ADMIN="${CONNECT_TEST_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
# A database of this run's own, so two runs on one PostgreSQL never disturb each other.
PG_DB="${CONNECT_TEST_PG_DB:-connect_service_test_$$}"
if ! psql "$PG_ADMIN" -qtAc "select 1" >/dev/null 2>&1; then
    echo "PostgreSQL is not reachable at $PG_ADMIN" >&2
    exit 1
fi
psql "$PG_ADMIN" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" >/dev/null
trap 'psql "$PG_ADMIN" -q -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

# The two passes are independent (own databases, random ports) and each mostly uses one core:
# run them side by side, then show both outputs and fail if either failed.
LOGS="$(mktemp -d)"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" >"$LOGS/sqlite.log" 2>&1 &
SQLITE_PID=$!
# The fuzzer explores the API itself on the SQLite pass; on PostgreSQL a smaller sample checks the
# same operations against the other database.
CONNECT_FUZZ_EXAMPLES="${CONNECT_FUZZ_EXAMPLES_PG:-10}" CONNECT_TEST_DATABASE_URL="${PG_ADMIN%/*}/$PG_DB" \
    .venv/bin/python -m pytest -q -p no:cacheprovider "$@" >"$LOGS/postgresql.log" 2>&1 &
PG_PID=$!
status=0
wait "$SQLITE_PID" || status=1
wait "$PG_PID" || status=1
echo "== test suite on SQLite"
cat "$LOGS/sqlite.log"
echo "== test suite on PostgreSQL ($PG_DB)"
cat "$LOGS/postgresql.log"
rm -rf "$LOGS"
exit "$status"
