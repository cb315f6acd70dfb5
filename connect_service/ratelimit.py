"""Fixed-window rate limits counted in the database, so every worker and host shares them.

A bucket names what is limited and for whom (``tokens:<app id>:<client address>``);
each one-minute window is one row, counted by one upsert (``INSERT … ON CONFLICT DO
UPDATE … RETURNING``, atomic on SQLite and PostgreSQL), so
the limit holds across gunicorn workers and hosts sharing the database. The
client address is ``request.remote_addr`` after ProxyFix: ``proxy_count``
(default 0, no forwarded header trusted) must be the number of proxies really
in front of the service, or clients can choose their own address with
``X-Forwarded-For``. An IPv6 client counts per /64: one subscriber usually
holds a whole /64 and could otherwise rotate through 2^64 addresses.
"""
from __future__ import annotations

import functools
import ipaddress
import math
import secrets
import time

from . import errors
from .db import compiled_sql, database, execute_compiled, write_turn
from .logs import current_request
from .models import RateLimitHit

WINDOW = 60
#: one new window in this many also deletes every finished window (keeps the table small)
PURGE_ONE_IN = 50


def client_address() -> str:
    """The address buckets are keyed by: ``request.remote_addr`` after ProxyFix, an IPv6 one as its /64."""
    return bucket_address((current_request() or ("",))[0] or "")


@functools.lru_cache(maxsize=4096)  # a pure function of the text: each worker parses an address once
def bucket_address(raw: str) -> str:
    """``raw`` as a bucket names it: an IPv4 address, an IPv6 one as its /64, anything else as given."""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def hit(bucket: str, limit: int, now: float | None = None) -> None:
    """Count one request in ``bucket``; raise 429 with ``Retry-After`` past ``limit`` per minute.

    ``limit <= 0`` disables the limit. The 429 is the seed error shape with
    ``details.input`` saying when to retry and a ``Retry-After`` header (seconds
    until the window ends).
    """
    if limit <= 0:
        return
    now = time.time() if now is None else now
    window = int(now // WINDOW)
    # fetchall: SQLite finishes (and commits) an INSERT … RETURNING only once its rows are read
    with write_turn():
        count = execute_compiled(_upsert_sql(), (bucket, window)).fetchall()[0][0]
        if count == 1:  # this request opened the window: this bucket's older windows go (by primary key)
            RateLimitHit.delete().where(RateLimitHit.bucket == bucket, RateLimitHit.window < window).execute()
            if secrets.randbelow(PURGE_ONE_IN) == 0:  # now and then, everybody's
                purge(now)
    if count > limit:
        retry = max(1, math.ceil((window + 1) * WINDOW - now))
        raise errors.TooManyRequests({"input": f"at most {limit} requests per minute; retry in {retry} s"},
                                     headers={"Retry-After": str(retry)})


def _upsert_sql() -> str:
    """One statement counts the hit and returns the window's count (both databases' ``ON CONFLICT``)."""
    def build():
        table = RateLimitHit._meta.table_name
        p = database.param
        return (f'INSERT INTO "{table}" ("bucket", "window", "count") VALUES ({p}, {p}, 1) '
                f'ON CONFLICT ("bucket", "window") DO UPDATE SET "count" = "{table}"."count" + 1 '
                f'RETURNING "count"')
    return compiled_sql("ratelimit.hit", build)


def purge(before: float | None = None) -> int:
    """Delete finished windows (called opportunistically; cheap with the primary key)."""
    window = int(((time.time() if before is None else before) // WINDOW) - 1)
    return RateLimitHit.delete().where(RateLimitHit.window < window).execute()
