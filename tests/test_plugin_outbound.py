"""A plugin's ``validate`` calls the service being connected through the public API only.

``connect_service.outbound_client()`` is the guarded client configured from the service's own
settings (``allowed_private_hosts``, ``http_timeout_seconds``); the plugins below import nothing
but ``connect_service`` and run against a local HTTP server, end to end through
``POST /v1/connect/requirements/{id}/credentials``.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from marshmallow import Schema

import connect_service
from connect_service import (ConnectionType, GuardedClient, OutboundError, ValidationError, fields, hookimpl,
                             outbound_client)
from connect_service.testing import connection_requirement, make_config
from tests.support.provider_stub import ProviderStub

ROOT = Path(__file__).resolve().parents[1]
GOOD_KEY = "pk_good"
REJECTED_KEY = "pk_wrong"


@pytest.fixture(scope="module")
def service():
    """A local stand-in for the service being connected (tests/support/provider_stub.py): its ``/protected``
    answers 200, or 401 for the rejected key, and every request is recorded."""
    server = ProviderStub().start()
    server.rejected.add(REJECTED_KEY)
    yield server
    server.stop()


@pytest.fixture
def seen(service):
    service.requests.clear()
    return service.requests


def _calls(seen) -> list[tuple[str, str, str]]:
    return [(r["path"], r["headers"].get("authorization"), r["headers"].get("user-agent")) for r in seen]


# --- the test plugins: public API only ----------------------------------------------------------------------

class PingConfig(Schema):
    url = fields.Url(required=True)
    api_key = fields.Secret(required=True)


class Ping(ConnectionType):
    """Follows docs/plugins.md: call the service, turn every outcome into ``ValidationError(message, field)``."""

    name = "example.connections.Ping"
    title = "Ping"
    schema = PingConfig

    def validate(self, config):
        try:
            with outbound_client() as client:
                resp = client.get(config["url"].rstrip("/") + "/protected",
                                  headers={"Authorization": "Bearer " + config["api_key"]})
        except OutboundError as exc:
            raise ValidationError(f"could not be reached: {exc.reason}", "url")
        if resp.status_code == 401:
            raise ValidationError("was rejected by the service", "api_key")
        if resp.status_code != 200:
            raise ValidationError(f"the service answered {resp.status_code}", "url")


class Careless(ConnectionType):
    """Forgets to catch ``OutboundError``: the core must still answer a 400, not a 500."""

    name = "example.connections.Careless"
    title = "Careless"
    schema = PingConfig

    def validate(self, config):
        with outbound_client() as client:
            client.get(config["url"].rstrip("/") + "/protected", headers={"Authorization": "Bearer " + config["api_key"]})


class _TypesPlugin:
    @hookimpl
    def register_connection_types(self):
        return [Ping, Careless]


@pytest.fixture
def connect_plugins():
    return [_TypesPlugin()]


def _submit(connect, type_name, config, user="u1"):
    app = connect.create_app_with_requirements([connection_requirement("svc", type_name)])
    token = connect.token(app, user)
    rid = connect.requirement_id(app, "svc")
    return connect.submit_credentials(token, rid, type_name, config), token, rid


# --- the local service is allowed (only its port) -----------------------------------------------------------

class TestAllowedLocalService:
    @pytest.fixture
    def connect_config(self, tmp_path, service):
        return make_config(tmp_path, allowed_private_hosts=[f"127.0.0.1:{service.port}"],
                           http_timeout_seconds=3.5)

    def test_a_good_key_is_checked_with_the_service_and_stored(self, connect, service, seen):
        url = service.url
        r, token, rid = _submit(connect, Ping.name, {"url": url, "api_key": GOOD_KEY})
        assert r.status_code == 201, r.get_json()
        assert connect.statuses(token) == {rid: "completed"}
        assert _calls(seen) == [("/protected", f"Bearer {GOOD_KEY}", "connect-service")]

    def test_a_rejected_key_is_a_400_naming_the_field(self, connect, service, seen):
        url = service.url
        r, token, rid = _submit(connect, Ping.name, {"url": url, "api_key": REJECTED_KEY})
        assert r.status_code == 400, r.get_json()
        assert r.get_json()["error"]["details"] == {"config.api_key": "was rejected by the service"}
        assert REJECTED_KEY not in r.get_data(as_text=True)
        assert connect.statuses(token) == {rid: "pending"}
        assert len(seen) == 1

    def test_outbound_client_is_configured_from_the_service_settings(self, connect, service):
        with connect.app.app_context():
            client = outbound_client()
        with client:
            assert isinstance(client, GuardedClient)
            assert client.allowed_private_hosts == {("127.0.0.1", service.port)}
            assert client.timeout == (3.5, 3.5)
            assert client.max_total_time == 60.0 and client.max_response_bytes == 10 * 1024 * 1024
        with connect.app.app_context():  # a call may tighten a limit, never widen the destinations
            with outbound_client(timeout=1.0, max_redirects=0) as tight:
                assert tight.timeout == (1.0, 1.0) and tight.max_redirects == 0
                assert tight.allowed_private_hosts == {("127.0.0.1", service.port)}
            with pytest.raises(TypeError):
                outbound_client(allowed_private_hosts=["10.0.0.1"])

    def test_outside_the_running_service_it_says_why(self):
        with pytest.raises(RuntimeError, match="settings of the running service"):
            outbound_client()


# --- the local service is NOT allowed ------------------------------------------------------------------------

class TestLocalServiceNotAllowed:
    @pytest.fixture
    def connect_config(self, tmp_path):
        return make_config(tmp_path, allowed_private_hosts=[])

    def test_the_call_is_refused_and_the_plugin_reports_it_on_its_field(self, connect, service, seen):
        url = service.url
        r, token, rid = _submit(connect, Ping.name, {"url": url, "api_key": GOOD_KEY})
        assert r.status_code == 400, r.get_json()
        assert r.get_json()["error"]["details"] == {"config.url": "could not be reached: address is not public"}
        assert seen == []  # refused before connecting
        assert connect.statuses(token) == {rid: "pending"}

    def test_an_outbound_error_the_plugin_leaves_uncaught_is_a_400_not_a_500(self, connect, service, seen):
        url = service.url
        r, token, rid = _submit(connect, Careless.name, {"url": url, "api_key": GOOD_KEY})
        assert r.status_code == 400, r.get_json()
        assert r.get_json()["error"]["details"] == {
            "config": f"could not be checked with the service: address is not public ({url}/protected)"}
        assert GOOD_KEY not in r.get_data(as_text=True)
        assert seen == []
        assert connect.statuses(token) == {rid: "pending"}


# --- what the documentation tells plugin authors to import exists --------------------------------------------

def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.DOTALL)


def _docstring_examples(text: str) -> list[str]:
    """The indented blocks that follow a ``::`` line (reStructuredText literal blocks), dedented."""
    blocks = []
    lines = inspect.cleandoc(text).splitlines()
    for i, line in enumerate(lines):
        if not line.rstrip().endswith("::"):
            continue
        block: list[str] = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and not nxt.startswith(" "):
                break
            block.append(nxt)
        indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
        blocks.append("\n".join(b[indent:] for b in block))
    return blocks


def _connect_service_imports(source: str) -> list[tuple[str, str | None]]:
    """``(module, name)`` for every ``connect_service`` import in ``source`` (``name`` None for ``import x``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "connect_service":
            found.extend((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names if alias.name.split(".")[0] == "connect_service")
    return found


def _plugin_facing_examples() -> dict[str, list[str]]:
    examples = {
        "docs/plugins.md": _python_blocks((ROOT / "docs" / "plugins.md").read_text()),
        "docs/security.md": _python_blocks((ROOT / "docs" / "security.md").read_text()),
        "connect_service/http.py": _docstring_examples(connect_service.http.__doc__ or ""),
        "ConnectionType.validate": _docstring_examples(ConnectionType.validate.__doc__ or ""),
        "connect_service.outbound_client": _docstring_examples(outbound_client.__doc__ or ""),
    }
    for path in sorted((ROOT / "tests" / "plugins").glob("*/src/*/*.py")):
        examples[str(path.relative_to(ROOT))] = [path.read_text()]
    return examples


def test_what_the_docs_tell_plugins_to_import_is_exported_by_connect_service():
    problems = []
    for where, blocks in _plugin_facing_examples().items():
        for block in blocks:
            for module, name in _connect_service_imports(block):
                if module == "connect_service.testing":  # the plugin author kit, for a plugin's tests
                    continue
                if module != "connect_service" or name is None:
                    problems.append(f"{where}: imports {module}{'.' + name if name else ''}, not the package root")
                elif name not in connect_service.__all__ or not hasattr(connect_service, name):
                    problems.append(f"{where}: imports connect_service.{name}, which is not exported")
    assert not problems, "\n".join(problems)


#: submodules the docs may name: the author kit (for a plugin's tests), and core code a hook's text explains
EXPLAINED_INTERNALS = {"testing", "connections"}


def test_the_docs_name_only_exported_connect_service_attributes():
    """Each ``connect_service.<name>`` the plugin docs point at is exported (or an explained internal)."""
    problems = []
    for doc in ("plugins.md", "security.md"):
        for name in re.findall(r"`connect_service\.([A-Za-z_][A-Za-z0-9_]*)", (ROOT / "docs" / doc).read_text()):
            if name not in EXPLAINED_INTERNALS and name not in connect_service.__all__:
                problems.append(f"docs/{doc}: `connect_service.{name}...` is not in connect_service.__all__")
    assert not problems, "\n".join(problems)


def test_the_checks_above_see_a_non_exported_import():
    assert _connect_service_imports("from connect_service.http import GuardedClient\nimport connect_service.db\n") == [
        ("connect_service.http", "GuardedClient"), ("connect_service.db", None)]
    assert _docstring_examples("Example::\n\n    from x import y\n    y()\n\nAfter.\n") == ["\nfrom x import y\ny()\n"]
    for name in ("outbound_client", "GuardedClient", "OutboundError", "ValidationError"):
        assert name in connect_service.__all__, name
