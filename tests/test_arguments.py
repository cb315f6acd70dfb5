"""The one body parser behind ``@blp.arguments`` (connect_service.api.ArgumentsParser).

A small blueprint on a bare Flask app exercises each body rule once; the real
routes are covered by their own tests (test_errors, test_connect_api, ...).
"""
import marshmallow as ma
import pytest
from flask import Flask
from flask.views import MethodView

from connect_service import errors
from connect_service.api import Api, Blueprint, OptionalBody
from connect_service.api.common import resolve_path


class Inner(ma.Schema):
    port = ma.fields.Integer(required=True)


class ThingSchema(ma.Schema):
    name = ma.fields.String(required=True)
    inner = ma.fields.Nested(Inner)
    tags = ma.fields.List(ma.fields.String())


class OptionalSchema(OptionalBody, ma.Schema):
    name = ma.fields.String(load_default="")


def _load_thing(thing_id):
    if thing_id != "known":
        raise errors.NotFound()
    return {"id": thing_id}


@pytest.fixture
def client():
    app = Flask(__name__)
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    errors.init_app(app)
    api = Api(app)
    blp = Blueprint("things", __name__, url_prefix="/things")

    @blp.route("")
    class Things(MethodView):
        @blp.arguments(ThingSchema)
        def post(self, data):
            return {"got": data}

        @blp.arguments(OptionalSchema, required=False)
        def put(self, data):
            return {"got": data}

    @blp.route("/<thing_id>")
    class ThingItem(MethodView):
        decorators = [resolve_path(thing_id=_load_thing)]

        @blp.arguments(ThingSchema)
        def patch(self, data, thing):
            return {"got": data, "thing": thing}

    api.register_blueprint(blp)
    app.testing = True
    return app.test_client()


def _details(r):
    return r.get_json()["error"]["details"]


@pytest.mark.parametrize("body", [None, b"", b"  \n", b"null", b"{}"])
def test_blank_body_is_input_cannot_be_blank(client, body):
    r = client.post("/things", data=body, content_type="application/json")
    assert r.status_code == 400 and _details(r) == {"input": "cannot be blank"}


def test_other_media_type_is_415(client):
    r = client.post("/things", data="name=x", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415 and r.get_json()["error"]["code"] == "unsupported_media_type"


def test_invalid_json_and_non_object(client):
    r = client.post("/things", data=b"{nope", content_type="application/json")
    assert r.status_code == 400 and _details(r) == {"input": "is not valid JSON"}
    r = client.post("/things", json=[1, 2])
    assert r.status_code == 400 and _details(r) == {"input": "must be a JSON object"}


def test_nul_is_refused_naming_the_field_path(client):
    r = client.post("/things", json={"name": "ok", "tags": ["a", "b\x00"], "inner": {"port": 1}})
    assert r.status_code == 400 and _details(r) == {"tags.1": "must not contain NUL characters"}


def test_schema_errors_are_400_flattened_with_dots(client):
    r = client.post("/things", json={"inner": {"port": "x"}, "extra": 1})
    assert r.status_code == 400
    assert _details(r) == {"name": "is required", "inner.port": "must be an integer",
                           "extra": "is not a known field"}


def test_valid_body_reaches_the_view(client):
    r = client.post("/things", json={"name": "a", "inner": {"port": 2}})
    assert r.status_code == 200 and r.get_json() == {"got": {"name": "a", "inner": {"port": 2}}}


def test_optional_body_may_be_left_out_but_not_blank_json(client):
    assert client.put("/things").get_json() == {"got": {"name": ""}}
    assert client.put("/things", json={"name": "n"}).get_json() == {"got": {"name": "n"}}
    r = client.put("/things", json={})
    assert r.status_code == 400 and _details(r) == {"input": "cannot be blank"}


def test_path_is_resolved_before_the_body_is_judged(client):
    assert client.patch("/things/unknown", json={}).status_code == 404
    assert client.patch("/things/unknown", data=b"{nope", content_type="application/json").status_code == 404
    r = client.patch("/things/known", json={"name": "a"})
    assert r.get_json() == {"got": {"name": "a"}, "thing": {"id": "known"}}


# --- the same rules on real routes ----------------------------------------------------------------

def test_access_key_body_is_optional_but_never_blank_json(connect):
    r = connect.client.post("/v1/access-keys", headers=connect.auth)
    assert r.status_code == 201 and r.get_json()["name"] == ""
    r = connect.client.post("/v1/access-keys", json={}, headers=connect.auth)
    assert r.status_code == 400 and _details(r) == {"input": "cannot be blank"}


@pytest.mark.parametrize("method, path", [
    ("patch", "/v1/apps/no-such-app"),
    ("post", "/v1/apps/no-such-app/versions"),
    ("patch", "/v1/credentials/no-such-credential"),
    ("post", "/v1/connections/no-such-connection/check-host"),
])
def test_unknown_path_ids_are_404_whatever_the_body(connect, method, path):
    r = getattr(connect.client, method)(path, data=b"{nope", content_type="application/json", headers=connect.auth)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
