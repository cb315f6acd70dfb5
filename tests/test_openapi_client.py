"""A client generated from the served ``/openapi.json`` runs the core flow (issue 14).

``openapi-python-client`` (no network) generates a Python package from the
document into a temporary folder; its functions, called through httpx's WSGI
transport against the test app, create an app and a version and deploy it,
mint a token with a plain unauthenticated client, list requirements and
statuses, submit credentials and read the connection with its secrets. The
generated models must not type any field the document marks required as
``Unset``.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from tests.conftest import HTTP_API_KEY

GENERATOR = os.path.join(os.path.dirname(sys.executable), "openapi-python-client")


@pytest.fixture
def generated(connect, tmp_path):
    """The generated client package (imported as ``cs_client``) and the document it came from."""
    document = connect.client.get("/openapi.json").get_json()
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    # no formatter: nothing outside the venv runs; the proxy's answers and bodies are any media type (*/*),
    # which a generated client handles as raw bytes
    (tmp_path / "config.yaml").write_text('post_hooks: []\ncontent_type_overrides:\n  "*/*": application/octet-stream\n')
    out = subprocess.run([GENERATOR, "generate", "--path", str(tmp_path / "openapi.json"), "--meta", "none",
                          "--output-path", str(tmp_path / "cs_client"), "--config", str(tmp_path / "config.yaml")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    # the generator warns about every piece of the document it could not turn into code
    assert "Warning" not in out.stdout + out.stderr, out.stdout + out.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        for name in [m for m in sys.modules if m == "cs_client" or m.startswith("cs_client.")]:
            del sys.modules[name]
        yield importlib.import_module("cs_client"), document
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "cs_client" or m.startswith("cs_client.")]:
            del sys.modules[name]


def _api(name: str):
    return importlib.import_module(f"cs_client.api.{name}")


def _models():
    return importlib.import_module("cs_client.models")


def test_generated_client_runs_the_core_flow(connect, generated):
    client_pkg, _ = generated
    models = _models()
    transport = httpx.WSGITransport(app=connect.app)
    org = client_pkg.AuthenticatedClient(base_url="http://connect.test", token=connect.access_key,
                                         httpx_args={"transport": transport})

    # 1. an app and a version, deployed
    app = _api("apps.create_app").sync(client=org, body=models.AppCreate(
        name="Generated", hostname="generated.example.com", visibility=models.AppCreateVisibility.PUBLIC))
    assert isinstance(app, models.App), app
    requirement = models.RequirementIn(
        key="helpdesk", type_="connection", title="Helpdesk API key",
        spec=models.Spec(type_="connection", data=models.SpecData.from_dict({"type": HTTP_API_KEY})))
    version = _api("apps.create_version").sync(app_id=app.id, client=org,
                                               body=models.VersionCreate(requirements=[requirement]))
    assert isinstance(version, models.Version), version
    deployed = _api("apps.deploy_version").sync(app_id=app.id, number=version.number, client=org)
    assert isinstance(deployed, models.Version) and deployed.deployed_at is not None

    # 2. a connect token from a plain client on the app's hostname (a public app needs no key)
    plain = client_pkg.Client(base_url=f"http://{app.hostname}", httpx_args={"transport": transport})
    token = _api("connect.create_connect_token").sync(client=plain, body=models.TokenCreate(user_id="user-1"))
    assert isinstance(token, models.Token), token
    user = client_pkg.AuthenticatedClient(base_url="http://connect.test", token=token.token,
                                          httpx_args={"transport": transport})

    # 3. requirements and statuses
    listed = _api("connect.list_requirements").sync(client=user)
    assert [r.title for r in listed.data] == ["Helpdesk API key"]
    req_id = listed.data[0].id
    statuses = _api("connect.get_requirement_statuses").sync(client=user)
    assert [(s.id, s.status.value) for s in statuses.data] == [(req_id, "pending")]

    # 4. credentials submitted
    body = models.ConfigSubmit.from_dict({"type": HTTP_API_KEY, "config": {
        "url": "https://helpdesk.example.com/api", "api_key": "hd_live_9f3a7c1e2b54"}})
    created = _api("connect.submit_credentials").sync(requirement_id=req_id, client=user, body=body)
    assert isinstance(created, models.Message) and created.message == "created"
    statuses = _api("connect.get_requirement_statuses").sync(client=user)
    assert [s.status.value for s in statuses.data] == ["completed"]

    # 5. the app's backend reads the connection with its secrets
    page = _api("connections.list_connections").sync(client=org, customer_id="user-1")
    assert len(page.data) == 1 and page.next_cursor is None
    conn = _api("connections.get_connection").sync(conn_id=page.data[0].id, client=org, include_secrets=True)
    assert isinstance(conn, models.Connection), conn
    assert conn.customer_id == "user-1" and conn.status.value == "active"
    assert conn.settings.to_dict() == {"url": "https://helpdesk.example.com/api", "api_key": "hd_live_9f3a7c1e2b54"}

    # an error is the generated Error model, not an exception or None
    missing = _api("apps.get_app").sync(app_id="nope", client=org)
    assert isinstance(missing, models.Error) and missing.error.code == "not_found"


def _snake(name: str) -> str:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    return snake


def test_generated_models_type_required_fields_without_unset(generated):
    _, document = generated
    models = _models()
    checked = 0
    for name, schema in document["components"]["schemas"].items():
        cls = getattr(models, name, None)
        if cls is None or not schema.get("required"):
            continue
        annotations = {}
        for klass in reversed(cls.__mro__):
            annotations.update(getattr(klass, "__annotations__", {}))
        for field in schema["required"]:
            attr = _snake(field)
            attr = attr if attr in annotations else attr + "_"  # the generator's escape of builtins (type_, input_)
            assert attr in annotations, f"{name}.{field}: no attribute {attr!r} in the generated {cls.__name__}"
            assert "Unset" not in str(annotations[attr]), f"{name}.{field} is required but typed {annotations[attr]}"
            checked += 1
    assert checked >= 100, checked
