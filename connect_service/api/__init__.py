"""flask-smorest API: one blueprint per resource, one error shape."""
from __future__ import annotations

import marshmallow as ma
from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint
from webargs.flaskparser import FlaskParser

from .. import errors


class ErrorDetailSchema(ma.Schema):
    code = ma.fields.String(required=True, metadata={"example": "bad_request"})
    message = ma.fields.String(required=True, metadata={"example": "Bad Request"})
    details = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(),
                             metadata={"example": {"config.api_key": "cannot be blank"}})


class ErrorSchema(ma.Schema):
    error = ma.fields.Nested(ErrorDetailSchema, required=True)


class ArgumentsParser(FlaskParser):
    """Bad query arguments are a 400 (documented and answered), like every other bad input."""

    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(_Blueprint):
    """flask-smorest's Blueprint whose ``arguments`` answer (and document) 400, not 422."""

    ARGUMENTS_PARSER = ArgumentsParser()


class Api(_Api):
    """flask-smorest's Api with the service's error shape everywhere."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return errors.handle_http_exception(error)


#: modules under connect_service.api that define ``blp``; registered in this order
BLUEPRINT_MODULES = [
    "apps", "access_keys", "connect", "connection_types", "credentials", "connections", "oauth",
    "accounts", "check_host",
]


def init_app(app) -> Api:
    import importlib
    import importlib.util

    app.config.setdefault("API_TITLE", "connect-service")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "/docs")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", "https://cdn.jsdelivr.net/npm/swagger-ui-dist/")
    api = Api(app, spec_kwargs={"components": {"securitySchemes": {
        "accessKey": {"type": "http", "scheme": "bearer", "description": "Access Key `ak_…`"},
        "connectToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                         "description": "Connect token from POST /v1/connect/tokens"},
    }}})
    for name in BLUEPRINT_MODULES:
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            continue
        api.register_blueprint(importlib.import_module(f"{__name__}.{name}").blp)
    return api
