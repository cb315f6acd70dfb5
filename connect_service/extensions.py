"""One accessor per extension the factory attaches to the Flask app.

These are the only readers of ``current_app.config["CONNECT"]`` and
``current_app.extensions``: everything else asks here (as flaskr asks ``get_db()``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app

if TYPE_CHECKING:  # type names only: crypto and plugins sit beside this module, not below it
    from .crypto import Keyring
    from .plugins import Registry

KEYRING = "connect_keyring"
REGISTRY = "connect_registry"


def settings() -> dict[str, Any]:
    """The validated settings of the running app (``config.load_config``)."""
    return current_app.config["CONNECT"]


def keyring() -> Keyring:
    """The encryption keyring (``crypto.Keyring``) built from ``encryption_keys``."""
    return current_app.extensions[KEYRING]


def registry() -> Registry:
    """The connection-type registry the plugin manager built at start-up."""
    return current_app.extensions[REGISTRY]
