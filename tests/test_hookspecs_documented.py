"""Every hook in connect_service/hookspecs.py is documented in docs/plugins.md and has a test of its own.

Documented: docs/plugins.md has a section headed ``### `<hook>` `` (under ``## Hooks``) with a
```python block showing ``@hookspec`` and the hook's exact signature (``def <hook>(<arguments>):``,
the arguments as ``inspect.signature`` prints them), and a ```python example with ``@hookimpl``
and ``def <hook>(``.

Its own test: a test function (module level or in a class) named ``test_hook_<hook>`` or
``test_hook_<hook>__<anything>`` in any ``test_*.py`` under tests/.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Callable

from connect_service import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
TESTS = ROOT / "tests"
SECTION = re.compile(r"^### `([A-Za-z_][A-Za-z0-9_]*)`\s*$", re.MULTILINE)
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def hook_specs(module=hookspecs) -> dict[str, Callable]:
    """``{name: function}`` of every hook specification in ``module``."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {name: fn for name, fn in vars(module).items() if callable(fn) and hasattr(fn, marker)}


def hook_sections(markdown: str) -> dict[str, str]:
    """``{hook name: section text}`` for the ``### `name` `` sections after ``## Hooks``."""
    start = markdown.find("\n## Hooks\n")
    if start < 0:
        return {}
    end = markdown.find("\n## ", start + 1)
    hooks_part = markdown[start:end if end > 0 else len(markdown)]
    matches = list(SECTION.finditer(hooks_part))
    return {m.group(1): hooks_part[m.end():(matches[i + 1].start() if i + 1 < len(matches) else len(hooks_part))]
            for i, m in enumerate(matches)}


def documentation_problems(specs: dict[str, Callable], markdown: str) -> list[str]:
    """What is missing from the documentation of ``specs`` in ``markdown`` (empty when complete)."""
    sections = hook_sections(markdown)
    problems = []
    for name, fn in sorted(specs.items()):
        signature = f"def {name}{inspect.signature(fn)}"
        section = sections.get(name)
        if section is None:
            problems.append(f"{name}: no '### `{name}`' section under '## Hooks' in docs/plugins.md")
            continue
        blocks = CODE_BLOCK.findall(section)
        if not any("@hookspec" in block and f"{signature}:" in block for block in blocks):
            problems.append(f"{name}: its section does not show the exact signature '{signature}'")
        if not any("@hookimpl" in block and f"def {name}(" in block for block in blocks):
            problems.append(f"{name}: its section has no ```python example with @hookimpl and def {name}(")
    for name in sorted(set(sections) - set(specs)):
        problems.append(f"{name}: documented in docs/plugins.md but not a hook in hookspecs.py")
    return problems


def collect_test_names(root: Path = TESTS) -> set[str]:
    """Names of every test function in ``test_*.py`` files under ``root`` (module level or in classes)."""
    names = set()
    for path in root.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def untested_hooks(specs: dict[str, Callable], test_names: set[str]) -> list[str]:
    """Hooks with no ``test_hook_<name>`` / ``test_hook_<name>__<anything>`` test."""
    return sorted(name for name in specs
                  if f"test_hook_{name}" not in test_names
                  and not any(t.startswith(f"test_hook_{name}__") for t in test_names))


def test_there_are_hooks_to_check():
    assert {"register_connection_types", "connection_activated", "connection_revoked",
            "connection_failed"} <= set(hook_specs())


def test_every_hook_is_documented_with_its_signature_and_an_example():
    assert documentation_problems(hook_specs(), DOC.read_text()) == []


def test_every_hook_has_a_test_of_its_own():
    assert untested_hooks(hook_specs(), collect_test_names()) == []


# --- the checks themselves catch what they should -------------------------------------------------------------

def _fake_specs():
    def new_hook(app, extra):
        """A hook nobody documented."""

    setattr(new_hook, f"{hookspecs.hookspec.project_name}_spec", {})
    return {**hook_specs(), "new_hook": new_hook}


def test_an_undocumented_hook_is_reported():
    problems = documentation_problems(_fake_specs(), DOC.read_text())
    assert problems == ["new_hook: no '### `new_hook`' section under '## Hooks' in docs/plugins.md"]


def test_a_wrong_signature_or_missing_example_is_reported():
    doc = DOC.read_text()
    stale = doc.replace("def connection_failed(connection, reason):\n    \"\"\"Observe",
                        "def connection_failed(connection):\n    \"\"\"Observe")
    assert documentation_problems(hook_specs(), stale) == [
        "connection_failed: its section does not show the exact signature 'def connection_failed(connection, reason)'"]
    no_example = re.sub(r"(### `connection_revoked`.*?)@hookimpl", r"\1", doc, count=1, flags=re.DOTALL)
    assert documentation_problems(hook_specs(), no_example) == [
        "connection_revoked: its section has no ```python example with @hookimpl and def connection_revoked("]


def test_a_documented_hook_that_does_not_exist_is_reported():
    doc = DOC.read_text().replace("\n## Discovery", "\n### `connection_gone`\n\nGone.\n\n## Discovery", 1)
    assert documentation_problems(hook_specs(), doc) == [
        "connection_gone: documented in docs/plugins.md but not a hook in hookspecs.py"]


def test_an_untested_hook_is_reported_and_the_naming_rule_is_exact():
    specs = _fake_specs()
    names = collect_test_names()
    assert untested_hooks(specs, names) == ["new_hook"]
    assert untested_hooks(specs, names | {"test_hook_new_hook__fires_on_start"}) == []
    assert untested_hooks(specs, names | {"test_hook_new_hooks"}) == ["new_hook"]
