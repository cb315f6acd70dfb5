"""The sample plugin's own tests, written against the plugin author kit (connect_service.testing).

They run against the *installed* distribution: connect-service finds the
plugin through its entry point, as in production.
"""
import importlib.metadata
import logging

import pytest

from connect_service.testing import connection_requirement

HELPDESK = "acme.connections.Helpdesk"


@pytest.fixture(autouse=True)
def _installed():
    try:
        importlib.metadata.distribution("acme-helpdesk")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("acme-helpdesk is not installed: pip install -e tests/plugins/acme_helpdesk")


@pytest.fixture
def helpdesk_app(connect):
    return connect.create_app_with_requirements([connection_requirement("helpdesk", HELPDESK, "Your helpdesk")])


def test_listed_with_its_form(connect):
    item = next(t for t in connect.connection_types() if t["name"] == HELPDESK)
    assert item["title"] == "Acme Helpdesk"
    assert item["auth"] == "credentials"
    fields = {f["name"]: f for f in item["form"]["fields"]}
    assert list(fields) == ["url", "api_key", "team"]
    assert fields["api_key"]["secret"] is True and fields["api_key"]["input"] == "password"
    assert fields["team"]["choices"] == ["support", "sales", "billing"] and fields["team"]["default"] == "support"


def test_accepts_credentials_and_completes_the_requirement(connect, helpdesk_app, caplog):
    token = connect.token(helpdesk_app, "alice")
    req_id = connect.requirement_id(helpdesk_app, "helpdesk")
    with caplog.at_level(logging.INFO, logger="acme_helpdesk"):
        r = connect.submit_credentials(token, req_id, HELPDESK, {"url": "https://acme.example.com",
                                                                 "api_key": "hd_123"})
    assert r.status_code == 201, r.get_json()
    assert connect.statuses(token) == {req_id: "completed"}
    assert connect.stored_config(helpdesk_app, "alice", "helpdesk") == {
        "url": "https://acme.example.com", "api_key": "hd_123", "team": "support"}
    assert "acme helpdesk connected for customer alice" in caplog.text
    assert "hd_123" not in caplog.text


def test_rejects_a_key_of_the_wrong_shape(connect, helpdesk_app):
    token = connect.token(helpdesk_app, "bob")
    req_id = connect.requirement_id(helpdesk_app, "helpdesk")
    r = connect.submit_credentials(token, req_id, HELPDESK, {"url": "https://acme.example.com", "api_key": "sk_1"})
    assert r.status_code == 400
    assert r.get_json()["error"]["details"] == {"config.api_key": "must start with hd_ (an Acme Helpdesk API key)"}
    assert connect.statuses(token) == {req_id: "pending"}


def test_rejects_a_non_http_url(connect, helpdesk_app):
    token = connect.token(helpdesk_app, "carol")
    req_id = connect.requirement_id(helpdesk_app, "helpdesk")
    r = connect.submit_credentials(token, req_id, HELPDESK, {"url": "ftp://acme.example.com", "api_key": "hd_1"})
    assert r.status_code == 400
    assert set(r.get_json()["error"]["details"]) == {"config.url"}
