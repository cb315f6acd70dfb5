"""Seven indexes that only repeated the first column of another index of their table are dropped.

Each was peewee's default index on a foreign key whose column already leads a composite
index (``connection.org_id`` beside ``(org_id, created_at)``, ``audit_event.org_id`` beside
``(org_id, at)``, ...). The composite index answers every lookup the short one did (foreign-key
checks and ``ON DELETE CASCADE`` included), while each extra index cost every INSERT and every
UPDATE of its column one more B-tree to write: an audited secrets read inserts one audit row per
request. ``tests/test_migrations.py`` keeps any index from being a left prefix of another.
"""
from playhouse.migrate import migrate

#: (table, index) as peewee named them: ``<table>_<column>``
REDUNDANT = (
    ("app", "app_org_id"),
    ("workflow_version", "workflow_version_app_id"),
    ("requirement", "requirement_version_id"),
    ("connection", "connection_org_id"),
    ("connection", "connection_app_id"),
    ("webhook_delivery", "webhook_delivery_endpoint_id"),
    ("audit_event", "audit_event_org_id"),
)


def up(migrator, db):
    migrate(*(migrator.drop_index(table, name) for table, name in REDUNDANT))
