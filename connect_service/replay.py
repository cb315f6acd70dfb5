"""Single-use values: a credential start link starts one flow, a platform's webhook event counts once.

A used value is a :class:`~connect_service.models.SpentKey` row named
``<purpose>:<sha256 of the value>`` (the value itself is never stored), kept
until the value would have expired anyway. Claiming is one ``INSERT``: the
primary key decides, across workers and hosts, which request used it first.
Expired rows are purged now and then by the claims themselves.
"""
from __future__ import annotations

import datetime
import hashlib
import secrets
from typing import Any

import peewee

from .db import database, write_transaction
from .models import SpentKey, utcnow

#: one claim in this many also deletes expired rows (keeps the table small without a job)
PURGE_ONE_IN = 50


def key_for(purpose: str, value: str) -> str:
    """The row name of ``value`` used for ``purpose``: ``<purpose>:<hex sha256>``."""
    return f"{purpose}:{hashlib.sha256(value.encode('utf-8')).hexdigest()}"


def claim(key: str, max_age_seconds: float) -> bool:
    """Mark ``key`` used for ``max_age_seconds``; True for the first use, False when it was used before."""
    now = utcnow()
    with write_transaction():
        try:
            with database.atomic():
                SpentKey.create(key=key, expires_at=now + datetime.timedelta(seconds=max(1, max_age_seconds)))
        except peewee.IntegrityError:
            return False
        if secrets.randbelow(PURGE_ONE_IN) == 0:
            SpentKey.delete().where(SpentKey.expires_at < now).execute()
    return True


def answer_of(key: str) -> tuple[bool, Any]:
    """``(found, answer)`` of a used ``key``: the answer its first use recorded (None while in progress)."""
    row = SpentKey.get_or_none(SpentKey.key == key)
    return (False, None) if row is None else (True, row.answer)


def record_answer(key: str, answer: Any) -> None:
    """Keep the JSON ``answer`` of the first use of ``key``, so a replay gets the same one."""
    with write_transaction():
        SpentKey.update(answer=answer).where(SpentKey.key == key).execute()


def release(key: str) -> None:
    """Forget ``key`` (its first use failed and may be retried)."""
    with write_transaction():
        SpentKey.delete().where(SpentKey.key == key).execute()
