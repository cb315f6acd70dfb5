"""Single-use values (credential start links, platform webhook events) are remembered once used: table ``spent_key``."""
from __future__ import annotations

import peewee as pw

from ..db import database


class SpentKey(pw.Model):
    """A frozen copy of ``models.SpentKey`` as this step creates it."""

    key = pw.CharField(primary_key=True)
    expires_at = pw.DateTimeField(index=True)
    answer = pw.TextField(null=True)

    class Meta:
        database = database
        legacy_table_names = False


def up(migrator, db):
    db.create_tables([SpentKey])
