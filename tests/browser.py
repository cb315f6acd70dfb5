"""Fixtures for the hosted-page browser tests: the service on a real server, and headless Chromium.

The service runs on a threaded werkzeug server bound to 127.0.0.1 with
``public_url`` set to that server's own origin, so the page's cookie, redirects
and CSRF origin check see exactly what a deployment sees. Chromium is Debian's
``/usr/bin/chromium`` driven by Playwright; a missing browser FAILS the tests
(never a silent skip).

``tests/conftest.py`` registers this module as a plugin, so a test module just
names the fixtures (``live_service``, ``chromium``, ``browser_page``,
``framing_parent``). Do not import them into a test module: a session-scoped
fixture imported into two modules becomes two sessions, and the second
Playwright start fails inside the first one's event loop.

``framing_parent`` is a second local site (another port of 127.0.0.1) whose page
``/?src=<url>`` frames ``url``, for the embedding tests.
"""
from __future__ import annotations

import html
import os
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from connect_service.testing import ConnectHarness, make_config, reset_database

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts")


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):  # the app logs its own JSON access line
        pass


class _DeferredApp:
    """A WSGI callable whose app is set once the server's port (and so ``public_url``) is known."""

    app: Any = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@dataclass
class LiveService:
    """The running service: its origin, the Flask app and a harness for setup calls (test client)."""

    url: str
    app: Any
    harness: ConnectHarness


@pytest.fixture
def live_service(tmp_path, connect_plugins):
    """The service on ``http://127.0.0.1:<port>`` (threaded werkzeug), fresh database, one org + Access Key."""
    from connect_service.api.access_keys import create_access_key
    from connect_service.app import create_app
    from connect_service.db import database
    from connect_service.models import Organization

    deferred = _DeferredApp()
    server = make_server("127.0.0.1", 0, deferred, threaded=True, request_handler=_QuietHandler)
    url = f"http://127.0.0.1:{server.server_port}"
    app = create_app(make_config(tmp_path, public_url=url, log_level="WARNING"), plugins=connect_plugins)
    with app.app_context():
        reset_database()
        with database.connection_context():
            org = Organization.create(name="Browser test org")
            _, plaintext = create_access_key(org, "browser-tests")
    deferred.app = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="connect-live-service", daemon=True)
    thread.start()
    harness = ConnectHarness(app=app, client=app.test_client(), org_id=org.id, access_key=plaintext)
    try:
        yield LiveService(url=url, app=app, harness=harness)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if not database.is_closed():
            database.close()


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian Chromium through Playwright; fails loudly when either is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`) "
                    "to run the hosted-page browser tests", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: `pip install -e .[test]`", pytrace=False)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except Exception:
        playwright.stop()
        raise
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture
def browser_page(chromium):
    """A fresh browser context (own cookies) and page at a desktop width."""
    context = chromium.new_context(viewport={"width": 1024, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


def _framing_app(environ, start_response):
    from urllib.parse import parse_qs

    src = parse_qs(environ.get("QUERY_STRING", "")).get("src", [""])[0]
    # ``data-loads`` counts the frame's load events (a frame the browser refuses to show loads an error page)
    body = ('<!doctype html><html><head><title>Embedding site</title></head><body data-loads="0">'
            f'<iframe id="embedded" title="Connect" width="900" height="700" src="{html.escape(src)}" '
            'onload="document.body.dataset.loads = +document.body.dataset.loads + 1"></iframe>'
            '</body></html>').encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def framing_parent():
    """Another site on 127.0.0.1 (own port) serving ``/?src=<url>``: a page that frames ``url``; yields its port."""
    server = make_server("127.0.0.1", 0, _framing_app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="framing-parent", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def artifact_path(name: str) -> str:
    """Path under ``test-artifacts/`` (created on demand) for screenshots the tests keep."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.join(ARTIFACTS, name)
