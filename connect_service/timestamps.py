"""Timestamps as the API writes them: ISO 8601 UTC with a ``Z``, whole seconds."""
from __future__ import annotations

import datetime


def naive_utc(value: datetime.datetime) -> datetime.datetime:
    """``value`` as naive UTC, the form every DateTimeField stores."""
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def iso(value: datetime.datetime | None) -> str | None:
    """``2026-11-23T08:30:00Z`` (None stays None)."""
    if value is None:
        return None
    return naive_utc(value).replace(microsecond=0).isoformat() + "Z"
