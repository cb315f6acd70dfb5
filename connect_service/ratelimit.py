"""Fixed-window rate limits counted in the database, so every worker and host shares them."""
from __future__ import annotations

import math
import time

import peewee

from . import errors
from .db import database, write_transaction
from .models import RateLimitHit

WINDOW = 60


def hit(bucket: str, limit: int, now: float | None = None) -> None:
    """Count one request in ``bucket``; raise 429 with ``Retry-After`` past ``limit`` per minute."""
    if limit <= 0:
        return
    now = time.time() if now is None else now
    window = int(now // WINDOW)
    with write_transaction():
        updated = (RateLimitHit.update(count=RateLimitHit.count + 1)
                   .where(RateLimitHit.bucket == bucket, RateLimitHit.window == window).execute())
        if not updated:
            try:
                with database.atomic():
                    RateLimitHit.create(bucket=bucket, window=window, count=1)
            except peewee.IntegrityError:  # another worker created it first
                RateLimitHit.update(count=RateLimitHit.count + 1).where(
                    RateLimitHit.bucket == bucket, RateLimitHit.window == window).execute()
        count = RateLimitHit.select(RateLimitHit.count).where(
            RateLimitHit.bucket == bucket, RateLimitHit.window == window).scalar()
    if count > limit:
        retry = max(1, math.ceil((window + 1) * WINDOW - now))
        raise errors.TooManyRequests({"input": f"at most {limit} requests per minute; retry in {retry} s"},
                                     headers={"Retry-After": str(retry)})


def purge(before: float | None = None) -> int:
    """Delete finished windows (called opportunistically; cheap with the primary key)."""
    window = int(((time.time() if before is None else before) // WINDOW) - 1)
    return RateLimitHit.delete().where(RateLimitHit.window < window).execute()
