"""connect-service: let an app's end users hand it the credentials its workflows need.

The public plugin API is re-exported here::

    from connect_service import ConnectionType, OAuth2Provider, hookimpl, fields

A ``validate`` that calls the service being connected uses ``outbound_client()``
(a ``GuardedClient`` built from the service's settings) and catches ``OutboundError``.

Action-account plugins (``docs/plugins.md``, "Action-account types and their
facade") also use ``ActionAccountType``, ``AccountContext``, ``PlatformCredential``, ``TokenCache``,
``Account``, ``LinkedAccount``, ``PlatformError`` and ``OutboundError``.
"""
from . import fields
from .action_account_type import ActionAccountType
from .connection_types import ConnectionType, ValidationError
from .form_description import form_description
from .oauth2_provider import OAuth2Provider, ProviderError, basic_authorization
from .hookspecs import hookimpl
from .http import GuardedClient, OutboundError
from .outbound import outbound_client
# after the light base classes: the facade pulls in the storage and OAuth modules
from .account_context import (Account, AccountContext, LinkedAccount, PlatformCredential,  # noqa: E402
                              PlatformError, TokenCache)

__version__ = "0.1.0"

__all__ = [
    "ConnectionType", "OAuth2Provider", "ProviderError", "ValidationError", "form_description",
    "hookimpl", "fields", "create_app", "__version__", "basic_authorization",
    "ActionAccountType", "AccountContext", "Account", "LinkedAccount", "PlatformCredential", "PlatformError",
    "TokenCache", "OutboundError", "GuardedClient", "outbound_client",
]


def create_app(config=None, plugins=()):
    """Build the WSGI application (see :func:`connect_service.app.create_app`)."""
    # lazy: plugins import this package, and the factory imports every plugin-facing module
    from .app import create_app as _create_app

    return _create_app(config, plugins)
