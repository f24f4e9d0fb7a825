"""The package layout: one folder per stage, and no stage imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

from layout_imports import circles, import_graph, late_imports, module_name

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "headmap"
#: Stages from the bottom up; the core files (result, tokens, errors, storage, normalization) sit below them all.
STAGES = ("core", "models", "capture", "view", "render", "analysis", "attribution", "apps", "serve", "cli")
CORE = {"errors", "tokens", "result", "storage", "normalization"}
MAX_LINES = 400


def stage_of(module: str) -> str:
    """``headmap.capture.tap`` -> ``capture``; ``headmap.result`` -> ``core``; ``headmap`` -> ``api``."""
    parts = module.removesuffix(".__init__").split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] == "__main__":  # `python -m headmap`: the command line's entry point
        return "cli"
    return "core" if parts[1] in CORE else parts[1]


def imports(path: Path) -> list[str]:
    """Every headmap module ``path`` imports, at the top or inside functions, relative ones resolved."""
    own = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "headmap"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name.split(".")[0] == "headmap":
                # `from headmap import x` where x is a stage package counts as importing that stage.
                if name == "headmap":
                    found += [f"headmap.{alias.name}" for alias in node.names]
                else:
                    found.append(name)
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_folder_is_a_known_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(STAGES), folders - set(STAGES)
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert loose <= CORE, f"top-level modules other than the core types: {loose - CORE}"


def test_lower_stages_never_import_higher_ones():
    order = {name: i for i, name in enumerate(STAGES)}
    violations = []
    for path in modules():
        own = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mine = stage_of(own)
        if mine == "api":
            continue
        for target in imports(path):
            theirs = stage_of(target)
            if theirs == "api" or order.get(theirs, -1) > order[mine]:
                violations.append(f"{own} ({mine}) imports {target} ({theirs})")
    assert not violations, "\n".join(violations)


def test_files_stay_small():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by idea: {long}"


def test_result_methods_reach_the_stages(tmp_path):
    """The convenience methods work through the bound stages (users chain them)."""
    import numpy as np
    from helpers import make_result, softmax_rows, tokens_from

    text = "a b c"
    result = make_result(tokens_from(text, [(0, 1), (2, 3), (4, 5)]), softmax_rows((2, 3, 3)))
    shown = result.to_words().mask(special=True).normalize("topk:1")
    assert np.count_nonzero(shown.layers[0].weights[0], axis=-1).tolist() == [1, 1, 1]
    assert result.render(tmp_path / "m.png", 0, 1).stat().st_size > 0
    assert "<table>" in result._repr_html_()


#: Where a headmap module may be imported inside a function, and why. cli/: `--help`, `--version` and
#: usage errors answer without importing torch. (headmap/__init__ loads its public names lazily with
#: importlib for the same reason: not an import statement, so not listed.)
LATE_IMPORTS_ALLOWED = {"cli": "start-up: --help and usage errors must not import torch"}


def test_no_function_level_imports_of_headmap_modules():
    late = [
        f"{path.relative_to(PACKAGE)}:{line} imports {target}"
        for path in modules()
        if stage_of(module_name(path, PACKAGE)) not in LATE_IMPORTS_ALLOWED
        for line, target in late_imports(path, PACKAGE)
    ]
    assert not late, (
        "import these at the top of the module (restructure if a circle forces it):\n" + "\n".join(late)
    )


def test_no_import_circles():
    found = circles(import_graph(modules(), PACKAGE))
    assert not found, "import circles:\n" + "\n".join(" -> ".join([*c, c[0]]) for c in found)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The two checks above fail on a late import and on a circle (so a green run means something)."""
    pkg = tmp_path / "headmap"
    (pkg / "capture").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "capture" / "__init__.py").write_text("")
    (pkg / "capture" / "a.py").write_text("from headmap.capture import b\n")
    (pkg / "capture" / "b.py").write_text("def f():\n    from headmap.capture.a import x\n")
    paths = sorted(pkg.rglob("*.py"))
    assert late_imports(pkg / "capture" / "b.py", pkg) == [(2, "headmap.capture.a.x")]
    assert [sorted(c) for c in circles(import_graph(paths, pkg))] == [
        ["headmap.capture.a", "headmap.capture.b"]
    ]


def test_applications_do_not_import_each_other():
    """An application (apps/rag, apps/bias, apps/prune) builds on the stages below, not on another one."""
    graph = import_graph(modules(), PACKAGE)
    crossing = [
        f"{a} imports {b}"
        for a, b in graph.edges
        if a.startswith("headmap.apps.") and b.startswith("headmap.apps.")
        and len(a.split(".")) > 3 and len(b.split(".")) > 3 and a.split(".")[2] != b.split(".")[2]
    ]  # fmt: skip
    assert not crossing, "\n".join(crossing)
