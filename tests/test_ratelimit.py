"""Rate limits on token minting and credential submission: per app and client address, in the database."""
import time

import pytest

from connect_service import ratelimit
from connect_service.app import create_app
from connect_service.config import SETTINGS, load_config
from connect_service.db import database
from connect_service.models import RateLimitHit
from connect_service.testing import make_config
from tests.support.gunicorn_server import GunicornServer

from tests.conftest import API_KEY_ONLY, HTTP_API_KEY

WINDOW_START = 1_900_000_020.0  # a multiple of 60
assert WINDOW_START % 60 == 0


@pytest.fixture
def clock(monkeypatch):
    """A controllable clock for the limiter only (JWTs keep the real time)."""
    now = {"t": WINDOW_START + 10}
    real_hit = ratelimit.hit

    def hit(bucket, limit, now_=None):
        return real_hit(bucket, limit, now=now["t"])

    monkeypatch.setattr(ratelimit, "hit", hit)
    return now


@pytest.fixture
def connect_config(tmp_path):
    cfg = make_config(tmp_path)
    # the defaults of SPEC section 8, not the harness's relaxed ones
    cfg.pop("rate_limit_tokens_per_minute")
    cfg.pop("rate_limit_credentials_per_minute")
    return cfg


def mint(client, app, addr="203.0.113.7", headers=None):
    return client.post("/v1/connect/tokens", json={"user_id": "user-1"},
                       headers={"Host": app["hostname"], "X-Forwarded-For": addr, **(headers or {})})


def submit(client, token, rid, addr="203.0.113.7", config=None):
    return client.post(f"/v1/connect/requirements/{rid}/credentials",
                       json={"type": HTTP_API_KEY, "config": config or {"url": "https://h.example", "api_key": "k"}},
                       headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": addr})


def assert_429(r, limit, retry_after):
    assert r.status_code == 429
    assert r.headers["Retry-After"] == str(retry_after)
    assert r.get_json() == {"error": {"code": "too_many_requests", "message": "Too Many Requests",
                                      "details": {"input": f"at most {limit} requests per minute; "
                                                           f"retry in {retry_after} s"}}}


def test_defaults_are_60_and_20():
    assert SETTINGS["rate_limit_tokens_per_minute"][0] == 60
    assert SETTINGS["rate_limit_credentials_per_minute"][0] == 20


def test_settings_come_from_env(tmp_path):
    cfg = make_config(tmp_path)
    cfg.pop("rate_limit_tokens_per_minute")
    cfg.pop("rate_limit_credentials_per_minute")
    loaded = load_config(cfg, environ={"CONNECT_RATE_LIMIT_TOKENS_PER_MINUTE": "7",
                                       "CONNECT_RATE_LIMIT_CREDENTIALS_PER_MINUTE": "3"})
    assert (loaded["rate_limit_tokens_per_minute"], loaded["rate_limit_credentials_per_minute"]) == (7, 3)


def test_token_minting_default_limit(connect, clock):
    app = connect.create_app_with_requirements(API_KEY_ONLY)
    assert connect.app.config["CONNECT"]["rate_limit_tokens_per_minute"] == 60
    for _ in range(60):
        assert mint(connect.client, app).status_code == 201
    assert_429(mint(connect.client, app), 60, 50)
    assert_429(mint(connect.client, app), 60, 50)
    # another client address and another app have their own budget
    assert mint(connect.client, app, addr="198.51.100.1").status_code == 201
    other = connect.create_app_with_requirements(API_KEY_ONLY)
    assert mint(connect.client, other).status_code == 201
    # Retry-After counts down to the end of the window; the next window is fresh
    clock["t"] = WINDOW_START + 59.2
    assert_429(mint(connect.client, app), 60, 1)
    clock["t"] = WINDOW_START + 60
    assert mint(connect.client, app).status_code == 201


def test_private_app_minting_is_limited_too(connect, clock):
    app = connect.create_app_with_requirements(API_KEY_ONLY, visibility="private")
    for _ in range(60):
        assert mint(connect.client, app, headers=connect.auth).status_code == 201
    assert_429(mint(connect.client, app, headers=connect.auth), 60, 50)


def test_credential_submission_default_limit(connect, clock):
    app = connect.create_app_with_requirements(API_KEY_ONLY)
    token = mint(connect.client, app, addr="192.0.2.1").get_json()["token"]
    rid = connect.requirement_id(app, "helpdesk")
    for n in range(20):
        # failed guesses count as much as good submissions
        config = {"url": "https://h.example", "api_key": f"k{n}"} if n % 2 else {"url": "not a url", "api_key": "x"}
        assert submit(connect.client, token, rid, config=config).status_code in (201, 400)
    assert_429(submit(connect.client, token, rid), 20, 50)
    assert submit(connect.client, token, rid, addr="198.51.100.9").status_code == 201
    clock["t"] = WINDOW_START + 61
    assert submit(connect.client, token, rid).status_code == 201


def test_limit_zero_disables(connect, tmp_path, clock):
    cfg = dict(connect.app.config["CONNECT"], rate_limit_tokens_per_minute=0)
    client = create_app(cfg).test_client()
    app = connect.create_app_with_requirements(API_KEY_ONLY)
    for _ in range(70):
        assert mint(client, app).status_code == 201


def test_limit_is_shared_by_two_app_instances_on_one_database(connect, tmp_path, clock):
    app = connect.create_app_with_requirements(API_KEY_ONLY)
    cfg = dict(connect.app.config["CONNECT"], rate_limit_tokens_per_minute=3)
    first, second = create_app(cfg).test_client(), create_app(cfg).test_client()
    assert mint(first, app).status_code == 201
    assert mint(second, app).status_code == 201
    assert mint(first, app).status_code == 201
    assert_429(mint(second, app), 3, 50)
    assert_429(mint(first, app), 3, 50)


def test_hit_counts_in_the_database_and_purges_old_windows(connect):
    with connect.app.app_context(), database.connection_context():
        for _ in range(3):
            ratelimit.hit("b1", 10, now=WINDOW_START)
        ratelimit.hit("b2", 10, now=WINDOW_START)
        rows = {(r.bucket, r.window): r.count for r in RateLimitHit.select()}
        assert rows == {("b1", WINDOW_START // 60): 3, ("b2", WINDOW_START // 60): 1}
        # a new window of b1 deletes b1's finished windows
        ratelimit.hit("b1", 10, now=WINDOW_START + 60)
        assert {(r.bucket, r.window) for r in RateLimitHit.select()} == {
            ("b1", WINDOW_START // 60 + 1), ("b2", WINDOW_START // 60)}
        # purge removes everybody's finished windows
        assert ratelimit.purge(before=WINDOW_START + 180) == 2
        with pytest.raises(Exception) as info:
            for _ in range(11):
                ratelimit.hit("b3", 10, now=WINDOW_START)
        assert info.value.status == 429 and info.value.headers == {"Retry-After": "60"}


def wait_for_room_in_window(seconds: float = 5.0) -> None:
    """Start a real-clock sequence early in a window so it does not straddle two."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)


def test_limit_holds_across_processes(connect, tmp_path):
    """Two gunicorn processes on one database share one budget per (app, client address)."""
    app = connect.create_app_with_requirements(API_KEY_ONLY)
    cfg = dict(connect.app.config["CONNECT"], rate_limit_tokens_per_minute=4, rate_limit_credentials_per_minute=2)
    one = GunicornServer(cfg, str(tmp_path / "g1.log")).start()
    try:
        two = GunicornServer(cfg, str(tmp_path / "g2.log")).start()
        try:
            wait_for_room_in_window()
            headers = {"Host": app["hostname"], "Content-Type": "application/json", "X-Forwarded-For": "203.0.113.50"}
            body = b'{"user_id": "u"}'
            statuses = [server.request("POST", "/v1/connect/tokens", body, headers)[0]
                        for server in (one, two, one, two)]
            assert statuses == [201, 201, 201, 201]
            status, resp_headers, payload = two.request("POST", "/v1/connect/tokens", body, headers)
            assert status == 429 and 1 <= int(resp_headers["Retry-After"]) <= 60
            assert b'"too_many_requests"' in payload
            assert one.request("POST", "/v1/connect/tokens", body, headers)[0] == 429
        finally:
            two.stop()
    finally:
        one.stop()


# --- issue 12 item 3: forwarded headers and IPv6 ------------------------------------------------

def test_proxy_count_defaults_to_zero():
    assert SETTINGS["proxy_count"][0] == 0


def test_rotating_x_forwarded_for_does_not_lift_the_limit_by_default(connect, clock):
    """With the default configuration (no proxy trusted) X-Forwarded-For is ignored: one client, one budget."""
    cfg = dict(connect.app.config["CONNECT"], rate_limit_tokens_per_minute=5)
    cfg["proxy_count"] = SETTINGS["proxy_count"][0]
    client = create_app(cfg).test_client()
    app = connect.create_app_with_requirements(API_KEY_ONLY)
    for i in range(5):
        assert mint(client, app, addr=f"198.51.100.{i}").status_code == 201
    for i in range(5, 10):
        assert_429(mint(client, app, addr=f"198.51.100.{i}"), 5, 50)
    assert_429(mint(client, app, addr="2001:db8::1, 192.0.2.7"), 5, 50)


def mint_from(client, app, remote_addr):
    return client.post("/v1/connect/tokens", json={"user_id": "user-1"}, headers={"Host": app["hostname"]},
                       environ_base={"REMOTE_ADDR": remote_addr})


def test_ipv6_clients_are_limited_per_64(connect, clock):
    cfg = dict(connect.app.config["CONNECT"], rate_limit_tokens_per_minute=3, proxy_count=0)
    client = create_app(cfg).test_client()
    app = connect.create_app_with_requirements(API_KEY_ONLY)
    # one /64 holds 2^64 addresses: rotating through them is still one client
    for addr in ("2001:db8:aa:bb::1", "2001:db8:aa:bb::2", "2001:db8:aa:bb:ffff:ffff:ffff:ffff"):
        assert mint_from(client, app, addr).status_code == 201
    assert_429(mint_from(client, app, "2001:db8:aa:bb:1234::9"), 3, 50)
    assert_429(mint_from(client, app, "2001:DB8:AA:BB::77"), 3, 50)
    # the neighbouring /64 has its own budget
    assert mint_from(client, app, "2001:db8:aa:bc::1").status_code == 201
    # IPv4 stays per address, including its IPv4-mapped IPv6 spelling
    for _ in range(3):
        assert mint_from(client, app, "192.0.2.10").status_code == 201
    assert_429(mint_from(client, app, "::ffff:192.0.2.10"), 3, 50)
    assert mint_from(client, app, "192.0.2.11").status_code == 201


def test_client_address_keys(connect):
    with connect.app.test_request_context(environ_base={"REMOTE_ADDR": "2001:db8:1:2:3:4:5:6"}):
        assert ratelimit.client_address() == "2001:db8:1:2::/64"
    with connect.app.test_request_context(environ_base={"REMOTE_ADDR": "::ffff:203.0.113.5"}):
        assert ratelimit.client_address() == "203.0.113.5"
    with connect.app.test_request_context(environ_base={"REMOTE_ADDR": "203.0.113.5"}):
        assert ratelimit.client_address() == "203.0.113.5"
