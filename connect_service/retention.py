"""``connect-service prune``: delete what is kept only for a while.

Audit events older than ``audit_retention_days``, authorization sessions
that expired over an hour ago, and finished rate-limit windows. Each goes in
bounded batches, so it is safe to run from cron on several hosts.
"""
from __future__ import annotations

from . import audit
from .oauth.authorize import purge_authorization_sessions
from .ratelimit import purge as purge_rate_limits

SESSION_BATCH = 1000


def prune_all(audit_retention_days: int) -> dict[str, int]:
    """Prune everything; how many rows of each kind went."""
    summary = {"audit_events": audit.prune(audit_retention_days), "authorization_sessions": 0,
               "rate_limit_rows": purge_rate_limits()}
    while True:
        deleted = purge_authorization_sessions(SESSION_BATCH)
        summary["authorization_sessions"] += deleted
        if deleted < SESSION_BATCH:
            return summary
