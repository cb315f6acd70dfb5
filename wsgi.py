"""WSGI entry point for gunicorn: ``gunicorn wsgi:app``.

Settings come from ``CONNECT_CONFIG`` / ``CONNECT_*`` env vars. The factory
already applies ProxyFix for ``proxy_count`` proxies (nginx: 1), so
``X-Forwarded-Host``/``-For``/``-Proto`` from nginx are honoured.
"""
from connect_service.app import create_app

app = create_app()
