"""The test client that checks every JSON answer against the served OpenAPI document.

Part of :mod:`connect_service.testing` (which re-exports :class:`ContractClient`,
:func:`contract` and :func:`check_response`); kept apart so that module stays one screenful.
"""
from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound


class ContractClient(FlaskClient):
    """Flask's test client, checking every JSON response against the served OpenAPI document.

    A response whose operation is documented must match the schema declared
    for its status (an undeclared status fails too); undocumented paths and
    methods (``/health``, the hosted page, a 405) and 500s (a bug other
    assertions report) are not checked. Set ``check_contract = False`` on a
    client to switch it off.
    """

    check_contract = True

    def open(self, *args: Any, **kwargs: Any):
        response = super().open(*args, **kwargs)
        if self.check_contract and response.mimetype == "application/json" and response.status_code != 500:
            check_response(self.application, response)
        return response


#: contracts by document text: each test builds an app, apps of one plugin set serve one document (0.6 s to build)
_CONTRACTS: dict[str, OpenAPI] = {}


def contract(app) -> OpenAPI:
    """The app's served ``/openapi.json`` as an openapi-core ``OpenAPI`` (built once per distinct document)."""
    cached = app.extensions.get("connect_service.testing.contract")
    if cached is None:
        document = FlaskClient(app, app.response_class).get("/openapi.json").get_json()
        key = json.dumps(document, sort_keys=True)
        cached = _CONTRACTS.get(key)
        if cached is None:
            if len(_CONTRACTS) >= 16:
                _CONTRACTS.clear()
            cached = _CONTRACTS[key] = OpenAPI.from_dict(document)
        app.extensions["connect_service.testing.contract"] = cached
    return cached


class _SentRequest(WerkzeugOpenAPIRequest):
    """The request a test response answered, as openapi-core reads it (its body stream is already consumed)."""

    def __init__(self, request):
        super().__init__(request)
        self.parameters = RequestParameters(query=request.args, header=request.headers, cookie={})

    @property
    def body(self) -> bytes:
        return b""


def check_response(app, response) -> None:
    """Fail (``AssertionError``) when ``response`` does not match what its operation declares for its status."""
    request = _SentRequest(response.request)
    try:
        contract(app).validate_response(request, WerkzeugOpenAPIResponse(response))
    except (PathNotFound, OperationNotFound):
        return
    except Exception as exc:  # openapi-core's validation errors: name the call and every cause
        causes = "; ".join(str(c) for c in getattr(exc, "schema_errors", None) or [exc.__cause__] if c)
        body = response.get_data(as_text=True)[:600]
        raise AssertionError(f"{response.request.method} {response.request.path} answered {response.status_code} "
                             f"outside its OpenAPI contract: {exc} {causes}\nbody: {body}") from exc
