"""Settings: defaults, a TOML file (``CONNECT_CONFIG``), ``CONNECT_<NAME>`` env vars.

Precedence, lowest first: built-in defaults, the TOML file, environment
variables, then the dict given to ``create_app(config)``. Production mode
refuses to start without its secrets; development mode generates them once
into the instance folder so that every worker agrees on them.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import tempfile
import tomllib
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A missing or invalid setting; the message is one line naming it."""


#: name -> (default, kind). ``kind`` drives env-var parsing and validation.
SETTINGS: dict[str, tuple[Any, str]] = {
    "env": ("production", "str"),
    "instance_path": ("instance", "str"),
    "database_url": (None, "str"),
    "public_url": (None, "str"),
    "secret_key": (None, "str"),
    "secret_key_fallbacks": ([], "list"),
    "encryption_keys": ([], "list"),
    "allowed_private_hosts": ([], "list"),
    "management_hosts": ([], "list"),
    "disabled_plugins": ([], "list"),
    "max_body_bytes": (1024 * 1024, "int"),
    "rate_limit_tokens_per_minute": (60, "int"),
    "rate_limit_credentials_per_minute": (20, "int"),
    "rate_limit_oauth_starts_per_minute": (10, "int"),
    "rate_limit_oauth_starts_per_address_per_minute": (60, "int"),
    "rate_limit_webhook_per_minute": (20, "int"),
    "oauth_pending_sessions_per_user": (5, "int"),
    "start_link_max_age_seconds": (900, "int"),
    "refresh_margin_seconds": (300, "int"),
    "refresh_lease_seconds": (60, "int"),
    "default_token_lifetime_seconds": (3600, "int"),
    "http_timeout_seconds": (10.0, "float"),
    "oauth_session_seconds": (600, "int"),
    "proxy_count": (0, "int"),  # trust no X-Forwarded-* header unless told how many proxies are in front
    "database_pool_size": (8, "int"),
    "database_prepared_statements": (True, "bool"),  # off behind PgBouncer in transaction mode
    "log_level": ("INFO", "str"),
    "account_lookup_seconds": (60, "int"),
    "webhook_lease_seconds": (300, "int"),
    "audit_retention_days": (365, "int"),
    "proxy_max_response_bytes": (10 * 1024 * 1024, "int"),
}

DEV_SECRET_FILE = "secrets.json"

#: every value of 32+ bytes in config.example.toml (shorter ones fail the length check anyway); production
#: refuses each as a secret. tests/test_config.py keeps this list and the file in step.
EXAMPLE_SECRETS = frozenset({
    "change-me-to-a-long-random-string-of-at-least-32-characters",
    "REPLACE-with-output-of-connect-service-generate-key",
    "postgresql://connect:secret@127.0.0.1:5432/connect",
})
#: a real 32-byte key has about 30 distinct byte values; fewer than this is a made-up placeholder
MIN_DISTINCT_KEY_BYTES = 16


def load_config(overrides: dict[str, Any] | None = None, environ=None, *, validate: bool = True) -> dict[str, Any]:
    """Return the validated settings dict (defaults < file < env < overrides).

    ``validate=False`` only merges and parses (no secrets required or generated, nothing
    written): for commands such as ``plugins`` that read a setting or two.
    """
    environ = os.environ if environ is None else environ
    cfg = {name: (list(d) if isinstance(d, list) else d) for name, (d, _) in SETTINGS.items()}
    path = (overrides or {}).get("config_file") or environ.get("CONNECT_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"CONNECT_CONFIG: cannot read {path}: {exc}") from None
        for key, value in data.items():
            if key not in SETTINGS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            cfg[key] = value
    for name, (_, kind) in SETTINGS.items():
        raw = environ.get(f"CONNECT_{name.upper()}")
        if raw is not None:
            cfg[name] = _parse(name, raw, kind)
    for key, value in (overrides or {}).items():
        if key == "config_file":
            continue
        cfg[key] = value
    if validate:
        _validate(cfg)
    return cfg


def _parse(name: str, raw: str, kind: str):
    if kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"CONNECT_{name.upper()}: expected an integer, got {raw!r}") from None
    if kind == "bool":
        word = raw.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"CONNECT_{name.upper()}: expected true or false, got {raw!r}")
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"CONNECT_{name.upper()}: expected a number, got {raw!r}") from None
    return raw


def _validate(cfg: dict[str, Any]) -> None:
    if cfg["env"] not in ("development", "production", "testing"):
        raise ConfigError(f"CONNECT_ENV: must be development or production, got {cfg['env']!r}")
    for name, (_, kind) in SETTINGS.items():
        value = cfg.get(name)
        if kind == "list" and isinstance(value, str):
            cfg[name] = _parse(name, value, kind)
        elif kind == "int" and value is not None and not isinstance(value, int):
            raise ConfigError(f"CONNECT_{name.upper()}: expected an integer")
        elif kind == "bool" and not isinstance(value, bool):
            raise ConfigError(f"CONNECT_{name.upper()}: expected true or false")
    cfg["instance_path"] = os.path.abspath(cfg["instance_path"])
    if cfg["env"] == "production":
        for name in ("secret_key", "encryption_keys", "public_url"):
            if not cfg.get(name):
                raise ConfigError(f"CONNECT_{name.upper()} is required in production (CONNECT_ENV=production)")
    else:
        _fill_dev_secrets(cfg)
        if not cfg.get("public_url"):
            cfg["public_url"] = "http://localhost:5000"
    parts = urlsplit(cfg["public_url"])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"CONNECT_PUBLIC_URL: must be an http(s) URL, got {cfg['public_url']!r}")
    cfg["public_url"] = cfg["public_url"].rstrip("/")
    # hosts that serve the management API besides public_url's and localhost: never an app's hostname
    cfg["management_hosts"] = [str(host).strip().lower().rstrip(".") for host in cfg["management_hosts"]
                               if str(host).strip()]
    if len(cfg["secret_key"].encode()) < 32:
        raise ConfigError("CONNECT_SECRET_KEY: must be at least 32 bytes "
                          "(`connect-service generate-secret` prints one)")
    if any(len(key.encode()) < 32 for key in cfg["secret_key_fallbacks"]):
        raise ConfigError("CONNECT_SECRET_KEY_FALLBACKS: every key must be at least 32 bytes")
    from .crypto import parse_keyring  # local import: crypto imports nothing from here

    try:
        ring = parse_keyring(cfg["encryption_keys"])
    except ValueError as exc:
        if cfg["env"] == "production" and any(key in EXAMPLE_SECRETS for key in cfg["encryption_keys"]):
            raise ConfigError("CONNECT_ENCRYPTION_KEYS: is the placeholder from config.example.toml "
                              "(`connect-service generate-key` prints a key)") from None
        raise ConfigError(f"CONNECT_ENCRYPTION_KEYS: {exc}") from None
    if cfg["env"] == "production":
        _refuse_placeholders(cfg, ring)
    from .hosts import parse_private_host  # local import, as for crypto: hosts imports nothing from here

    for entry in cfg["allowed_private_hosts"]:
        try:
            parse_private_host(entry)
        except ValueError:
            raise ConfigError("CONNECT_ALLOWED_PRIVATE_HOSTS: each entry must be a host, optionally with a "
                              "port (127.0.0.1:9000)") from None
    if not cfg.get("database_url"):
        cfg["database_url"] = "sqlite:///" + os.path.join(cfg["instance_path"], "connect.db")
    _check_database_url(cfg["database_url"])
    if cfg["env"] == "production":
        if parts.scheme == "http":
            log.warning("CONNECT_PUBLIC_URL is plain http: cookies are not Secure")
        if cfg["database_url"].startswith("sqlite"):
            log.warning("SQLite in production: use PostgreSQL for more than one host")


def _refuse_placeholders(cfg: dict[str, Any], ring: list[tuple[str, bytes]]) -> None:
    if cfg["secret_key"] in EXAMPLE_SECRETS:
        raise ConfigError("CONNECT_SECRET_KEY: is the placeholder from config.example.toml "
                          "(`connect-service generate-secret` prints one)")
    for index, (_, key) in enumerate(ring):
        if len(set(key)) < MIN_DISTINCT_KEY_BYTES:
            raise ConfigError(f"CONNECT_ENCRYPTION_KEYS: key #{index + 1} is a placeholder, not a random key "
                              "(`connect-service generate-key` prints one)")


def _check_database_url(url: str) -> None:
    """The URL's shape only (never echoed: it may hold a password); reaching it is checked at start-up."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise ConfigError("CONNECT_DATABASE_URL: must start with sqlite:/// or postgresql://")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError("CONNECT_DATABASE_URL: malformed URL (check the host and port)") from None
    if scheme != "sqlite" and (not parts.hostname or not parts.path.strip("/")):
        raise ConfigError("CONNECT_DATABASE_URL: must name a host and a database (postgresql://user@host:5432/db)")
    if scheme == "sqlite" and not parts.path.strip("/"):
        raise ConfigError("CONNECT_DATABASE_URL: must name a file (sqlite:////absolute/path.db)")


def generate_secret() -> str:
    """A fresh ``secret_key``: 48 random bytes, base64url (64 characters)."""
    return secrets.token_urlsafe(48)


def _fill_dev_secrets(cfg: dict[str, Any]) -> None:
    """Generate missing secrets once into the instance folder, atomically.

    Several gunicorn workers may start together: each writes its candidate to
    a temp file and ``os.link``s it into place, which fails if another won;
    everybody then reads the winner's file.
    """
    if cfg.get("secret_key") and cfg.get("encryption_keys"):
        return
    os.makedirs(cfg["instance_path"], exist_ok=True)
    target = os.path.join(cfg["instance_path"], DEV_SECRET_FILE)
    if not os.path.exists(target):
        candidate = {"secret_key": generate_secret(), "encryption_keys": [generate_key()]}
        fd, tmp = tempfile.mkstemp(dir=cfg["instance_path"], prefix=".secrets-")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(candidate, fh)
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, target)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    with open(target) as fh:
        stored = json.load(fh)
    cfg["secret_key"] = cfg.get("secret_key") or stored["secret_key"]
    cfg["encryption_keys"] = cfg.get("encryption_keys") or stored["encryption_keys"]


def generate_key() -> str:
    """A fresh 256-bit encryption key in the format ``CONNECT_ENCRYPTION_KEYS`` takes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
