"""The layering rules of docs/architecture.md, checked on the source with ``ast`` (nothing is imported).

(a) no module outside ``api/`` imports ``connect_service.api`` (the factory, ``app.py``, registers it);
(b) ``api/`` and ``web/`` never import each other;
(c) ``plugins/`` (``connect_plugins``) imports only names ``connect_service/__init__.py`` exports;
(d) no import cycles among ``connect_service`` modules (imports inside functions count too);
(e) an import inside a function carries a comment saying why (on its line or the line above).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "connect_service"
PLUGINS = ROOT / "plugins"

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in CORE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, name: str, known: set[str]):
    """``(target module, line, inside a function)`` for every runtime import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # type names only, never executed
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in known else target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    modules = core_modules()
    known = set(modules)
    return {name: [(t, line, f) for t, line, f in imports_of(path, name, known)
                   if t == "connect_service" or t.startswith("connect_service.")]
            for name, path in modules.items()}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations() -> set[str]:
    found: set[str] = set()
    edges = graph()
    for source, targets in edges.items():
        for target, line, _ in targets:
            if in_package(target, "connect_service.api") and not in_package(source, "connect_service.api") \
                    and source != "connect_service.app":
                found.add(f"api-import {source} -> {target}")
            if (in_package(source, "connect_service.api") and in_package(target, "connect_service.web")) or \
                    (in_package(source, "connect_service.web") and in_package(target, "connect_service.api")):
                found.add(f"api-web {source} -> {target}")
    found |= {f"cycle {' -> '.join(cycle)}" for cycle in cycles(edges)}
    found |= function_level_imports_without_reason()
    found |= plugin_imports()
    return found


def cycles(edges: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """One representative per strongly connected component of more than one module (Tarjan)."""
    graph_ = {s: sorted({t for t, _, _ in ts if t in edges and t != s}) for s, ts in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph_[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph_):
        if v not in index:
            strong(v)
    return out


def function_level_imports_without_reason() -> set[str]:
    found = set()
    modules = core_modules()
    for name, path in modules.items():
        lines = path.read_text().splitlines()
        for target, line, in_function in imports_of(path, name, set(modules)):
            if not in_function:
                continue
            here, above = lines[line - 1], lines[line - 2].strip() if line > 1 else ""
            if "#" not in here and not above.startswith("#"):
                found.add(f"function-import {name} {target}")
    return found


def public_names() -> set[str]:
    tree = ast.parse((CORE / "__init__.py").read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def plugin_imports() -> set[str]:
    found = set()
    public = public_names()
    for path in PLUGINS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("connect_service."):
                        found.add(f"plugin {path.relative_to(ROOT)} imports {alias.name}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("connect_service"):
                if node.module != "connect_service":
                    found.add(f"plugin {path.relative_to(ROOT)} imports {node.module}")
                else:
                    for alias in node.names:
                        if alias.name not in public:
                            found.add(f"plugin {path.relative_to(ROOT)} imports connect_service.{alias.name}")
    return found


def test_layers_point_one_way():
    found = sorted(violations())
    assert not found, "\n".join(found)


def test_the_checker_sees_each_kind_of_violation(tmp_path, monkeypatch):
    """The rules above are not vacuous: a small fake tree breaks each one."""
    core = tmp_path / "connect_service"
    (core / "api").mkdir(parents=True)
    (core / "web").mkdir()
    (tmp_path / "plugins").mkdir()
    (core / "__init__.py").write_text("from .errors import APIError\n")
    (core / "errors.py").write_text("from . import models\nclass APIError(Exception):\n    pass\n")
    (core / "models.py").write_text("def f():\n    from . import errors\n")
    (core / "domain.py").write_text("from .api import views\n")
    (core / "api" / "__init__.py").write_text("")
    (core / "api" / "views.py").write_text("from ..web import page\n")
    (core / "web" / "__init__.py").write_text("")
    (core / "web" / "page.py").write_text("")
    (tmp_path / "plugins" / "p.py").write_text(
        "from connect_service import APIError\nfrom connect_service.db import x\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "CORE", core)
    monkeypatch.setattr(__import__(__name__), "PLUGINS", tmp_path / "plugins")
    assert violations() == {
        "api-import connect_service.domain -> connect_service.api.views",
        "api-web connect_service.api.views -> connect_service.web.page",
        "cycle connect_service.errors -> connect_service.models",
        "function-import connect_service.models connect_service.errors",
        "plugin plugins/p.py imports connect_service.db",
    }
