"""The hosted page's config forms: form fields to a config, and API error details back to field messages."""
from __future__ import annotations

from typing import Any

from .. import strict_json
from .render import format_error


def form_to_config(fields: list[dict], form) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Form fields → (config, non-secret values to re-show, field errors found before the schema runs)."""
    config: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for f in fields:
        name, key = f["name"], "config." + f["name"]
        if f["type"] == "boolean":
            config[name] = kept[name] = form.get(key) in ("true", "on", "1")
            continue
        raw = form.get(key, "")
        if not f["secret"]:
            kept[name] = raw
        if not raw.strip():
            if f["required"]:
                problems[name] = "is required"
            continue
        if f["type"] in ("object", "list"):
            try:
                value = strict_json.loads(raw)
            except ValueError:
                problems[name] = "must be valid JSON"
                continue
            except RecursionError:
                problems[name] = strict_json.TOO_DEEP
                continue
            bad = strict_json.problems(value)
            if bad:
                problems[name] = next(iter(bad.values()))
                continue
            config[name] = value
            continue
        problem = strict_json.string_problem(raw)  # as the API refuses it in a JSON body
        if problem:
            problems[name] = problem
            continue
        config[name] = raw
    return config, kept, problems


def split_details(details: dict[str, str], fields: list[dict]) -> dict[str, str]:
    """API error details → ``{field name: sentence, "_form": sentence}`` for the page."""
    labels = {f["name"]: f["label"] for f in fields}
    out: dict[str, str] = {}
    for path, message in details.items():
        name = path[len("config."):].split(".", 1)[0] if path.startswith("config.") else None
        if name in labels:
            out.setdefault(name, format_error(labels[name], message))
        elif path == "config" and message == "cannot be blank":
            out.setdefault("_form", "Fill in at least one field.")
        else:
            out.setdefault("_form", format_error(path.replace("_", " ").capitalize(), message))
    return out


