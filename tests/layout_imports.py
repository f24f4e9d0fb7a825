"""How test_layout reads imports: which headmap modules a module imports, where, and the graph they form."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx


def module_name(path: Path, package_root: Path) -> str:
    """``.../src/headmap/capture/tap.py`` -> ``headmap.capture.tap``; a package's ``__init__`` -> its name."""
    return ".".join(path.relative_to(package_root.parent).with_suffix("").parts).removesuffix(".__init__")


def _resolved(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _targets(node: ast.AST, package: str) -> list[str]:
    """The headmap modules (or module.name) one import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "headmap"]
    if isinstance(node, ast.ImportFrom):
        base = _resolved(node, package)
        if base.split(".")[0] == "headmap":
            return [f"{base}.{a.name}" for a in node.names]
    return []


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the statements under ``if TYPE_CHECKING:`` (never run, so never part of a circle)."""
    return {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for sub in ast.walk(stmt)
    }


def late_imports(path: Path, package_root: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every headmap import inside a function or method of ``path``."""
    own = module_name(path, package_root)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = set()
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                found |= {(node.lineno, t) for t in _targets(node, package)}  # type: ignore[attr-defined]
    return sorted(found)


def import_graph(paths: list[Path], package_root: Path) -> nx.DiGraph:
    """Module -> the headmap modules it imports at run time, at the top or in a function."""
    names = {module_name(p, package_root): p for p in paths}
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            for target in _targets(node, package):
                # `from headmap.x import y` imports the module headmap.x.y if there is one, else headmap.x
                module = target if target in names else target.rsplit(".", 1)[0]
                if module in names and module != name:
                    graph.add_edge(name, module)
    return graph


def circles(graph: nx.DiGraph) -> list[list[str]]:
    """Every import circle, shortest first, leaving out the ones a package's ``__init__`` closes.

    A package's ``__init__`` re-exports its modules, and those modules import siblings through
    the package name only when a user would: such a loop is how Python packages work, not a circle
    between ideas. A circle between two modules (or more) of the code is what this finds.
    """
    plain = graph.copy()
    plain.remove_nodes_from([n for n in graph if _is_package(graph, n)])
    return sorted((c for c in nx.simple_cycles(plain)), key=len)


def _is_package(graph: nx.DiGraph, name: str) -> bool:
    return any(other.startswith(name + ".") for other in graph)
