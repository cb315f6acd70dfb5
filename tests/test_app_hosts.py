"""Issue 12 item 7: an app hostname may not shadow the service, and a management host never routes as an app host.

Management hosts: ``public_url``'s host, ``localhost`` and every host in the ``management_hosts`` setting.
"""
import pytest

from connect_service.db import database
from connect_service.models import App
from connect_service.testing import make_config


@pytest.fixture
def connect_config(tmp_path):
    return make_config(tmp_path, management_hosts=["Admin.Connect.Test.", "internal-lb"])


@pytest.mark.parametrize("hostname", ["localhost", "LOCALHOST.", "connect.test", "admin.connect.test",
                                      "Admin.Connect.Test", "internal-lb"])
def test_app_hostname_may_not_be_a_management_host(connect, hostname):
    r = connect.client.post("/v1/apps", json={"name": "x", "hostname": hostname}, headers=connect.auth)
    assert r.status_code == 400, r.get_json()
    assert set(r.get_json()["error"]["details"]) == {"hostname"}
    app = connect.create_app()
    r = connect.client.patch(f"/v1/apps/{app['id']}", json={"hostname": hostname}, headers=connect.auth)
    assert r.status_code == 400 and set(r.get_json()["error"]["details"]) == {"hostname"}


def test_other_hostnames_remain_allowed(connect):
    for hostname in ("localhost.example.com", "admin.connect.test.example", "sub.localhost"):
        r = connect.client.post("/v1/apps", json={"name": "x", "hostname": hostname}, headers=connect.auth)
        assert r.status_code == 201, (hostname, r.get_json())


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "admin.connect.test", "internal-lb:8000"])
def test_a_management_host_never_routes_as_an_app_host(connect, host):
    """Even an app row holding a management host (written before the rule) cannot take the API away."""
    app = connect.create_app()
    with connect.app.app_context(), database.connection_context():
        App.update(hostname=host.split(":")[0]).where(App.id == app["id"]).execute()
    r = connect.client.get("/v1/apps", headers={**connect.auth, "Host": host})
    assert r.status_code == 200 and r.get_json()["data"]
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "u"}, headers={"Host": host})
    assert r.status_code == 404


def test_management_hosts_setting_is_parsed_from_env(tmp_path):
    from connect_service.config import load_config

    cfg = make_config(tmp_path)
    loaded = load_config(cfg, environ={"CONNECT_MANAGEMENT_HOSTS": "a.example, b.example"})
    assert loaded["management_hosts"] == ["a.example", "b.example"]
