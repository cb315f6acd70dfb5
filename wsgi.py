"""WSGI entry point for gunicorn: ``gunicorn wsgi:app``.

Settings come from ``CONNECT_CONFIG`` / ``CONNECT_*`` env vars. The factory
already applies ProxyFix for ``proxy_count`` proxies (nginx: 1), so
``X-Forwarded-Host``/``-For``/``-Proto`` from nginx are honoured. A missing or
invalid setting stops the process with one line naming it.
"""
import sys

from connect_service.app import create_app
from connect_service.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"connect-service: {exc}", file=sys.stderr)
    sys.exit(3)  # gunicorn treats exit code 3 from a worker as "do not restart"
