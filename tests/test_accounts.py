"""The action-account core: the ActionAccountType contract, the facade's value types, webhook values."""
from __future__ import annotations

import pytest

from connect_service import Account, ActionAccountType, ConnectionType, fields
from connect_service.account_context import user_ref
from connect_service.accounts import sign_webhook_value, verify_webhook_value
from connect_service.db import database
from marshmallow import Schema


class Spec(Schema):
    app = fields.NonBlank(required=True)


class Keyed(ActionAccountType):
    name = "tests.accounts.Keyed"
    title = "Keyed"
    connector_name = "keyed"
    spec_schema = Spec

    def account_key(self, spec):
        return spec["app"]


def test_action_account_types_subclass_the_base():
    class Plain(ConnectionType):
        name = "tests.accounts.Plain"
        title = "Plain"
        auth = "action_account"
        connector_name = "plain"

    with pytest.raises(TypeError, match="action_account types subclass ActionAccountType"):
        Plain.check_definition()
    Keyed.check_definition()
    assert Keyed.auth == "action_account" and Keyed.describe()["auth"] == "action_account"

    class BadSpec(Keyed):
        name = "tests.accounts.BadSpec"
        spec_schema = dict

    with pytest.raises(TypeError, match="`spec_schema` must be a marshmallow Schema subclass"):
        BadSpec.check_definition()


def test_the_type_judges_its_spec_and_key():
    assert Keyed.spec_errors({"app": "gmail", "credential_id": "ccfg_x"}) == {}  # unknown keys pass
    assert Keyed.spec_errors({}) == {"app": ["Missing data for required field."]}
    assert Keyed.requirement_key({"app": "gmail"}) == "gmail"
    assert Keyed.requirement_key({"app": " "}) is None  # no longer loads: matches no account
    assert Keyed.requirement_key(None) is None

    class Any_(ActionAccountType):
        name = "tests.accounts.Any"
        title = "Any"
        connector_name = "any"

    assert Any_.requirement_key({"whatever": 1}) == ""  # default: one key for every account of the type


def test_account_values_are_checked():
    assert Account("acc_1").status == "active"
    with pytest.raises(ValueError, match="non-empty string"):
        Account("")
    with pytest.raises(ValueError, match="'active' or 'error'"):
        Account("acc_1", status="dead")


def test_user_ref_is_stable_opaque_and_per_app():
    ref = user_ref("app-1", "jane@example.com")
    assert ref == user_ref("app-1", "jane@example.com") and ref.startswith("cs-") and len(ref) == 67
    assert "jane" not in ref and ref != user_ref("app-2", "jane@example.com")


def test_webhook_values_are_bound_to_their_connector(connect):
    with connect.app.app_context(), database.connection_context():
        value = sign_webhook_value("keyed", "app-1", "jane", "req-1")
        assert verify_webhook_value("keyed", value) == {"a": "app-1", "u": "jane", "r": "req-1"}
        assert verify_webhook_value("other", value) is None
        assert verify_webhook_value("keyed", value[:-2] + "xx") is None
        assert "jane" not in value and "app-1" not in value
