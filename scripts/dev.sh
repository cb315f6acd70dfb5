#!/usr/bin/env bash
# Install connect-service into .venv and serve it on SQLite with a demo org, key and app.
# Idempotent: a rerun reuses the demo organization, app and Access Key (kept in instance/demo-access-key).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e .
export CONNECT_ENV="${CONNECT_ENV:-development}"
export CONNECT_INSTANCE_PATH="${CONNECT_INSTANCE_PATH:-$PWD/instance}"
BIND="${CONNECT_BIND:-127.0.0.1:5000}"
export CONNECT_PUBLIC_URL="${CONNECT_PUBLIC_URL:-http://$BIND}"
# Nothing sits in front of this server: trust no X-Forwarded-* header (else a client picks its own
# address and escapes the rate limits). Behind nginx the systemd unit sets 1.
export CONNECT_PROXY_COUNT=0
.venv/bin/connect-service migrate >/dev/null
.venv/bin/connect-service demo --bind "$BIND"
echo "Serving on http://$BIND (Ctrl-C to stop)" >&2
exec .venv/bin/connect-service serve --bind "$BIND" --workers 2
