"""The first release's schema (commit 9782477): every table, created if missing.

A frozen copy of that release's models: later model changes never alter
this step, they add a step of their own. Only what reaches the DDL is kept
(column types, NULL, keys, indexes); Python-side defaults are left out.
Tables are created with ``safe=True``, so a database built by the first
release's ``init-db`` (which has no version table) passes through unchanged.
"""
from __future__ import annotations

import peewee as pw

from ..db import database


class _Model(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Organization(_Model):
    id = pw.CharField(primary_key=True)
    name = pw.CharField()
    created_at = pw.DateTimeField()


class AccessKey(_Model):
    id = pw.CharField(primary_key=True)
    org = pw.ForeignKeyField(Organization, on_delete="CASCADE")
    name = pw.CharField()
    prefix = pw.CharField()
    key_hash = pw.CharField(unique=True)
    created_at = pw.DateTimeField()
    last_used_at = pw.DateTimeField(null=True)
    revoked_at = pw.DateTimeField(null=True)


class App(_Model):
    id = pw.CharField(primary_key=True)
    org = pw.ForeignKeyField(Organization, on_delete="CASCADE")
    name = pw.CharField()
    slug = pw.CharField()
    hostname = pw.CharField(unique=True)
    visibility = pw.CharField()
    return_urls = pw.TextField()
    frame_ancestors = pw.TextField()
    deployed_version = pw.IntegerField(null=True)
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()

    class Meta:
        indexes = ((("org", "slug"), True),)


class WorkflowVersion(_Model):
    app = pw.ForeignKeyField(App, on_delete="CASCADE")
    number = pw.IntegerField()
    created_at = pw.DateTimeField()
    deployed_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("app", "number"), True),)


class Requirement(_Model):
    version = pw.ForeignKeyField(WorkflowVersion, on_delete="CASCADE")
    public_id = pw.CharField(index=True)
    key = pw.CharField()
    type = pw.CharField()
    title = pw.CharField()
    description = pw.TextField()
    spec = pw.TextField()
    position = pw.IntegerField()

    class Meta:
        indexes = ((("version", "key"), True),)


class Credential(_Model):
    id = pw.CharField(primary_key=True)
    org = pw.ForeignKeyField(Organization, on_delete="CASCADE")
    app = pw.ForeignKeyField(App, null=True, on_delete="CASCADE")
    name = pw.CharField()
    slug = pw.CharField()
    mode = pw.CharField()
    connector_name = pw.CharField(index=True)
    oauth_url = pw.TextField(null=True)
    oauth_token_url = pw.TextField(null=True)
    oauth_client_id = pw.TextField(null=True)
    oauth_client_secret_encrypted = pw.TextField(null=True)
    oauth_scope = pw.TextField()
    oauth_grant_type = pw.CharField()
    pkce_method = pw.CharField(null=True)
    token_endpoint_auth_method = pw.CharField(null=True)
    oauth_issuer = pw.TextField(null=True)
    allowed_hosts = pw.TextField()
    metadata = pw.TextField()
    description = pw.TextField()
    read_access = pw.CharField()
    shared_app_slugs = pw.TextField()
    settings = pw.TextField()
    secret_state_encrypted = pw.TextField(null=True)
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()


class Connection(_Model):
    id = pw.CharField(primary_key=True)
    org = pw.ForeignKeyField(Organization, on_delete="CASCADE")
    app = pw.ForeignKeyField(App, null=True, on_delete="CASCADE")
    type = pw.CharField()
    connector_name = pw.CharField()
    integration_id = pw.CharField(null=True)
    customer_id = pw.CharField(null=True)
    requirement_id = pw.CharField(null=True)
    credential = pw.ForeignKeyField(Credential, null=True, on_delete="SET NULL")
    app_slug = pw.CharField(null=True)
    status = pw.CharField()
    status_reason = pw.TextField(null=True)
    disabled = pw.BooleanField()
    display_name = pw.CharField(null=True)
    metadata = pw.TextField()
    settings_encrypted = pw.TextField(null=True)
    expires_at = pw.DateTimeField(null=True, index=True)
    refresh_lease_until = pw.DateTimeField(null=True)
    refresh_lease_owner = pw.CharField(null=True)
    refresh_generation = pw.IntegerField()
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()
    last_fetched_at = pw.DateTimeField(null=True)
    last_refreshed_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = (
            (("app", "customer_id", "requirement_id"), True),
            (("org", "created_at"), False),
            (("org", "customer_id"), False),
        )


class AuthorizationSession(_Model):
    id = pw.CharField(primary_key=True)
    state_hash = pw.CharField(unique=True)
    connection = pw.ForeignKeyField(Connection, on_delete="CASCADE")
    credential = pw.ForeignKeyField(Credential, on_delete="CASCADE")
    verifier_encrypted = pw.TextField(null=True)
    redirect_uri = pw.TextField()
    token_url = pw.TextField()
    scope = pw.TextField()
    return_to = pw.TextField(null=True)
    browser_nonce_hash = pw.CharField(null=True)
    expires_at = pw.DateTimeField()
    consumed_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField()

    class Meta:
        indexes = ((("expires_at",), False),)


class RateLimitHit(_Model):
    bucket = pw.CharField()
    window = pw.BigIntegerField()
    count = pw.IntegerField()

    class Meta:
        primary_key = pw.CompositeKey("bucket", "window")


class AccountLookup(_Model):
    key = pw.CharField(primary_key=True)
    checked_at = pw.DateTimeField()


MODELS = [Organization, AccessKey, App, WorkflowVersion, Requirement, Credential, Connection,
          AuthorizationSession, RateLimitHit, AccountLookup]


def up(migrator, db) -> None:
    """Create the first release's tables and indexes (those that exist are left alone)."""
    db.create_tables(MODELS, safe=True)
