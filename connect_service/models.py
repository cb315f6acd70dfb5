"""Tables. Every id is a string; secrets live only in ``*_encrypted`` columns.

Per-user lookups (connections of an app's customer, sessions by state hash,
keys by hash) are served by indexes, so they stay fast whatever the table size.
"""
from __future__ import annotations

import datetime
import json
import secrets
import uuid

import peewee as pw

from .db import database


def utcnow() -> datetime.datetime:
    """Naive UTC, the form every timestamp column stores."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(16).replace('-', 'x').replace('_', 'y')}"


class JSONField(pw.TextField):
    """JSON stored as text: identical on SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Organization(BaseModel):
    id = pw.CharField(primary_key=True, default=lambda: new_id("org"))
    name = pw.CharField()
    created_at = pw.DateTimeField(default=utcnow)


class AccessKey(BaseModel):
    id = pw.CharField(primary_key=True, default=lambda: new_id("key"))
    org = pw.ForeignKeyField(Organization, backref="access_keys", on_delete="CASCADE")
    name = pw.CharField(default="")
    prefix = pw.CharField()
    key_hash = pw.CharField(unique=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_used_at = pw.DateTimeField(null=True)
    revoked_at = pw.DateTimeField(null=True)


class App(BaseModel):
    id = pw.CharField(primary_key=True, default=lambda: str(uuid.uuid4()))
    org = pw.ForeignKeyField(Organization, backref="apps", on_delete="CASCADE",
                             index=False)  # (org, slug) leads with it
    name = pw.CharField()
    slug = pw.CharField()
    hostname = pw.CharField(unique=True)
    visibility = pw.CharField(default="private")
    return_urls = JSONField(default=list)
    frame_ancestors = JSONField(default=list)
    deployed_version = pw.IntegerField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    #: ``none`` or ``required`` (token minting needs ``user_id_signature``, an HMAC under the secret)
    user_verification = pw.CharField(default="none")
    user_verification_secret_encrypted = pw.TextField(null=True)
    #: connect tokens issued up to this instant are refused (set when the app turns private)
    tokens_valid_after = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("org", "slug"), True),)


class TokenRevocation(BaseModel):
    """``DELETE /v1/apps/{id}/users/{user_id}/tokens``: the user's tokens issued up to this instant are refused.

    Naive UTC with microseconds; the primary key is the lookup every token verification makes.
    """

    app = pw.ForeignKeyField(App, backref="token_revocations", on_delete="CASCADE", index=False)  # the key leads with it
    user_id = pw.CharField()
    tokens_valid_after = pw.DateTimeField()

    class Meta:
        primary_key = pw.CompositeKey("app", "user_id")


class WorkflowVersion(BaseModel):
    app = pw.ForeignKeyField(App, backref="versions", on_delete="CASCADE",
                             index=False)  # (app, number) leads with it
    number = pw.IntegerField()
    created_at = pw.DateTimeField(default=utcnow)
    deployed_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("app", "number"), True),)


class Requirement(BaseModel):
    version = pw.ForeignKeyField(WorkflowVersion, backref="requirements", on_delete="CASCADE",
                                 index=False)  # (version, key) leads with it
    public_id = pw.CharField(index=True)  # uuid5(app id, key): stable across versions
    key = pw.CharField()
    type = pw.CharField()  # connection, or an action-account type name
    title = pw.CharField()
    description = pw.TextField(default="")
    spec = JSONField()
    position = pw.IntegerField()

    class Meta:
        indexes = ((("version", "key"), True),)


class Credential(BaseModel):
    """An OAuth2 client registration (seed 003) plus connector settings."""

    id = pw.CharField(primary_key=True, default=lambda: new_id("ccfg"))
    org = pw.ForeignKeyField(Organization, backref="credentials", on_delete="CASCADE")
    app = pw.ForeignKeyField(App, null=True, backref="credentials", on_delete="CASCADE")
    name = pw.CharField()
    slug = pw.CharField(default="")
    mode = pw.CharField(default="OAUTH")
    connector_name = pw.CharField(index=True)
    oauth_url = pw.TextField(null=True)
    oauth_token_url = pw.TextField(null=True)
    oauth_client_id = pw.TextField(null=True)
    oauth_client_secret_encrypted = pw.TextField(null=True)
    oauth_scope = pw.TextField(default="")
    oauth_grant_type = pw.CharField(default="authorization_code")
    pkce_method = pw.CharField(null=True)
    token_endpoint_auth_method = pw.CharField(null=True)
    oauth_issuer = pw.TextField(null=True)
    allowed_hosts = JSONField(default=list)
    metadata = JSONField(default=dict)
    description = pw.TextField(default="")
    read_access = pw.CharField(default="ORGANIZATION")
    shared_app_slugs = JSONField(default=list)
    settings = JSONField(default=dict)
    # connector-owned secrets, e.g. the action-connector platform's API token
    secret_state_encrypted = pw.TextField(null=True)
    # seed 003: the Access Key that created it (its owner), a folder label, the live credential it tests
    owner_key = pw.ForeignKeyField(AccessKey, null=True, on_delete="SET NULL")
    folder_id = pw.CharField(null=True)
    live_credential = pw.ForeignKeyField("self", null=True, backref="test_credentials", on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)


class Connection(BaseModel):
    id = pw.CharField(primary_key=True, default=lambda: new_id("conn"))
    org = pw.ForeignKeyField(Organization, backref="connections", on_delete="CASCADE",
                             index=False)  # (org, created_at) and (org, customer_id) lead with it
    app = pw.ForeignKeyField(App, null=True, backref="connections", on_delete="CASCADE",
                             index=False)  # the (app, customer_id, requirement_id) key leads with it
    type = pw.CharField()
    connector_name = pw.CharField()
    integration_id = pw.CharField(null=True)
    customer_id = pw.CharField(null=True)
    requirement_id = pw.CharField(null=True)
    credential = pw.ForeignKeyField(Credential, null=True, backref="connections", on_delete="SET NULL")
    # action accounts: what on the platform the account is for (``ActionAccountType.account_key``,
    # e.g. ``gmail``); named ``app_slug`` before migration 0002
    account_key = pw.CharField(null=True)
    status = pw.CharField(default="pending")  # pending | active | error
    status_reason = pw.TextField(null=True)
    disabled = pw.BooleanField(default=False)
    display_name = pw.CharField(null=True)
    metadata = JSONField(default=dict)
    settings_encrypted = pw.TextField(null=True)
    expires_at = pw.DateTimeField(null=True, index=True)  # access-token expiry, plain for refresh-due
    refresh_lease_until = pw.DateTimeField(null=True)
    refresh_lease_owner = pw.CharField(null=True)
    refresh_generation = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    last_fetched_at = pw.DateTimeField(null=True)
    last_refreshed_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = (
            (("app", "customer_id", "requirement_id"), True),
            (("org", "created_at"), False),
            (("org", "customer_id"), False),
        )


class AuthorizationSession(BaseModel):
    id = pw.CharField(primary_key=True, default=lambda: new_id("oas"))
    state_hash = pw.CharField(unique=True)
    connection = pw.ForeignKeyField(Connection, backref="sessions", on_delete="CASCADE")
    credential = pw.ForeignKeyField(Credential, backref="sessions", on_delete="CASCADE")
    verifier_encrypted = pw.TextField(null=True)
    redirect_uri = pw.TextField()
    token_url = pw.TextField()
    scope = pw.TextField(default="")
    return_to = pw.TextField(null=True)
    browser_nonce_hash = pw.CharField(null=True)
    expires_at = pw.DateTimeField()
    consumed_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        # the purge of long-expired sessions (oauth.purge_authorization_sessions) walks this index
        indexes = ((("expires_at",), False),)


class RateLimitHit(BaseModel):
    """Fixed one-minute windows counted in the database, shared by every worker."""

    bucket = pw.CharField()
    window = pw.BigIntegerField()
    count = pw.IntegerField(default=0)

    class Meta:
        primary_key = pw.CompositeKey("bucket", "window")


class AccountLookup(BaseModel):
    """When an action-account platform was last asked about a user's accounts (and, on
    PostgreSQL, the row lock that serialises writers of one user's accounts)."""

    key = pw.CharField(primary_key=True)
    checked_at = pw.DateTimeField()


class WebhookEndpoint(BaseModel):
    """Where an org wants its events (Standard Webhooks); the signing secret is encrypted."""

    id = pw.CharField(primary_key=True, default=lambda: new_id("whep"))
    org = pw.ForeignKeyField(Organization, backref="webhook_endpoints", on_delete="CASCADE")
    app = pw.ForeignKeyField(App, null=True, backref="webhook_endpoints", on_delete="CASCADE")
    url = pw.TextField()
    events = JSONField(default=list)  # empty: every event type
    description = pw.TextField(default="")
    secret_encrypted = pw.TextField()
    # after a rotation the old secret signs alongside the new one until previous_secret_until
    previous_secret_encrypted = pw.TextField(null=True)
    previous_secret_until = pw.DateTimeField(null=True)
    failing_since = pw.DateTimeField(null=True)
    disabled_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)


class WebhookEvent(BaseModel):
    """The outbox: one row per event, written in the transaction of the change it reports."""

    id = pw.CharField(primary_key=True, default=lambda: new_id("msg"))
    org = pw.ForeignKeyField(Organization, backref="webhook_events", on_delete="CASCADE")
    app_id = pw.CharField(null=True)
    type = pw.CharField()
    payload = JSONField()
    # events that happen once only (requirement.completed) carry a key the unique index holds to it
    dedupe_key = pw.CharField(null=True, unique=True)
    created_at = pw.DateTimeField(default=utcnow)


class WebhookDelivery(BaseModel):
    """One event for one endpoint: pending until a 2xx answer, retried with backoff, then failed."""

    id = pw.CharField(primary_key=True, default=lambda: new_id("whd"))
    event = pw.ForeignKeyField(WebhookEvent, backref="deliveries", on_delete="CASCADE")
    endpoint = pw.ForeignKeyField(WebhookEndpoint, backref="deliveries", on_delete="CASCADE",
                                  index=False)  # (endpoint, created_at) leads with it
    status = pw.CharField(default="pending")  # pending | delivered | failed
    attempts = pw.IntegerField(default=0)
    last_status_code = pw.IntegerField(null=True)
    last_error = pw.TextField(null=True)
    next_attempt_at = pw.DateTimeField()
    lease_until = pw.DateTimeField(null=True)
    lease_owner = pw.CharField(null=True)
    delivered_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("status", "next_attempt_at"), False),
            (("endpoint", "created_at"), False),
        )


class AuditEvent(BaseModel):
    """Who did what to which object (never a secret); written in the transaction of the change."""

    id = pw.CharField(primary_key=True, default=lambda: new_id("aud"))
    org = pw.ForeignKeyField(Organization, null=True, backref="audit_events", on_delete="CASCADE",
                             index=False)  # (org, at) leads with it
    at = pw.DateTimeField(default=utcnow)
    actor_type = pw.CharField()  # access_key | connect_token | system
    actor_id = pw.CharField(null=True)
    action = pw.CharField()
    target_type = pw.CharField(null=True)
    target_id = pw.CharField(null=True)
    app_id = pw.CharField(null=True)
    ip = pw.CharField(null=True)
    request_id = pw.CharField(null=True)
    details = JSONField(default=dict)

    class Meta:
        indexes = (
            (("org", "at"), False),
            (("at",), False),
        )


class SpentKey(BaseModel):
    """A single-use value already used (a credential start link, a platform's webhook event),
    kept until ``expires_at``, after which the value could not be used anyway."""

    key = pw.CharField(primary_key=True)
    expires_at = pw.DateTimeField(index=True)
    # what the first use answered (a webhook event's JSON answer), repeated to a replay
    answer = JSONField(null=True)


ALL_MODELS = [
    Organization, AccessKey, App, TokenRevocation, WorkflowVersion, Requirement, Credential, Connection,
    AuthorizationSession, RateLimitHit, AccountLookup, WebhookEndpoint, WebhookEvent, WebhookDelivery,
    AuditEvent, SpentKey,
]
