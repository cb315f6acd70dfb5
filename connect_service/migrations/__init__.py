"""Versioned schema migrations: ``connect-service migrate`` (``init-db`` is an alias).

Each step is a module ``vNNNN_<name>.py`` in this package (numbered from 1
without gaps) whose docstring's first line describes it and whose
``up(migrator, db)`` changes the schema with ``playhouse.migrate``::

    from playhouse.migrate import migrate
    import peewee as pw

    # v0002_connection_last_used.py: "Connections remember when they were last used."
    def up(migrator, db):
        migrate(migrator.add_column("connection", "last_used_at", pw.DateTimeField(null=True)))

Step 1 is the first release's schema. The ``schema_version`` table records
every applied step. :func:`migrate` applies the pending steps one transaction
each (the step and its version row commit together), so a failed step leaves
the database at the previous version. Several hosts may run it at once: on
PostgreSQL an advisory lock serialises them, on SQLite each step's
``BEGIN IMMEDIATE`` does, and each step re-checks its version row inside its
transaction. Every model change needs a step: ``tests/test_migrations.py``
compares the schema the steps build with the one the models describe.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable

import peewee as pw
from playhouse.migrate import SchemaMigrator

from ..config import ConfigError
from ..db import database, is_postgres, write_transaction
from ..models import utcnow

log = logging.getLogger(__name__)

STEP_MODULE = re.compile(r"^v(\d{4})_(\w+)$")
#: pg_advisory_lock key held while migrating ("cnsm")
ADVISORY_LOCK_KEY = 0x636E736D


class SchemaVersion(pw.Model):
    """One row per applied step."""

    version = pw.IntegerField(primary_key=True)
    name = pw.CharField()
    applied_at = pw.DateTimeField()

    class Meta:
        database = database
        table_name = "schema_version"


@dataclass(frozen=True)
class Step:
    """A numbered migration step: ``up(migrator, db)`` from module ``vNNNN_<name>``."""

    version: int
    name: str
    description: str
    up: Callable[[Any, Any], None]

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def steps() -> list[Step]:
    """Every step of this package, in order; a gap or a duplicate number is a programming error."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        match = STEP_MODULE.match(info.name)
        if match:
            module = importlib.import_module(f"{__name__}.{info.name}")
            description = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
            found.append(Step(int(match.group(1)), match.group(2), description, module.up))
    found.sort(key=lambda s: s.version)
    if [s.version for s in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration steps must be numbered 1..n without gaps: {[s.label for s in found]}")
    return found


def head() -> int:
    """The schema version this code needs (the last step's number)."""
    return len(steps())


def current_version() -> int:
    """The last applied step (0 for an empty database or one the first release built)."""
    with database.connection_context():
        if SchemaVersion._meta.table_name not in database.get_tables():
            return 0
        return SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() or 0


def pending() -> list[Step]:
    """The steps not yet applied, in order."""
    current = current_version()
    return [s for s in steps() if s.version > current]


def check_schema() -> None:
    """Raise :class:`ConfigError` (one line) when the database is behind this code."""
    current, needed = current_version(), head()
    if current < needed:
        raise ConfigError(f"the database schema is at version {current}, this code needs {needed}: "
                          f"run `connect-service migrate`")
    if current > needed:
        log.warning("the database schema (version %s) is newer than this code (%s)", current, needed)


def migrate(echo: Callable[[str], Any] = lambda line: None) -> list[Step]:
    """Apply every pending step, one transaction each; ``echo`` gets one line per applied step."""
    applied = []
    with database.connection_context():
        if is_postgres():
            database.execute_sql("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            with write_transaction():
                SchemaVersion.create_table(safe=True)
            for step in steps():
                if _apply(step):
                    applied.append(step)
                    echo(f"migrate: applied {step.label}: {step.description}")
        finally:
            if is_postgres():
                database.execute_sql("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return applied


def _apply(step: Step) -> bool:
    sqlite = not is_postgres()
    if sqlite:
        # A step that rebuilds a table (playhouse does so for some ALTERs on SQLite) must not fire
        # ON DELETE CASCADE through the implicit delete of DROP TABLE; SQLite's documented procedure
        # is foreign keys off outside the transaction, then a foreign_key_check.
        database.execute_sql("PRAGMA foreign_keys = OFF")
    try:
        with write_transaction():
            if SchemaVersion.get_or_none(SchemaVersion.version == step.version) is not None:
                return False  # another host applied it meanwhile
            step.up(SchemaMigrator.from_database(database), database)
            if sqlite:
                broken = database.execute_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration {step.label} broke {len(broken)} foreign key(s)")
            SchemaVersion.create(version=step.version, name=step.name, applied_at=utcnow())
        return True
    finally:
        if sqlite:
            database.execute_sql("PRAGMA foreign_keys = ON")
