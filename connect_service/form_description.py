"""A marshmallow schema described as a form: what the hosted page renders and ``GET /v1/connection-types`` lists.

Exported as ``connect_service.form_description``.
"""
from __future__ import annotations

from typing import Any

import marshmallow
from marshmallow import Schema, validate

__all__ = ["form_description"]


# (marshmallow field class, form "type"); first match wins, so subclasses come before their bases
_FIELD_TYPES: list[tuple[type[marshmallow.fields.Field], str]] = [
    (marshmallow.fields.Url, "url"),
    (marshmallow.fields.Email, "email"),
    (marshmallow.fields.Boolean, "boolean"),
    (marshmallow.fields.Integer, "integer"),
    (marshmallow.fields.Number, "number"),
    (marshmallow.fields.Mapping, "object"),
    (marshmallow.fields.Nested, "object"),
    (marshmallow.fields.List, "list"),
    (marshmallow.fields.String, "string"),
]

_INPUTS = {"url": "url", "email": "email", "boolean": "checkbox", "integer": "number", "number": "number",
           "object": "json", "list": "json", "string": "text"}


def form_description(schema: type[Schema] | Schema) -> dict[str, Any]:
    """Describe a marshmallow schema as a form the hosted page and API clients render.

    Returns ``{"fields": [field, ...]}`` in declaration order, one per loadable
    field, each with:

    - ``name``: the key in ``config``;
    - ``label``: ``metadata["label"]``, else the name made readable;
    - ``type``: ``string`` | ``url`` | ``email`` | ``integer`` | ``number`` |
      ``boolean`` | ``object`` | ``list`` (what the value is);
    - ``input``: ``text`` | ``password`` | ``url`` | ``email`` | ``number`` |
      ``checkbox`` | ``select`` | ``json`` (how to ask for it; every secret
      scalar is ``password``);
    - ``secret``: never shown back once stored;
    - ``required``;

    and, when they apply: ``help``, ``placeholder`` (from metadata),
    ``choices`` (a ``OneOf`` validator), ``default`` (a non-callable
    ``load_default``), ``min``/``max`` (a ``Range``), ``max_length`` (a
    ``Length``).
    """
    instance = schema() if isinstance(schema, type) else schema
    out = []
    for name, f in instance.fields.items():
        if f.dump_only:
            continue
        kind = next((label for cls, label in _FIELD_TYPES if isinstance(f, cls)), "string")
        secret = bool(f.metadata.get("secret"))
        entry: dict[str, Any] = {
            "name": f.data_key or name,
            "label": f.metadata.get("label") or name.replace("_", " ").capitalize(),
            "type": kind,
            "input": _INPUTS[kind],
            "secret": secret,
            "required": bool(f.required),
        }
        for key in ("help", "placeholder"):
            if f.metadata.get(key):
                entry[key] = f.metadata[key]
        for v in f.validators:
            if isinstance(v, validate.OneOf):
                entry["choices"] = list(v.choices)
                entry["input"] = "select"
            elif isinstance(v, validate.Range):
                if v.min is not None:
                    entry["min"] = v.min
                if v.max is not None:
                    entry["max"] = v.max
            elif isinstance(v, validate.Length) and v.max is not None:
                entry["max_length"] = v.max
        if secret and kind not in ("object", "list"):
            entry["input"] = "password"
        default = f.load_default
        if default is not marshmallow.missing and not callable(default):
            entry["default"] = default
        out.append(entry)
    return {"fields": out}
