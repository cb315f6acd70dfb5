"""Strict JSON in and out: what a request may carry, and what a response may hold.

Python's ``json`` module is lenient where the service must not be:

- it reads ``NaN``, ``Infinity`` and ``1e400`` (a float that overflows to
  infinity) and writes them back as tokens no other JSON parser accepts;
- it reads ``"\\ud800"`` as a lone surrogate, a ``str`` that cannot be
  encoded as UTF-8 (a database driver, a JWT library or a template then
  fails: a 500, or a stored row that breaks every later request);
- it nests as deep as the interpreter's stack, and code that walks the value
  later (marshmallow, our own checks) can raise ``RecursionError``.

:func:`loads` reads a request body and :func:`problems` says what is wrong
with it, by field path, so the API answers 400 naming the field. Integers are
limited to the range a JSON number keeps exactly everywhere (I-JSON, RFC 7493:
±(2**53 − 1)), which also keeps them inside every database integer column.
:func:`sanitise` makes a value from elsewhere (a provider's token response)
safe to store and emit: non-finite numbers become ``None``, lone surrogates
U+FFFD, anything nested deeper than :data:`MAX_DEPTH` ``None``.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from flask.json.provider import DefaultJSONProvider

#: the deepest nesting accepted (``{"a": {"b": 1}}`` is depth 2)
MAX_DEPTH = 32
#: I-JSON's interoperable integer range
MAX_INT = 2 ** 53 - 1
_SURROGATES = re.compile("[\ud800-\udfff]")  # json.loads joins valid pairs, so any left are lone
#: at most this many problems are reported
MAX_PROBLEMS = 10

NUL = "must not contain NUL characters"
SURROGATE = "must be valid Unicode (no lone surrogates)"
TOO_DEEP = "is nested too deeply"  # more than MAX_DEPTH levels
BAD_NUMBER = "must be a finite number within ±(2^53 − 1)"


class _BadNumber:
    """Stands in for ``NaN``, ``Infinity``, an overflowing float or a huge integer until the path is known."""

    __slots__ = ()


BAD = _BadNumber()


def _parse_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else BAD


def _parse_int(text: str) -> Any:
    if len(text.lstrip("-")) > 16:  # more digits than MAX_INT has: never in range (and no slow conversion)
        return BAD
    value = int(text)
    return value if -MAX_INT <= value <= MAX_INT else BAD


def loads(text: str | bytes) -> Any:
    """Parse JSON text; ``NaN``/``Infinity``/out-of-range numbers come back as a marker :func:`problems` reports.

    Raises ``ValueError`` for text that is not JSON and ``RecursionError`` for
    nesting deeper than the parser's stack.
    """
    return json.loads(text, parse_constant=lambda _: BAD, parse_float=_parse_float, parse_int=_parse_int)


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE
    return None


def problems(value: Any, root: str = "input") -> dict[str, str]:
    """``{field path: sentence}`` for each bad string, number or nesting in a parsed value (at most 10).

    Paths use dots (``config.headers.0``); a key that is itself bad is
    reported at its parent's path. Walks iteratively, so no depth can make it recurse.
    """
    found: dict[str, str] = {}
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack and len(found) < MAX_PROBLEMS:
        item, path, depth = stack.pop()
        if isinstance(item, (dict, list)) and depth > MAX_DEPTH:
            found.setdefault(path or root, TOO_DEEP)
            continue
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                problem = _string_problem(key)
                if problem:
                    found.setdefault(path or root, problem)
                    continue
                children.append((child, f"{path}.{key}" if path else key, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(child, f"{path}.{i}" if path else str(i), depth + 1)
                                   for i, child in enumerate(item)]))
        elif isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                found.setdefault(path or root, problem)
        elif item is BAD or (isinstance(item, float) and not math.isfinite(item)):
            found.setdefault(path or root, BAD_NUMBER)
    return found


def string_problem(text: str) -> str | None:
    """The sentence for a string that cannot be stored (NUL, lone surrogate), or ``None``."""
    return _string_problem(text)


def sanitise(value: Any, depth: int = 1) -> Any:
    """A copy of ``value`` that strict JSON can carry: see the module docstring. Recursion is bounded by MAX_DEPTH."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, (dict, list, tuple)):
        if depth > MAX_DEPTH:
            return None
        if isinstance(value, dict):
            return {sanitise(str(key), depth): sanitise(item, depth + 1) for key, item in value.items()}
        return [sanitise(item, depth + 1) for item in value]
    if value is BAD:
        return None
    return value


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, strict: every response is :func:`sanitise`\\ d and ``allow_nan=False``.

    Inputs are refused or sanitised before they are stored, so this only ever
    changes a value that slipped through; it never emits ``NaN``/``Infinity``.
    """

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``json.dumps`` of the value as it is when that is already strict, else of :func:`sanitise` of it.

        The value is already strict when ``json`` writes it without error (``allow_nan=False``
        refuses non-finite floats, a stray object raises ``TypeError``), the text holds no
        ``\\ud`` escape (so no surrogate at all, lone or paired, with ``ensure_ascii``) and
        it has no more opening brackets than :data:`MAX_DEPTH` (a bound on its nesting).
        Anything else is written again from :func:`sanitise`, so the answer is the same
        either way; the walk in Python is only paid for values that may need it.
        """
        kwargs.setdefault("allow_nan", False)
        if kwargs.get("ensure_ascii", self.ensure_ascii):
            try:
                text = super().dumps(obj, **kwargs)
            except (ValueError, TypeError, RecursionError):
                pass
            else:
                if "\\ud" not in text and text.count("{") + text.count("[") <= MAX_DEPTH:
                    return text
        return super().dumps(sanitise(obj), **kwargs)
