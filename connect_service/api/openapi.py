"""The OpenAPI side of every operation: operationId, security and each error status it can return.

A view declares all of it with one decorator, ``@blp.operation(...)`` (see
:meth:`connect_service.api.Blueprint.operation`), which calls :func:`operation_doc`::

    @blp.operation("createApp", 400, 401, 409, security=ACCESS_KEY)

Every error status is documented with the ``Error`` schema and an example;
the seeds give the examples for 400, 401 and 404 (seed 000), the others use
the same shape. 404 (a host that does not serve the operation) and 503
(database unavailable) are added to every operation.
"""
from __future__ import annotations

from typing import Any

import marshmallow as ma

from ..errors import error_code, reason_phrase
from ..fields import NO_NUL

ACCESS_KEY: list[dict[str, list]] = [{"accessKey": []}]
CONNECT_TOKEN: list[dict[str, list]] = [{"connectToken": []}]
PUBLIC: list[dict[str, list]] = []

#: error statuses an operation may declare
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 415, 429, 502, 503)

#: every operation: a query argument may hold a NUL (refused on every route, read or not: PostgreSQL text cannot
#: hold one), the host may not serve the API (an app's hostname serves only its own routes), the database may be
#: unavailable
ALWAYS = (400, 404, 503)

#: ``details`` of each status's example (seed 000 gives 400's; 401 and 404 have none there)
EXAMPLE_DETAILS: dict[int, dict[str, str]] = {
    400: {"input": "cannot be blank"},
    409: {"input": "conflicts with the current state"},
    413: {"input": "must be at most 1048576 bytes"},
    415: {"input": "send the body as application/json"},
    429: {"input": "at most 10 requests per minute; retry in 30 s"},
    502: {"provider": "the provider did not answer"},
    503: {"database": "is unavailable, retry shortly"},
}

DESCRIPTIONS: dict[int, str] = {
    400: "the body, a parameter or the state is invalid; `details` names each field",
    401: "missing or invalid credentials",
    403: "the caller may not do this",
    404: "the resource does not exist (or belongs to another organization), or this host does not serve it",
    409: "conflicts with the current state",
    413: "the body is too large",
    415: "the body is not `application/json`",
    429: "too many requests; `Retry-After` says when to retry",
    502: "the provider or platform failed",
    503: "the database is unavailable; retry shortly",
}


def error_example(status: int) -> dict[str, Any]:
    """The error body of ``status`` as the service writes it (seed 000's shape)."""
    error: dict[str, Any] = {"code": error_code(status), "message": reason_phrase(status)}
    if status in EXAMPLE_DETAILS:
        error["details"] = EXAMPLE_DETAILS[status]
    return {"error": error}


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of one error status: the ``Error`` schema and an example."""
    response: dict[str, Any] = {
        "description": description or DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"},
                                         "example": error_example(status)}},
    }
    if status == 429:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                               "description": "seconds until a retry may succeed"}}
    return response


def operation_doc(operation_id: str, statuses: tuple[int, ...], security: list | None = None,
                  **extra: Any) -> dict[str, Any]:
    """The keyword arguments of ``Blueprint.doc`` for one operation (see the module docstring)."""
    unknown = set(statuses) - set(ERROR_STATUSES)
    if unknown:
        raise ValueError(f"{operation_id}: {sorted(unknown)} are not error statuses of this API")
    doc: dict[str, Any] = {"operationId": operation_id,
                           "responses": {str(s): error_response(s) for s in sorted({*statuses, *ALWAYS})}}
    doc["responses"].update(extra.pop("responses", {}))  # a view's own description of a status wins
    if security is not None:
        doc["security"] = security
    doc.update(extra)
    return doc




def nullable_enums(self, field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """apispec attribute function: a nullable enum lists ``null`` among its values and has no ``type``.

    With ``type: [string, "null"]`` beside the enum, generated clients make one enum class per spelling
    of null; the enum alone says the same to every validator.
    """
    if field.allow_none and "enum" in ret:
        ret.pop("type", None)
    return {}


def declared_rules(self, field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """apispec attribute function: what a field's class enforces (its ``openapi`` keywords), and no NUL in strings.

    A validator's own ``pattern`` (``validate.Regexp``) is kept: it is the stricter rule. Free-form ``Raw``
    values that declare a string ``type`` get the NUL rule too.
    """
    extra = dict(getattr(field, "openapi", None) or {})
    is_string = isinstance(field, ma.fields.String) or ret.get("type") == "string"
    if is_string and "enum" not in ret:
        extra.setdefault("pattern", NO_NUL)
    if "pattern" in ret:
        extra.pop("pattern", None)
    if "minLength" in ret and "minLength" in extra:
        extra["minLength"] = max(ret["minLength"], extra["minLength"])
    return extra


def finish_document(document: dict[str, Any]) -> dict[str, Any]:
    """Rules the field converters cannot see: a body is never ``{}``, so its schema has ``minProperties: 1``.

    (``json_body`` answers 400 to ``{}``; a body declared optional, ``required=False``, may only be left out.)
    """
    schemas = document.get("components", {}).get("schemas", {})
    for item in document.get("paths", {}).values():
        for op in item.values():
            body = op.get("requestBody") if isinstance(op, dict) else None
            if not body:
                continue
            for content in body.get("content", {}).values():
                ref = content.get("schema", {}).get("$ref", "")
                name = ref.rsplit("/", 1)[-1]
                if name in schemas and schemas[name].get("type") == "object":
                    schemas[name]["minProperties"] = 1
    return document
