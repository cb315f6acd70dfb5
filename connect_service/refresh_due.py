"""``connect-service refresh-due``: refresh every OAuth connection about to expire, in batches.

The exactly-once protocol is :mod:`connect_service.refresh`'s (a lease claimed
with a conditional ``UPDATE`` on the generation the runner saw, the provider
called with no transaction open, the result stored conditional on that
generation); this module runs it for many connections at a time, so a runner
is no longer one connection and a dozen database round trips after another:

1. **Candidates**: one keyset-paged query for ``--batch-size`` due, active,
   enabled connections whose lease is free (or expired: a dead runner's).
2. **Claim** them in one short transaction, the generation checked per row
   (:mod:`connect_service.refresh_claims`); the claimed rows come back whole,
   their credentials with one more query.
3. **Call** the token endpoints from a pool of ``--concurrency`` threads, each
   with its own guarded HTTP client (keep-alive; the same SSRF checks, timeouts
   and ``max_total_time`` as a read's refresh). The threads touch no database:
   requests are built (client secret decrypted once per credential) and results
   stored by the runner's main thread, the only one with a database connection.
4. **Store** results as soon as they arrive: every answer that is in when the
   previous write commits goes into the next transaction
   (:func:`~connect_service.oauth.batch_store.store_refreshes`: conditional on
   the claimed generation per row, lease released, one ``connection.refreshed``
   outbox event each). When the first answer of the calls in flight arrives,
   the runner waits at most :data:`GATHER_SECONDS` for the others (calls started
   together end together), so one write carries several answers. New calls
   start only after the answers in hand are stored, so a runner never has more
   than ``--concurrency`` provider answers unsaved or on the way.

A call starts only while its lease has at least three quarters of
``refresh_lease_seconds`` left (the client gives up after half the lease), so
no call can outlive its lease and let another runner take the connection over
while it is still in flight; rows that waited too long are released unused
(counted as skipped; the next run takes them). Outcomes per connection are
those of a read's refresh: a provider that is down (transport error, 5xx,
429) leaves the connection active and counts as failed; ``invalid_grant`` re-reads
the row and marks it ``error`` only when no other write replaced its token
(:func:`connect_service.refresh.settle_rejected`); a connection claimed by a reader
or another runner is skipped, never refreshed twice.

**What a crash can lose.** A runner killed after a provider answered but before
the store committed loses those answers: with a rotating provider the stored
refresh token is then spent and the connection's next refresh fails
``invalid_grant`` (the user must reconnect). That window is at most
``--concurrency`` connections per runner (the calls in flight and the answers
being written, together); with ``--concurrency 1`` it is one connection, as
for a read's refresh. Connections claimed but not called yet are only delayed: their
leases expire and the next run refreshes them.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import json
import logging
import queue
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import click

from .connections import read_settings
from .db import database, db_now
from .extensions import settings
from .http import GuardedClient, OutboundError
from .models import Connection, Credential
from .oauth import client_secret, credential_scopes, oauth_client, provider_for, purge_authorization_sessions
from .oauth.errors import TRANSIENT_CODES, ProviderUnavailable, RefreshError
from .oauth.grants import TokenRequest, client_credentials_body, refresh_body, token_request
from .oauth.batch_store import Refreshed, store_refreshes
from .oauth2_provider import OAuth2Provider, ProviderError
from .refresh import Observed, lease_owner, settle_rejected
from .refresh_claims import claim_batch, due_candidates, release_many

log = logging.getLogger(__name__)

#: default number of token endpoint calls a runner has in flight at once
DEFAULT_CONCURRENCY = 8
#: the most ``--concurrency`` may ask for
MAX_CONCURRENCY = 64
#: after the first answer arrives, how long (seconds) the runner waits for the other calls in flight
#: before writing, so that one transaction stores several answers
GATHER_SECONDS = 0.02


@dataclass
class _Claimed:
    """A connection this runner holds the lease of, with its token request built."""

    conn: Connection
    settings: dict[str, Any]  # decrypted at claim time; the store's previous settings (see store_refreshes)
    seen: Observed
    credential: Credential
    provider: OAuth2Provider
    request: TokenRequest
    requested_scope: str | None
    start_by: float  # time.monotonic() after which the call may no longer start (lease budget)


class _Runner:
    """One refresh-due run: the main thread owns the database; a thread pool calls token endpoints."""

    def __init__(self, margin: int, batch_size: int, concurrency: int, echo: Callable[[str], Any],
                 progress: Callable[[int], Any]):
        self.margin, self.batch_size, self.concurrency = margin, batch_size, concurrency
        self.echo, self.progress = echo, progress
        self.counts = {"refreshed": 0, "failed": 0, "skipped": 0}
        self.owner = lease_owner("refresh-due")
        self.lease_seconds = float(settings()["refresh_lease_seconds"])
        self.waiting: deque[_Claimed] = deque()  # claimed, call not started
        self.in_flight: dict[concurrent.futures.Future, _Claimed] = {}
        self.done: set[str] = set()
        self.after: tuple[datetime.datetime, str] | None = None
        self.exhausted = False
        self.started = time.monotonic()
        self.clients: queue.SimpleQueue[GuardedClient] = queue.SimpleQueue()
        self.writes = 0  # store transactions, for the last progress line

    # -- outcomes -----------------------------------------------------------

    def _count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n
        self.progress(n)

    def _failed(self, conn_id: str, reason: str) -> None:
        self.echo(f"refresh-due: {conn_id} failed: {reason}")
        self._count("failed")

    def _summary(self, last: bool = False) -> None:
        c = self.counts
        writes = f" ({self.writes} token writes)" if last and self.writes else ""
        self.echo(f"refresh-due: processed {sum(c.values())} (refreshed {c['refreshed']}, failed {c['failed']}, "
                  f"skipped {c['skipped']}) in {time.monotonic() - self.started:.1f}s{writes}")

    # -- claiming -----------------------------------------------------------

    def _next_page(self, due_before: datetime.datetime) -> None:
        """Read the next page of candidates and claim what is still free; queue the claimed rows."""
        page = due_candidates(due_before, db_now(), self.after, self.batch_size)
        if not page:
            self.exhausted = True
            return
        self.after = (page[-1].expires_at, page[-1].id)
        seen = {row.id: row.refresh_generation for row in page if row.id not in self.done}
        self.done.update(seen)  # refreshed in this run to a still-short lifetime: not again
        if not seen:
            return
        claimed_at = time.monotonic()
        claimed = claim_batch(seen, self.owner)
        self._count("skipped", len(seen) - len(claimed))  # a reader or another runner holds it, or it moved on
        credentials = {c.id: c for c in Credential.select().where(
            Credential.id.in_(list({row.credential_id for row in claimed if row.credential_id})))}
        prepared: dict[str, tuple[OAuth2Provider, str | None]] = {}
        unusable = []
        for conn in claimed:
            try:
                item = self._prepare(conn, credentials, prepared, claimed_at)
            except Exception as exc:  # e.g. settings no key decrypts: this row fails, the batch goes on
                log.exception("refresh-due: unexpected error", extra={"fields": {"connection_id": conn.id}})
                unusable.append(conn.id)
                self._failed(conn.id, type(exc).__name__)
                continue
            if item is None:
                unusable.append(conn.id)
                self._count("skipped")
            else:
                self.waiting.append(item)
        release_many(unusable, self.owner)

    def _prepare(self, conn: Connection, credentials: dict[str, Credential],
                 prepared: dict[str, tuple[OAuth2Provider, str | None]], claimed_at: float) -> _Claimed | None:
        """The token request for a claimed row, or None when it cannot be refreshed (as a read would skip it)."""
        stored = read_settings(conn)
        oauth = stored.get("oauth") if isinstance(stored, dict) else None
        creds = oauth.get("credentials") if isinstance(oauth, dict) else None
        credential = credentials.get(conn.credential_id) if conn.credential_id else None
        if not isinstance(creds, dict) or credential is None:
            return None
        client_credentials = credential.oauth_grant_type == "client_credentials"
        if not client_credentials and not creds.get("refresh_token"):
            return None
        if credential.id not in prepared:
            prepared[credential.id] = (provider_for(credential), client_secret(credential))
        provider, secret = prepared[credential.id]
        if client_credentials:
            # a new token for what the credential asks for now, not for the scope the last one got
            body, scope = client_credentials_body(credential, provider), " ".join(credential_scopes(credential))
        else:
            body, scope = refresh_body(creds["refresh_token"]), None
        return _Claimed(conn=conn, settings=stored, seen=Observed(conn.refresh_generation, creds.get("refresh_token")),
                        credential=credential, provider=provider,
                        request=token_request(credential, provider, body, secret=secret), requested_scope=scope,
                        start_by=claimed_at + self.lease_seconds / 4)

    # -- calling ------------------------------------------------------------

    def _call(self, request: TokenRequest) -> dict[str, Any]:
        client = self.clients.get()
        try:
            return request.send(client)
        finally:
            self.clients.put(client)

    def _start_calls(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        late = []
        while self.waiting and len(self.in_flight) < self.concurrency:
            item = self.waiting.popleft()
            if time.monotonic() > item.start_by:
                late.append(item.conn.id)  # too little lease left for a whole call: leave it to the next run
                continue
            self.in_flight[pool.submit(self._call, item.request)] = item
        if late:
            release_many(late, self.owner)
            self._count("skipped", len(late))
            self.echo(f"refresh-due: {len(late)} claimed connections waited too long for a call and were released")

    # -- storing ------------------------------------------------------------

    def _finish(self, finished: list[tuple[_Claimed, concurrent.futures.Future]]) -> None:
        """Store the successful results in one transaction; settle each failure as a read's refresh would."""
        results: list[tuple[_Claimed, dict[str, Any]]] = []
        for item, future in finished:
            exc = future.exception()
            if exc is None:
                results.append((item, future.result()))
            else:
                self._settle_failure(item, exc)
        if not results:
            return
        try:
            written, problems = store_refreshes([
                Refreshed(item.conn.id, item.seen.generation, item.credential, item.provider, token,
                          item.requested_scope, item.conn.settings_encrypted, item.settings)
                for item, token in results])
            self.writes += 1
        except Exception as exc:  # the write failed (database away): these answers are lost, see the docstring
            log.exception("refresh-due: storing refreshed tokens failed")
            written, problems = set(), {item.conn.id: exc for item, _ in results}
        unsaved = []
        for item, _ in results:
            conn_id = item.conn.id
            if conn_id in written:
                self._count("refreshed")
            elif conn_id in problems:
                unsaved.append(conn_id)
                self._failed(conn_id, type(problems[conn_id]).__name__)
            else:
                unsaved.append(conn_id)
                self._count("skipped")  # the row moved on meanwhile: the newer write won
        try:
            release_many(unsaved, self.owner)
        except Exception:  # the database is away: the leases expire on their own
            log.exception("refresh-due: releasing leases failed")

    def _settle_failure(self, item: _Claimed, exc: BaseException) -> None:
        conn = item.conn
        try:
            if isinstance(exc, OutboundError):
                self._failed(conn.id, f"the token endpoint could not be reached: {exc.reason}")
            elif isinstance(exc, ProviderError) and (isinstance(exc, ProviderUnavailable)
                                                     or exc.code in TRANSIENT_CODES):
                self._failed(conn.id, f"the token endpoint failed: {exc.code}")
            elif isinstance(exc, ProviderError):
                try:
                    after = settle_rejected(conn, self.owner, item.seen, exc)
                except (RefreshError, ProviderUnavailable) as rejected:
                    self._failed(conn.id, rejected.reason)
                else:  # another writer replaced the token meanwhile: nothing for this run to do
                    self._count("refreshed" if after.refresh_generation != item.seen.generation else "skipped")
            else:
                log.error("refresh-due: unexpected error", exc_info=exc,
                          extra={"fields": {"connection_id": conn.id}})
                self._failed(conn.id, type(exc).__name__)
        finally:
            release_many([conn.id], self.owner)

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        """Refresh everything due; the counts end up in ``self.counts``."""
        due_before = db_now() + datetime.timedelta(seconds=self.margin)
        self.echo(f"refresh-due: refreshing connections expiring before {due_before.isoformat()}Z "
                  f"(margin {self.margin}s, concurrency {self.concurrency})")
        for _ in range(self.concurrency):
            self.clients.put(oauth_client())
        reported = 0
        try:
            with concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="refresh-due") as pool:
                while True:
                    finished = [(self.in_flight.pop(f), f) for f in list(self.in_flight) if f.done()]
                    if finished:
                        self._finish(finished)  # every answer that is in, before a new call starts
                    self._start_calls(pool)
                    if len(self.waiting) < self.concurrency and not self.exhausted:
                        self._next_page(due_before)
                        self._start_calls(pool)
                    processed = sum(self.counts.values())
                    if processed - reported >= self.batch_size:
                        reported = processed
                        self._summary()
                    if not self.in_flight and not self.waiting and self.exhausted:
                        break
                    if self.in_flight and (self.exhausted or len(self.waiting) >= self.concurrency):
                        pending = list(self.in_flight)
                        concurrent.futures.wait(pending, timeout=1.0, return_when=concurrent.futures.FIRST_COMPLETED)
                        # calls started together end together: a moment more makes one write of them, not many
                        concurrent.futures.wait(pending, timeout=GATHER_SECONDS)
        finally:
            # an unexpected error in the loop: hand back what was claimed but never called
            release_many([item.conn.id for item in self.waiting], self.owner)
            while not self.clients.empty():
                self.clients.get().close()
        self._summary(last=True)


def _purge_sessions(batches: int = 20, batch_size: int = 500) -> int:
    """Delete long-expired OAuth authorization sessions in bounded batches (at most batches × batch_size)."""
    total = 0
    for _ in range(batches):
        deleted = purge_authorization_sessions(batch_size)
        total += deleted
        if deleted < batch_size:
            break
    return total


def run_refresh_due(margin: int | None = None, batch_size: int = 100, concurrency: int = DEFAULT_CONCURRENCY,
                    echo: Callable[[str], Any] = print, progress: Callable[[int], Any] = lambda done: None) -> int:
    """Refresh every OAuth connection expiring within ``margin`` seconds; return the exit code.

    Safe to run from cron on several hosts at once: each connection is claimed with a lease
    before its provider call (see the module docstring for the batches, ``concurrency`` and
    what a crash can lose). ``batch_size`` connections are claimed at a time; ``concurrency``
    token endpoint calls run at once (1 to :data:`MAX_CONCURRENCY`). Afterwards long-expired
    OAuth authorization sessions are deleted (bounded batches). Progress goes to ``echo``
    (stderr in the CLI): one line per ``batch_size`` connections processed and at the end;
    the summary ``{"refreshed", "failed", "skipped"}`` is printed as one JSON line on stdout.
    Exit code 1 when any refresh failed. ``progress(n)`` is called as connections are
    processed (the CLI's progress bar on a terminal).
    """
    margin = settings()["refresh_margin_seconds"] if margin is None else margin
    runner = _Runner(margin, max(1, batch_size), min(max(1, concurrency), MAX_CONCURRENCY), echo, progress)
    with database.connection_context():
        runner.run()
        purged = _purge_sessions()
        if purged:
            echo(f"refresh-due: deleted {purged} expired authorization sessions")
    click.echo(json.dumps(runner.counts))
    return 1 if runner.counts["failed"] else 0
