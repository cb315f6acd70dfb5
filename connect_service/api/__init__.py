"""flask-smorest API: one blueprint per resource, one error shape, one body parser.

Every view that takes a body declares it with ``@blp.arguments(Schema)``; the
rules every body follows (blank, media type, strict JSON, NUL characters,
lone surrogates, depth, field errors as a 400 naming each field) live in :class:`ArgumentsParser`, once.
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

import flask
import marshmallow as ma
from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint
from webargs.flaskparser import FlaskParser

from .. import errors, strict_json
from . import docs
from .openapi import declared_rules, finish_document, nullable_enums, operation_doc

BLANK = {"input": "cannot be blank"}


class ErrorDetailSchema(ma.Schema):
    code = ma.fields.String(required=True, metadata={"example": "bad_request"})
    message = ma.fields.String(required=True, metadata={"example": "Bad Request"})
    details = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(),
                             metadata={"example": {"config.api_key": "cannot be blank"}})


class ErrorSchema(ma.Schema):
    error = ma.fields.Nested(ErrorDetailSchema, required=True)


class OptionalBody:
    """Mix into a body schema whose body may be left out: an absent or empty body loads as ``{}``.

    Declare the view with ``@blp.arguments(Schema, required=False)`` so the docs agree.
    """


def json_body(request, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or an error naming what is wrong with it.

    Blank (absent, empty, whitespace, ``null``, ``{}``) is a 400 unless
    ``optional`` (then an absent or whitespace body is ``{}``); another media
    type is a 415. The JSON must be strict (:mod:`connect_service.strict_json`):
    no NUL characters (PostgreSQL text cannot hold them), no lone surrogates,
    no ``NaN``/``Infinity``/out-of-range numbers, at most 32 levels deep; each
    offence is a 400 naming its field, so nothing downstream meets such a value.
    """
    return json_object(request.get_data(cache=True), request.mimetype or "", optional)


def json_object(raw: bytes, mimetype: str, optional: bool = False) -> dict[str, Any]:
    """:func:`json_body` of a body already read (``mimetype``: the Content-Type without parameters)."""
    if not raw.strip():
        if optional:
            return {}
        raise errors.BadRequest(BLANK)
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise errors.UnsupportedMediaType({"input": "send the body as application/json"})
    try:
        data = strict_json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.BadRequest({"input": "is not valid JSON"}) from None
    except RecursionError:
        raise errors.BadRequest({"input": strict_json.TOO_DEEP}) from None
    if data is None or data == {}:
        raise errors.BadRequest(BLANK)
    if not isinstance(data, dict):
        raise errors.BadRequest({"input": "must be a JSON object"})
    problems = strict_json.problems(data)
    if problems:
        raise errors.BadRequest(problems)
    return data


class ArgumentsParser(FlaskParser):
    """webargs parser behind ``@blp.arguments``: the body rules, and every bad argument a 400."""

    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req, schema):
        return json_body(req, optional=isinstance(schema, OptionalBody))

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        messages = error.messages
        if isinstance(messages, Mapping) and len(messages) == 1 and next(iter(messages)) in self.__location_map__:
            messages = next(iter(messages.values()))  # webargs files messages under the location ("json", "query")
        raise errors.invalid_input(messages)


class Blueprint(_Blueprint):
    """flask-smorest's Blueprint whose ``arguments`` follow :class:`ArgumentsParser` (and document 400, not 422)."""

    ARGUMENTS_PARSER = ArgumentsParser()

    def arguments(self, schema, *args: Any, **kwargs: Any):
        """flask-smorest's ``arguments``, given a schema instance made once: webargs instantiates a schema
        class anew on every request (a deepcopy of every declared field)."""
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)

    def operation(self, operation_id: str, *statuses: int, security: list | None = None, **extra: Any):
        """Document a view's operationId, security and error statuses (``api/openapi.py``) in one decorator."""
        return self.doc(**operation_doc(operation_id, statuses, security, **extra))


class Api(_Api):
    """flask-smorest's Api with the service's error shape everywhere."""

    ERROR_SCHEMA = ErrorSchema
    #: each operation lists its own error statuses (``Blueprint.operation``), so no catch-all ``default``
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _openapi_json(self):
        """The served document, with the rules only the whole document shows (``openapi.finish_document``)."""
        return flask.current_app.response_class(json.dumps(finish_document(self.spec.to_dict()), indent=2),
                                                mimetype="application/json")

    def _register_pagination_header(self):
        """Pagination here is a cursor in the body: no ``PaginationMetadata`` header component."""

    def handle_http_exception(self, error):
        return errors.handle_http_exception(error)


#: modules under connect_service.api that define ``blp``; registered in this order
BLUEPRINT_MODULES = [
    "apps", "access_keys", "connect", "connection_types", "credentials", "connections", "oauth",
    "accounts", "check_host", "webhooks", "audit", "proxy",
]


def init_app(app) -> Api:
    app.config.setdefault("API_TITLE", "connect-service")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.1.0")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    api = Api(app, spec_kwargs={"components": {"securitySchemes": {
        "accessKey": {"type": "http", "scheme": "bearer", "description": "Access Key `ak_…`"},
        "connectToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                         "description": "Connect token from POST /v1/connect/tokens"},
    }}})
    api.ma_plugin.converter.add_attribute_function(nullable_enums)
    api.ma_plugin.converter.add_attribute_function(declared_rules)
    for name in BLUEPRINT_MODULES:  # imported here, not at the top: each of them imports Blueprint from this module
        api.register_blueprint(importlib.import_module(f"{__name__}.{name}").blp)
    app.register_blueprint(docs.blp)  # /docs: the docs UI from the pinned swagger-ui-py package, CSP 'self'
    return api
