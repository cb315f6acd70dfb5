#!/usr/bin/env bash
# Install everything the test suite needs and run it on SQLite and on PostgreSQL, with the
# deployment and fault tests (pytest marks `nginx` and `faults`) as a third pass beside them.
# Needs: python3, root (or sudo) for `apt-get install chromium nginx`, PostgreSQL on 127.0.0.1:5432
# with trust auth for user postgres (override with CONNECT_TEST_PG_ADMIN_URL).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' -e tests/plugins/acme_helpdesk -e tests/plugins/toolhub_accounts

# Debian's chromium (hosted-page browser tests) and nginx (the shipped site, tests/test_deploy_nginx.py).
MISSING=()
[ -x /usr/bin/chromium ] || MISSING+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || MISSING+=(nginx)
if [ "${#MISSING[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # policy-rc.d keeps the package's own nginx service from starting (the tests start their own)
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
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

# The passes are independent (own databases, random ports) and each mostly uses one core:
# run them side by side, then show every output and fail if any failed.
LOGS="$(mktemp -d)"
SUITE=(-m "not nginx and not faults")
.venv/bin/python -m pytest -q -p no:cacheprovider "${SUITE[@]}" "$@" >"$LOGS/sqlite.log" 2>&1 &
SQLITE_PID=$!
# The fuzzer and the all-checks conformance run explore the API itself on the SQLite pass; on PostgreSQL a
# smaller sample checks the same operations against the other database.
CONNECT_FUZZ_EXAMPLES="${CONNECT_FUZZ_EXAMPLES_PG:-10}" \
CONNECT_CONFORMANCE_EXAMPLES="${CONNECT_CONFORMANCE_EXAMPLES_PG:-10}" CONNECT_TEST_DATABASE_URL="${PG_ADMIN%/*}/$PG_DB" \
    .venv/bin/python -m pytest -q -p no:cacheprovider "${SUITE[@]}" "$@" >"$LOGS/postgresql.log" 2>&1 &
PG_PID=$!
# nginx + gunicorn deployment and fault tests: each module makes (and drops) a database of its own
# on the same server, and cuts only a proxy of its own, never the server the other passes use.
CONNECT_TEST_PG_ADMIN_URL="$PG_ADMIN" \
    .venv/bin/python -m pytest -q -p no:cacheprovider -m "nginx or faults" "$@" >"$LOGS/deploy.log" 2>&1 &
DEPLOY_PID=$!
status=0
wait "$SQLITE_PID" || status=1
wait "$PG_PID" || status=1
deploy_status=0
wait "$DEPLOY_PID" || deploy_status=$?
[ "$deploy_status" -eq 0 ] || [ "$deploy_status" -eq 5 ] || status=1  # 5: arguments selected none of them
echo "== test suite on SQLite"
cat "$LOGS/sqlite.log"
echo "== test suite on PostgreSQL ($PG_DB)"
cat "$LOGS/postgresql.log"
echo "== deployment (nginx) and fault tests"
cat "$LOGS/deploy.log"
rm -rf "$LOGS"
exit "$status"
