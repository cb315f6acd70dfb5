"""Webhook endpoints, the event outbox, webhook deliveries and the audit log."""
from __future__ import annotations

import peewee as pw

from ..db import database


class _Model(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


# Frozen copies: later model changes add a step of their own. Only what reaches the DDL is kept.
class Organization(_Model):
    id = pw.CharField(primary_key=True)


class App(_Model):
    id = pw.CharField(primary_key=True)


class WebhookEndpoint(_Model):
    id = pw.CharField(primary_key=True)
    org = pw.ForeignKeyField(Organization, on_delete="CASCADE")
    app = pw.ForeignKeyField(App, null=True, on_delete="CASCADE")
    url = pw.TextField()
    events = pw.TextField()
    description = pw.TextField()
    secret_encrypted = pw.TextField()
    previous_secret_encrypted = pw.TextField(null=True)
    previous_secret_until = pw.DateTimeField(null=True)
    failing_since = pw.DateTimeField(null=True)
    disabled_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()


class WebhookEvent(_Model):
    id = pw.CharField(primary_key=True)
    org = pw.ForeignKeyField(Organization, on_delete="CASCADE")
    app_id = pw.CharField(null=True)
    type = pw.CharField()
    payload = pw.TextField()
    dedupe_key = pw.CharField(null=True, unique=True)
    created_at = pw.DateTimeField()


class WebhookDelivery(_Model):
    id = pw.CharField(primary_key=True)
    event = pw.ForeignKeyField(WebhookEvent, on_delete="CASCADE")
    endpoint = pw.ForeignKeyField(WebhookEndpoint, on_delete="CASCADE")
    status = pw.CharField()
    attempts = pw.IntegerField()
    last_status_code = pw.IntegerField(null=True)
    last_error = pw.TextField(null=True)
    next_attempt_at = pw.DateTimeField()
    lease_until = pw.DateTimeField(null=True)
    lease_owner = pw.CharField(null=True)
    delivered_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()

    class Meta:
        indexes = ((("status", "next_attempt_at"), False), (("endpoint", "created_at"), False))


class AuditEvent(_Model):
    id = pw.CharField(primary_key=True)
    org = pw.ForeignKeyField(Organization, null=True, on_delete="CASCADE")
    at = pw.DateTimeField()
    actor_type = pw.CharField()
    actor_id = pw.CharField(null=True)
    action = pw.CharField()
    target_type = pw.CharField(null=True)
    target_id = pw.CharField(null=True)
    app_id = pw.CharField(null=True)
    ip = pw.CharField(null=True)
    request_id = pw.CharField(null=True)
    details = pw.TextField()

    class Meta:
        indexes = ((("org", "at"), False), (("at",), False))


def up(migrator, db):
    db.create_tables([WebhookEndpoint, WebhookEvent, WebhookDelivery, AuditEvent])
