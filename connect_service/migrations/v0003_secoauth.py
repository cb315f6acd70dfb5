"""Single-use values (credential start links, platform webhook events) are remembered once used: table ``spent_key``."""
from __future__ import annotations

import peewee as pw

from ..db import database


class _SpentKey(pw.Model):
    """A frozen copy of ``models.SpentKey`` as this step creates it."""

    key = pw.CharField(primary_key=True)
    expires_at = pw.DateTimeField(index=True)
    answer = pw.TextField(null=True)

    class Meta:
        database = database
        table_name = "spent_key"


def up(migrator, db):
    db.create_tables([_SpentKey])
