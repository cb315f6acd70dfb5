"""Schema creation and migration (``connect-service init-db`` / ``migrate``).

Version 1 of the schema is the models as they stand: ``migrate`` creates
every missing table and index (idempotent, safe to run from several hosts).
Later schema changes append a step to ``STEPS`` using ``playhouse.migrate``.
"""
from __future__ import annotations

from .db import database
from .models import ALL_MODELS


def migrate() -> list[str]:
    """Create missing tables; return the names of the tables created."""
    with database.connection_context():
        existing = set(database.get_tables())
        missing = [m for m in ALL_MODELS if m._meta.table_name not in existing]
        with database.atomic():
            database.create_tables(ALL_MODELS, safe=True)
    return [m._meta.table_name for m in missing]
