"""refresh-due's batch runner (connect_service/refresh_due.py), against the real Authlib test server and a real
database (SQLite, or PostgreSQL with CONNECT_TEST_DATABASE_URL).

Runners run in threads of this process, each with its own app context and so its own database
connection; tests/test_refresh_concurrency.py runs them as real CLI processes. A provider call is
held "in flight" by a gate on the test server's ``token_delay`` sleep that the test opens, so an
interleaving is a fact, not a timing guess.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
import types

import pytest

from connect_service.connections import read_settings, seal_settings
from connect_service.db import database
from connect_service.models import Connection, WebhookEvent
from test_refresh import (CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, connect_plugins, create_credential,  # noqa: F401
                          create_oauth_connection, credential, future, issue_tokens, oauth_server, past,
                          read_secrets, stored)
from tests.support import oauth_server as server_module
from tests.support.oauth_server import OAuthTestServer


def run_due(connect, **kwargs):
    """``run_refresh_due`` in an app context of its own; returns (exit code, echoed lines)."""
    from connect_service.refresh_due import run_refresh_due  # imported here: the module under test

    lines: list[str] = []
    with connect.app.app_context():
        code = run_refresh_due(echo=lines.append, **kwargs)
    return code, lines


def summary(lines: list[str]) -> str:
    return [line for line in lines if line.startswith("refresh-due: processed")][-1]


@contextlib.contextmanager
def gate(monkeypatch, server: OAuthTestServer, refresh_tokens: set[str], hold: float = 60.0):
    """Hold token calls presenting one of ``refresh_tokens`` until the yielded event is set (or ``hold`` s).

    Yields ``(arrived, release)``: ``arrived`` is set when a held call reached the server.
    Other calls pass without delay.
    """
    import flask  # imported here: the gate runs inside the test server's request context

    arrived, release = threading.Event(), threading.Event()

    def gated_sleep(seconds):
        if flask.request.form.get("refresh_token") in refresh_tokens:
            arrived.set()
            release.wait(hold)

    monkeypatch.setattr(server_module, "time", types.SimpleNamespace(time=time.time, sleep=gated_sleep))
    server.token_delay = 0.001  # makes the server call the (gated) sleep
    try:
        yield arrived, release
    finally:
        release.set()


def due_connections(connect, server, credential, n: int, **fields) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        token = issue_tokens(server)
        out.append((create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=past(10 + i),
                                            customer_id=f"user-{i}", **fields), token))
    return out


def presented(server: OAuthTestServer) -> list[str]:
    return [r["form"].get("refresh_token") for r in server.token_requests if r["grant_type"] == "refresh_token"]


def refreshed_events(app) -> list[str]:
    with app.app_context(), database.connection_context():
        return [e.payload["data"]["id"] for e in WebhookEvent.select().where(WebhookEvent.type == "connection.refreshed")]


def test_parallel_runners_refresh_everything_due_exactly_once(connect, oauth_server, credential):
    rows = due_connections(connect, oauth_server, credential, 24)
    oauth_server.token_delay = 0.02
    oauth_server.reset_records()
    results, barrier = [], threading.Barrier(3)

    def runner():
        barrier.wait()
        results.append(run_due(connect, batch_size=4, concurrency=3))

    threads = [threading.Thread(target=runner) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [code for code, _ in results] == [0, 0, 0], results
    counts = [summary(lines) for _, lines in results]
    print(f"\nthree runners: {counts}")
    refreshed = sum(int(line.split("refreshed ")[1].split(",")[0]) for line in counts)
    assert refreshed == 24
    tokens = presented(oauth_server)
    assert len(tokens) == 24 and len(set(tokens)) == 24  # each refresh token presented once
    assert sorted(tokens) == sorted(token["refresh_token"] for _, token in rows)
    assert all(r["status"] == 200 for r in oauth_server.token_requests)
    assert oauth_server.family_revocations == []
    for conn_id, token in rows:
        row, saved = stored(connect.app, conn_id)
        assert row.refresh_generation == 1 and row.status == "active" and row.refresh_lease_until is None
        assert row.expires_at > future(3000)
        assert saved["access_token"] != token["access_token"] and oauth_server.token_is_active(saved["access_token"])
        assert oauth_server.refresh_token_is_active(saved["refresh_token"])  # the rotated one was kept
    assert sorted(refreshed_events(connect.app)) == sorted(conn_id for conn_id, _ in rows)


def test_a_connection_a_reader_is_refreshing_is_left_to_the_reader(connect, oauth_server, credential, monkeypatch):
    rows = due_connections(connect, oauth_server, credential, 5)
    (read_id, read_token), others = rows[0], rows[1:]
    oauth_server.reset_records()
    with gate(monkeypatch, oauth_server, {read_token["refresh_token"]}) as (arrived, release):
        read = []
        reader = threading.Thread(target=lambda: read.append(read_secrets(connect, read_id)))
        reader.start()
        assert arrived.wait(60), "the read's refresh never reached the token endpoint"
        code, lines = run_due(connect, batch_size=2, concurrency=2)
        reader_still_in_flight = reader.is_alive()
        release.set()
        reader.join(60)
    assert reader_still_in_flight  # the run did not wait for the reader's provider call
    assert code == 0, lines
    assert "refreshed 4, failed 0" in summary(lines)
    assert read[0].status_code == 200, read[0].get_json()
    assert presented(oauth_server).count(read_token["refresh_token"]) == 1
    assert oauth_server.token_calls("refresh_token") == 5 and oauth_server.family_revocations == []
    row, saved = stored(connect.app, read_id)
    assert row.refresh_generation == 1
    assert saved["access_token"] == read[0].get_json()["settings"]["oauth"]["credentials"]["access_token"]
    for conn_id, _ in others:
        assert stored(connect.app, conn_id)[0].refresh_generation == 1


def test_provider_failures_of_single_connections_do_not_stop_the_batch(connect, oauth_server, credential):
    """The outcomes a read's refresh has: down/unreachable → failed and still active, invalid_grant → error."""
    good = due_connections(connect, oauth_server, credential, 3)
    revoked_id, revoked = due_connections(connect, oauth_server, credential, 1)[0]
    oauth_server.revoke_family(revoked["refresh_token"])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{s.getsockname()[1]}/token"
    unreachable_cred = create_credential(connect.app, connect.org_id, oauth_server, token_url=closed_url)
    unreachable_id = create_oauth_connection(connect.app, connect.org_id, unreachable_cred,
                                             {"access_token": "at-u", "refresh_token": "rt-unreachable"},
                                             expires_at=past())
    down_server = OAuthTestServer().start()
    try:
        down_server.add_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
        down_server.down = True
        down_cred = create_credential(connect.app, connect.org_id, down_server)
        down_id = create_oauth_connection(connect.app, connect.org_id, down_cred,
                                          {"access_token": "at-d", "refresh_token": "rt-down"}, expires_at=past())
        code, lines = run_due(connect, batch_size=3, concurrency=4)
    finally:
        down_server.stop()
    output = "\n".join(lines)
    assert code == 1, output
    assert "(refreshed 3, failed 3, skipped 0)" in summary(lines)
    assert f"{revoked_id} failed: " in output and "invalid_grant" in output
    assert f"{unreachable_id} failed: the token endpoint could not be reached: connection refused" in output
    assert f"{down_id} failed: the token endpoint failed: temporarily_unavailable" in output
    for secret in ("rt-unreachable", "rt-down", revoked["refresh_token"]):
        assert secret not in output
    for conn_id, _ in good:
        assert stored(connect.app, conn_id)[0].refresh_generation == 1
    row, saved = stored(connect.app, revoked_id)
    assert row.status == "error" and "invalid_grant" in row.status_reason and row.refresh_lease_until is None
    assert saved["refresh_token"] == revoked["refresh_token"]
    for conn_id, refresh_token in ((unreachable_id, "rt-unreachable"), (down_id, "rt-down")):
        row, saved = stored(connect.app, conn_id)
        assert row.status == "active" and row.refresh_generation == 0 and row.refresh_lease_until is None
        assert saved["refresh_token"] == refresh_token
    with connect.app.app_context(), database.connection_context():
        failed = [e.payload["data"]["id"] for e in WebhookEvent.select().where(
            WebhookEvent.type == "connection.refresh_failed")]
    assert failed == [revoked_id]
    assert [h["connection"]["id"] for h in connect.hooks.of("connection_failed")] == [revoked_id]


def test_an_expired_lease_is_taken_over_and_a_live_one_is_left_alone(connect, oauth_server, credential):
    (dead_id, _), (live_id, live_token) = due_connections(connect, oauth_server, credential, 2)
    with connect.app.app_context(), database.connection_context():
        Connection.update(refresh_lease_until=past(5), refresh_lease_owner="refresh-due:dead-host").where(
            Connection.id == dead_id).execute()
        Connection.update(refresh_lease_until=future(50), refresh_lease_owner="read:busy-host").where(
            Connection.id == live_id).execute()
    oauth_server.reset_records()
    code, lines = run_due(connect)
    assert code == 0 and "(refreshed 1, failed 0, skipped 0)" in summary(lines)
    row, _ = stored(connect.app, dead_id)
    assert row.refresh_generation == 1 and row.refresh_lease_until is None and row.refresh_lease_owner is None
    row, saved = stored(connect.app, live_id)
    assert row.refresh_generation == 0 and row.refresh_lease_owner == "read:busy-host"
    assert saved["refresh_token"] == live_token["refresh_token"]
    assert oauth_server.token_calls("refresh_token") == 1


def test_settings_rewritten_during_the_call_without_a_new_generation_are_kept(connect, oauth_server, credential,
                                                                              monkeypatch):
    """E.g. rotate-keys re-encrypting the row while its refresh is in flight: the refresh is stored on top."""
    (conn_id, token), = due_connections(connect, oauth_server, credential, 1)
    with gate(monkeypatch, oauth_server, {token["refresh_token"]}) as (arrived, release):
        result = []
        run = threading.Thread(target=lambda: result.append(run_due(connect)))
        run.start()
        assert arrived.wait(60)
        with connect.app.app_context(), database.connection_context():
            row = Connection.get_by_id(conn_id)
            settings = read_settings(row)
            settings["note"] = "written mid-refresh"
            Connection.update(settings_encrypted=seal_settings(row, settings)).where(
                Connection.id == conn_id).execute()
        release.set()
        run.join(60)
    code, lines = result[0]
    assert code == 0 and "(refreshed 1, failed 0, skipped 0)" in summary(lines)
    row, saved = stored(connect.app, conn_id)
    with connect.app.app_context():
        assert read_settings(row)["note"] == "written mid-refresh"
    assert row.refresh_generation == 1 and saved["access_token"] != token["access_token"]
    assert oauth_server.token_is_active(saved["access_token"])


def test_a_result_for_a_connection_that_moved_on_is_discarded(connect, oauth_server, credential, monkeypatch):
    """A re-authorization lands while the refresh is in flight: the new grant wins, nothing is overwritten."""
    from connect_service.oauth import store_tokens  # imported here: the re-authorization's own writer

    (conn_id, token), = due_connections(connect, oauth_server, credential, 1)
    with gate(monkeypatch, oauth_server, {token["refresh_token"]}) as (arrived, release):
        result = []
        run = threading.Thread(target=lambda: result.append(run_due(connect)))
        run.start()
        assert arrived.wait(60)
        new_grant = issue_tokens(oauth_server)
        with connect.app.app_context(), database.connection_context():
            store_tokens(Connection.get_by_id(conn_id), credential, new_grant)
        release.set()
        run.join(60)
    code, lines = result[0]
    assert code == 0 and "(refreshed 0, failed 0, skipped 1)" in summary(lines)
    row, saved = stored(connect.app, conn_id)
    assert saved["access_token"] == new_grant["access_token"]
    assert saved["refresh_token"] == new_grant["refresh_token"]
    assert row.refresh_generation == 1 and row.refresh_lease_until is None


def test_claimed_connections_whose_lease_ran_short_are_released_without_a_call(connect, oauth_server, credential,
                                                                               monkeypatch):
    """A call may start only in the first quarter of its lease (it may last half of it)."""
    connect.app.config["CONNECT"]["refresh_lease_seconds"] = 12  # calls start within 3 s of the claim
    rows = due_connections(connect, oauth_server, credential, 3)
    first, second, third = rows[2], rows[1], rows[0]  # called in order of expiry: the earliest first
    oauth_server.reset_records()
    # each of the first two calls takes 2 s: the second starts ~2 s after the claim, the third would at ~4 s
    with gate(monkeypatch, oauth_server, {first[1]["refresh_token"], second[1]["refresh_token"]}, hold=2.0):
        code, lines = run_due(connect, batch_size=3, concurrency=1)
    assert code == 0, lines
    assert "(refreshed 2, failed 0, skipped 1)" in summary(lines)
    assert any("1 claimed connections waited too long" in line for line in lines)
    assert presented(oauth_server) == [first[1]["refresh_token"], second[1]["refresh_token"]]
    row, saved = stored(connect.app, third[0])
    assert row.refresh_generation == 0 and row.refresh_lease_until is None
    assert saved["refresh_token"] == third[1]["refresh_token"]
    code, lines = run_due(connect, batch_size=3, concurrency=1)  # the next run does it
    assert code == 0 and "(refreshed 1, failed 0, skipped 0)" in summary(lines)
    assert oauth_server.family_revocations == []


def test_connections_refreshed_to_a_short_lifetime_are_refreshed_once_per_run(connect, oauth_server, credential):
    rows = due_connections(connect, oauth_server, credential, 4)
    oauth_server.access_token_lifetime = 60  # still inside the 300 s margin after the refresh
    code, lines = run_due(connect, batch_size=1, concurrency=2)
    assert code == 0 and "(refreshed 4, failed 0, skipped 0)" in summary(lines)
    assert oauth_server.token_calls("refresh_token") == 4
    for conn_id, _ in rows:
        row, _ = stored(connect.app, conn_id)
        assert row.refresh_generation == 1 and row.expires_at < future(120)


@pytest.mark.parametrize("concurrency", [0, 1000])
def test_concurrency_is_kept_within_its_bounds(connect, oauth_server, credential, concurrency):
    from connect_service.refresh_due import MAX_CONCURRENCY  # imported here: the module under test

    due_connections(connect, oauth_server, credential, 2)
    code, lines = run_due(connect, concurrency=concurrency)
    assert code == 0
    expected = 1 if concurrency < 1 else MAX_CONCURRENCY
    assert f"concurrency {expected})" in lines[0]
    assert "(refreshed 2, failed 0, skipped 0)" in summary(lines)


def test_cli_concurrency_option_is_documented_and_bounded(connect):
    from connect_service.cli import cli  # imported here: the command under test

    runner = connect.app.test_cli_runner()
    result = runner.invoke(cli, ["refresh-due", "--help"])
    assert "--concurrency" in result.output and "--batch-size" in result.output
    result = runner.invoke(cli, ["refresh-due", "--concurrency", "0"])
    assert result.exit_code == 2 and "--concurrency" in result.output

