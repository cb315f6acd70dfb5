"""WSGI entry point for gunicorn: ``gunicorn -c deploy/gunicorn.conf.py wsgi:app``.

Settings come from ``CONNECT_CONFIG`` / ``CONNECT_*`` env vars. The factory
already applies ProxyFix for ``proxy_count`` proxies (nginx: 1), so
``X-Forwarded-Host``/``-For``/``-Proto`` from nginx are honoured. A missing or
invalid setting, an unreachable database or one behind the code's migrations
stops the process with one line (``deploy/gunicorn.conf.py`` checks once in
the master, so workers normally never get here with a bad setting).
"""
import sys

from connect_service.app import create_app
from connect_service.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"connect-service: {exc}", file=sys.stderr)
    sys.exit(3)  # gunicorn treats exit code 3 from a worker as "do not restart"
