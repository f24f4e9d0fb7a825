"""The package layout: one folder per stage, and no stage imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

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
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
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
