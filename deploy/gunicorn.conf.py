"""gunicorn settings: `gunicorn -c deploy/gunicorn.conf.py wsgi:app` (what `connect-service serve` runs).

Connections to PostgreSQL: each worker process keeps a pool of up to
CONNECT_DATABASE_POOL_SIZE; with gthread, `threads` requests share it, so
workers x database_pool_size must stay under PostgreSQL's max_connections
(minus what cron jobs and other hosts use).
"""
import multiprocessing
import os
import sys

bind = os.environ.get("CONNECT_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CONNECT_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("CONNECT_THREADS", 4))
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
keepalive = 5
# connect-service logs one JSON line per request itself (without query strings);
# gunicorn's access log would include them, so it stays off.
accesslog = None
errorlog = "-"
forwarded_allow_ips = os.environ.get("CONNECT_FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server):
    """Check settings and database once in the master: a failure is one line, not one per worker."""
    # Imported here, not at the top: gunicorn reads this file before it imports the application.
    from connect_service.app import KEYS_CHECKED_ENV, create_app, mark_keys_checked
    from connect_service.config import ConfigError

    os.environ.pop(KEYS_CHECKED_ENV, None)  # the master always checks for itself
    try:
        app = create_app()  # closes its check connections again, so no worker inherits a socket
    except ConfigError as exc:
        print(f"connect-service: {exc}", file=sys.stderr)
        sys.exit(3)
    # the keys decrypt the stored secrets: workers forked with the same database and keys need not scan every
    # encrypted row again at each boot (seconds at ten million connections)
    mark_keys_checked(app)
