"""The per-worker caches and shortcuts of the hot endpoints keep every rule they stand in for.

bench/ measures their speed; these tests only check that answers stay right: a remembered
token still expires and still needs its key, a new deployment is seen at once, the
rate-limit upsert counts exactly, a secrets read stamps ``last_fetched_at`` and the
PostgreSQL pool still drops a connection the server killed.
"""
import datetime
import os
import types

import psycopg2
import pytest

from connect_service import db, tokens
from connect_service.db import database, is_postgres
from connect_service.models import Connection, RateLimitHit
from connect_service.ratelimit import hit
from connect_service.timestamps import iso
from connect_service.testing import TEST_SECRET_KEY, connection_requirement
from connect_service.tokens import InvalidToken, LIFETIME, mint_connect_token, verify_connect_token_cached

API_KEY = "dynamiq.connections.HttpApiKey"
ISSUER = "http://connect.test"


def statuses(connect, token):
    return connect.client.get("/v1/connect/requirements/statuses", headers=connect.bearer(token))


def test_a_remembered_token_is_refused_once_expired(connect, monkeypatch):
    app = connect.create_app_with_requirements([connection_requirement("k", API_KEY)])
    token = connect.token(app, "u1")
    assert statuses(connect, token).status_code == 200  # verified in full, now remembered
    expires = tokens.verify_connect_token(token, TEST_SECRET_KEY, [], ISSUER).expires_at.timestamp()
    clock = types.SimpleNamespace(time=lambda: expires + tokens.EXPIRY_LEEWAY - 1)
    monkeypatch.setattr(tokens, "time", clock)
    assert statuses(connect, token).status_code == 200  # within the same leeway jwt.decode allows
    clock.time = lambda: expires + tokens.EXPIRY_LEEWAY + 1
    r = statuses(connect, token)
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"


def test_a_remembered_token_needs_its_key_and_issuer_still():
    token, _ = mint_connect_token(TEST_SECRET_KEY, ISSUER, "app-1", "u1")
    assert verify_connect_token_cached(token, TEST_SECRET_KEY, [], ISSUER).user_id == "u1"
    other = "another-signing-key-" + "z" * 32
    with pytest.raises(InvalidToken):  # the signing key was rotated out
        verify_connect_token_cached(token, other, [], ISSUER)
    assert verify_connect_token_cached(token, other, [TEST_SECRET_KEY], ISSUER).app_id == "app-1"
    with pytest.raises(InvalidToken):
        verify_connect_token_cached(token, TEST_SECRET_KEY, [], "https://elsewhere.example")


def test_failures_are_not_remembered():
    token, _ = mint_connect_token(TEST_SECRET_KEY, ISSUER, "app-1", "u1",
                                  now=datetime.datetime.now(datetime.timezone.utc) - LIFETIME * 2)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            verify_connect_token_cached(token, TEST_SECRET_KEY, [], ISSUER)
    assert not any(key[0] == token for key in tokens._verified)


def test_the_token_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 3)
    minted = [mint_connect_token(TEST_SECRET_KEY, ISSUER, "app-1", f"u{i}")[0] for i in range(5)]
    for token in minted:
        verify_connect_token_cached(token, TEST_SECRET_KEY, [], ISSUER)
    assert len(tokens._verified) <= 3
    assert verify_connect_token_cached(minted[0], TEST_SECRET_KEY, [], ISSUER).user_id == "u0"  # verified again


def test_a_new_deployment_is_seen_by_the_next_request(connect):
    app = connect.create_app_with_requirements([connection_requirement("first", API_KEY)])
    token = connect.token(app, "u1")
    r = connect.client.get("/v1/connect/requirements", headers=connect.bearer(token))
    assert [item["title"] for item in r.get_json()["data"]] == ["HttpApiKey connection"]
    connect.deploy(app, [connection_requirement("second", API_KEY, title="Second"),
                         connection_requirement("third", API_KEY, title="Third")])
    r = connect.client.get("/v1/connect/requirements", headers=connect.bearer(token))
    assert [item["title"] for item in r.get_json()["data"]] == ["Second", "Third"]
    gone = connect.requirement_id(app, "first")
    r = connect.submit_credentials(token, gone, API_KEY, {"url": "https://h.example", "api_key": "k"})
    assert r.status_code == 404  # a requirement of the old version is no longer deployed
    assert set(connect.statuses(token).values()) == {"pending"}


def test_the_rate_limit_upsert_counts_every_hit_and_refuses_past_the_limit(connect):
    with connect.app.app_context(), database.connection_context():
        for _ in range(5):
            hit("bucket-a", 5, now=6_000_000.0)
        assert RateLimitHit.get(RateLimitHit.bucket == "bucket-a").count == 5
        with pytest.raises(Exception) as info:
            hit("bucket-a", 5, now=6_000_001.0)
        assert info.value.status == 429
        assert RateLimitHit.get(RateLimitHit.bucket == "bucket-a").count == 6
        hit("bucket-a", 5, now=6_000_060.0)  # a new window: the old one goes
        assert [(r.window, r.count) for r in RateLimitHit.select().where(RateLimitHit.bucket == "bucket-a")] \
            == [(100_001, 1)]


def app_with_connection(connect):
    """An app with one API-key requirement deployed, a token of ``u1`` and u1's stored connection's id."""
    app = connect.create_app_with_requirements([connection_requirement("k", API_KEY)])
    token = connect.token(app, "u1")
    rid = connect.requirement_id(app, "k")
    assert connect.submit_credentials(token, rid, API_KEY, {"url": "https://h.example", "api_key": "k"}).status_code \
        == 201
    conn_id = connect.client.get("/v1/connections", headers=connect.auth).get_json()["data"][0]["id"]
    return app, token, conn_id


def test_a_secrets_read_stamps_last_fetched_at_and_answers_the_stored_value(connect):
    app, token, conn_id = app_with_connection(connect)
    answers = [connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true", headers=connect.auth)
               .get_json() for _ in range(2)]
    with connect.app.app_context(), database.connection_context():
        stored = Connection.get_by_id(conn_id).last_fetched_at
    assert stored is not None
    assert answers[0]["settings"]["api_key"] == "k"
    assert answers[1]["last_fetched_at"] == iso(stored)  # the answer names the stamp that is stored


@pytest.mark.skipif(not os.environ.get("CONNECT_TEST_DATABASE_URL"), reason="the PostgreSQL pool only")
def test_the_pool_drops_a_connection_the_server_killed(connect, monkeypatch):
    app = connect.create_app_with_requirements([connection_requirement("k", API_KEY)])
    token = connect.token(app, "u1")
    assert statuses(connect, token).status_code == 200
    with connect.app.app_context():
        assert is_postgres()
        idle = [conn for _, _, conn in database.obj._connections]
    assert idle, "the request's connection went back to the pool"
    killer = psycopg2.connect(os.environ["CONNECT_TEST_DATABASE_URL"])  # not one of the pool's
    try:
        killer.autocommit = True
        with killer.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid",
                        ([conn.get_backend_pid() for conn in idle],))
    finally:
        killer.close()
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0)  # as if the connections had idled a while
    assert statuses(connect, token).status_code == 200


def _record_calls(connect, monkeypatch, method: str, describe) -> list:
    """Patch ``method`` of the app's database to append ``describe(first argument)`` on every call."""
    seen = []
    with connect.app.app_context():
        target = database.obj
    real = getattr(target, method)

    def recorded(first, *args, **kwargs):
        seen.append(describe(first))
        return real(first, *args, **kwargs)

    monkeypatch.setattr(target, method, recorded)
    return seen


@pytest.fixture
def sql_log(connect, monkeypatch):
    """Every SQL statement the app runs (pool pings excluded), in order."""
    return _record_calls(connect, monkeypatch, "execute_sql", lambda sql: sql)


@pytest.fixture
def built_queries(connect, monkeypatch):
    """Every query peewee builds SQL for (``Database.execute``), as opposed to prebuilt SQL run as it is."""
    return _record_calls(connect, monkeypatch, "execute", lambda query: type(query).__name__)


def hot_calls(connect):
    app, token, conn_id = app_with_connection(connect)
    public = {"Host": "connect.test"}  # the service's own host (public_url): no app lookup by host
    return {
        "requirements": lambda: connect.client.get("/v1/connect/requirements",
                                                   headers={**connect.bearer(token), **public}),
        "statuses": lambda: connect.client.get("/v1/connect/requirements/statuses",
                                               headers={**connect.bearer(token), **public}),
        "token": lambda: connect.client.post("/v1/connect/tokens", json={"user_id": "u1"},
                                             headers={"Host": app["hostname"]}),
        "secrets": lambda: connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true",
                                              headers={**connect.auth, **public}),
    }


def test_hot_requests_have_peewee_build_no_sql(connect, built_queries):
    """Hot paths run SQL built once per process; peewee building a query per request is what issue 15 measured."""
    calls = hot_calls(connect)
    for call in calls.values():  # warm: first use builds each statement once; the first rate-limit hit of a
        assert call().status_code in (200, 201)  # window deletes older windows; last_fetched_at is stamped
    built_queries.clear()
    for name, call in calls.items():
        assert call().status_code in (200, 201)
    assert built_queries == []


def test_hot_requests_run_one_or_two_queries(connect, sql_log):
    """The issue's "one query per hot request": counted, not timed."""
    calls = hot_calls(connect)
    for call in calls.values():  # warm: the deployed version is loaded once per worker
        assert call().status_code in (200, 201)
    counts = {}
    for name, call in calls.items():
        sql_log.clear()
        assert call().status_code in (200, 201)
        # transaction control (SAVEPOINT/RELEASE around a nested write) is not a query
        counts[name] = len([sql for sql in sql_log if not sql.startswith(("SAVEPOINT", "RELEASE"))])
    # app row; app row joined to the user's connections; app by host + one rate-limit upsert; key joined to the
    # connection + the audit row every secrets read writes (issue 16), last_fetched_at being at most one write a second
    assert counts == {"requirements": 1, "statuses": 1, "token": 2, "secrets": 2}


def test_hot_answers_are_already_what_their_schemas_dump(connect):
    """The hot views answer without a marshmallow pass (api.common.dumped): dumping changes nothing."""
    from connect_service.api import schemas
    from connect_service.api.connect import TokenSchema
    from connect_service.api.connections import ConnectionSchema

    app, token, conn_id = app_with_connection(connect)
    answers = {
        "requirements": (connect.client.get("/v1/connect/requirements", headers=connect.bearer(token)),
                         schemas.list_of(schemas.RequirementSchema, paged=False)),
        "statuses": (statuses(connect, token), schemas.list_of(schemas.RequirementStatusSchema, paged=False)),
        "token": (connect.client.post("/v1/connect/tokens", json={"user_id": "u1"}, headers={"Host": app["hostname"]}),
                  TokenSchema),
        "secrets": (connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true", headers=connect.auth),
                    ConnectionSchema),
        "connection": (connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth), ConnectionSchema),
    }
    for name, (response, schema) in answers.items():
        assert response.status_code in (200, 201), name
        body = response.get_json()
        assert schema().dump(body) == body, name
        assert schema().validate(body) == {}, name


def test_no_flask_session_is_opened_or_written(connect):
    """The service keeps no Flask session (app.NoSessions): nothing reads the cookie, a write refuses."""
    import flask

    with connect.app.test_request_context("/", headers={"Cookie": "session=eyJ4Ijo1fQ.forged.sig"}):
        connect.app.preprocess_request()
        assert flask.session.get("x") is None
        with pytest.raises(RuntimeError):
            flask.session["x"] = 1
    r = connect.client.get("/healthz", headers={"Cookie": "session=anything"})
    assert r.status_code == 200 and "Set-Cookie" not in r.headers


@pytest.mark.skipif(not os.environ.get("CONNECT_TEST_DATABASE_URL"), reason="PostgreSQL's prepared statements")
@pytest.mark.parametrize("enabled", [True, False])
def test_postgresql_runs_hot_lookups_as_prepared_statements_unless_turned_off(connect, enabled):
    """database_prepared_statements: each pooled connection prepares a hot statement once (off: plain text)."""
    with connect.app.app_context():
        pool = database.obj

    def prepared():
        with connect.app.app_context(), database.connection_context():
            return {row[0] for row in database.execute_sql("SELECT statement FROM pg_prepared_statements").fetchall()}

    pool.prepare_statements = enabled
    try:
        before = prepared()  # the fixture's own requests ran with the default (on)
        calls = hot_calls(connect)
        for _ in range(2):
            for call in calls.values():
                assert call().status_code in (200, 201)
        new = prepared() - before
    finally:
        pool.prepare_statements = True
    if enabled:  # the pool's one idle connection served these requests: the app lookup is among them
        assert new and all(text.startswith("PREPARE connect_") for text in new)
        assert any('FROM "app"' in text for text in new)
    else:
        assert new == set()


def test_the_access_log_line_is_one_json_object_with_the_request_fields(connect, caplog):
    """The access log skips logging's caller lookup and shares one encoder: the line it writes is unchanged."""
    import json
    import logging

    from connect_service.logs import JSONFormatter

    caplog.set_level(logging.INFO, logger="connect_service.access")
    r = connect.client.get("/healthz?probe=1", headers={"X-Request-Id": "req-log-1"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-log-1"
    (record,) = [rec for rec in caplog.records
                 if rec.name == "connect_service.access" and rec.fields["request_id"] == "req-log-1"]
    line = json.loads(JSONFormatter().format(record))
    assert line["ts"] == JSONFormatter().formatTime(record, "%Y-%m-%dT%H:%M:%S")  # the once-a-second cache agrees
    assert set(line) == {"ts", "level", "logger", "msg", "request_id", "method", "path", "status", "remote_addr",
                         "duration_ms"}
    assert (line["request_id"], line["method"], line["path"], line["status"], line["level"], line["msg"]) \
        == ("req-log-1", "GET", "/healthz", 200, "INFO", "request")
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    generated = connect.client.get("/healthz").headers["X-Request-Id"]
    assert len(generated) == 32 and int(generated, 16) >= 0  # a fresh id when the client sends none


def test_request_ids_differ_across_forked_workers():
    """logs.new_request_id draws from the process's generator without a system call; a gunicorn worker is a
    fork, and random reseeds in the child, so two workers never hand out the same sequence."""
    from connect_service.logs import new_request_id

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the "worker": its next ids
        try:
            os.write(write_fd, "".join(new_request_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    child = os.read(read_fd, 4096).decode()
    os.close(read_fd)
    parent = "".join(new_request_id() for _ in range(3))
    assert len(child) == len(parent) == 96 and int(child, 16) >= 0
    assert child != parent
    assert len({parent[i:i + 32] for i in range(0, 96, 32)}) == 3


def test_the_lock_free_log_handler_keeps_every_line_whole_under_concurrent_threads():
    """logs.LineHandler takes no lock: lines from 8 threads at once through a pipe still arrive whole."""
    import json
    import logging
    import threading

    from connect_service import logs

    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w", buffering=1)  # line-buffered, as stderr is
    handler = logs.LineHandler(stream)
    handler.setFormatter(logs.JSONFormatter())
    logger = logging.getLogger("connect_service.test_line_handler")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    received = []
    reader = threading.Thread(target=lambda: received.append(os.fdopen(read_fd).read()))
    reader.start()

    def work(thread):
        for n in range(500):
            logger.info("line", extra={"fields": {"thread": thread, "n": n, "pad": "x" * (n * 7 % 3000)}})

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        logger.removeHandler(handler)
        stream.close()
        reader.join()
    lines = [json.loads(line) for line in received[0].splitlines()]
    assert sorted((line["thread"], line["n"]) for line in lines) == [(t, n) for t in range(8) for n in range(500)]


def test_hot_loaders_build_the_instances_peewee_builds(connect):
    """``db.fetch_models`` takes a text column's value as the driver gives it and converts every other
    one: each stored row of these tables loads exactly as through peewee's own select."""
    from connect_service.models import AccessKey, App, AuditEvent, Organization
    app_with_connection(connect)
    connect.client.get("/v1/connections?include_secrets=true", headers=connect.auth)  # an audit row or more
    with connect.app.app_context(), database.connection_context():
        for model in (Organization, AccessKey, App, Connection, AuditEvent):
            sql, params = model.select().order_by(model._meta.primary_key).sql()
            expected = [row.__data__ for row in model.select().order_by(model._meta.primary_key)]
            loaded = [instance.__data__ for (instance,) in db.fetch_models(sql, tuple(params), model)]
            assert expected and loaded == expected, model.__name__
            assert [type(v) for v in loaded[0].values()] == [type(v) for v in expected[0].values()]
