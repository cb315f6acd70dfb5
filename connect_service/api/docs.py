"""``/docs``: the API docs UI (Swagger UI) served from a pinned Python package, never from a CDN.

The files come from ``swagger-ui-py`` (pinned in ``pyproject.toml``; Swagger UI 5, which reads the
OpenAPI 3.1 document) and
our own start-up script; the page's CSP allows only ``'self'`` (and inline
``data:`` images for the stylesheet's icons), so nothing the page loads or
sends can leave the service (issue 12 item 6). Swagger UI's validator badge,
which would send the spec to validator.swagger.io, is switched off.
"""
from __future__ import annotations

import importlib.util
import pathlib

from flask import Blueprint, Response, send_from_directory, url_for

from .. import errors

#: the package's static folder, found without importing it (its ``__init__`` loads framework handlers)
swagger_ui_path = pathlib.Path(importlib.util.find_spec("swagger_ui").submodule_search_locations[0]) / "static"
#: the Swagger UI files this page uses (everything else in the package stays unserved)
UI_FILES = {"swagger-ui.css", "swagger-ui-bundle.js"}
#: 'self' only; images may also be data: URIs (Swagger UI's CSS icons), which are inline and fetch nothing
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

blp = Blueprint("docs", __name__, static_folder="static", static_url_path="/docs/static")

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>connect-service API</title>
  <link rel="stylesheet" href="{css}">
</head>
<body>
  <div id="swagger-ui" data-spec="{spec}"></div>
  <script src="{bundle}"></script>
  <script src="{start}"></script>
</body>
</html>
"""


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@blp.route("/docs")
def page():
    html = PAGE.format(css=url_for("docs.ui_file", filename="swagger-ui.css"),
                       bundle=url_for("docs.ui_file", filename="swagger-ui-bundle.js"),
                       start=url_for("docs.static", filename="docs.js"), spec=url_for("api-docs.openapi_json"))
    return _headers(Response(html, mimetype="text/html"))


@blp.route("/docs/ui/<path:filename>")
def ui_file(filename: str):
    if filename not in UI_FILES:
        raise errors.NotFound()
    return _headers(send_from_directory(str(swagger_ui_path), filename, max_age=3600))


@blp.after_request
def _all_headers(response: Response) -> Response:
    return _headers(response)
