"""Command-line conventions every command shares: repeated -o, exit codes, quiet file output, file modes."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import TROPHY
from tiny_models import build

from headmap.cli import main
from headmap.storage import load_result

SRC = Path(__file__).resolve().parent.parent / "src"


def test_repeated_output_writes_every_file_in_render_plot_and_capture(tmp_path):
    png, svg = tmp_path / "a1.png", tmp_path / "a2.svg"
    args = ["render", TROPHY, "--model", "minilm", "--layer", "1", "--head", "1"]
    assert main([*args, "-o", str(png), "-o", str(svg)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()[:2000]
    first, second = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    assert (
        main(["capture", TROPHY, "--model", "minilm", "--layers", "0", "-o", str(first), "-o", str(second)])
        == 0
    )
    assert (load_result(first).layers[0].weights == load_result(second).layers[0].weights).all()
    pdf, html = tmp_path / "p.pdf", tmp_path / "p.html"
    assert main(["plot", str(first), "--layer", "0", "--head", "2", "-o", str(pdf), "-o", str(html)]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-" and "<html" in html.read_text()[:500].lower()


def test_repeated_output_writes_every_file_in_explain(tmp_path):
    page, data = tmp_path / "why.html", tmp_path / "why.json"
    args = ["explain", TROPHY, "--model", "minilm", "--compare", "A bag.", "--methods", "attention,occlusion"]
    assert main([*args, "-o", str(page), "-o", str(data)]) == 0
    assert page.read_text().lower().lstrip().startswith(("<!doctype", "<html")) and data.read_text()[0] == "{"


def test_one_output_named_twice_is_refused_before_the_model_loads(tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert main(["render", TROPHY, "--model", "no-such-model", "-o", out, "-o", out]) == 1
    assert "given twice" in capsys.readouterr().err


def test_ctrl_c_on_serve_exits_130_and_closes_the_server(monkeypatch, capsys):
    import headmap.serve.app
    import headmap.serve.workbench

    class Bench:
        default_model = "minilm"

        def __init__(self, *args, **kwargs):
            pass

        def info(self, name):
            return None

    class Server:
        closed = False

        @property
        def is_running(self):
            raise KeyboardInterrupt  # what Ctrl-C raises in the waiting main thread

        def close(self):
            Server.closed = True

    monkeypatch.setattr(headmap.serve.workbench, "Workbench", Bench)
    monkeypatch.setattr(headmap.serve.app, "launch", lambda *args, **kwargs: Server())
    assert main(["serve", "--port", "7999"]) == 130
    assert Server.closed and "interrupted" in capsys.readouterr().err


def test_stats_to_a_file_prints_a_summary_unless_the_table_is_asked_for(tmp_path, capsys):
    table = tmp_path / "s.csv"
    assert main(["stats", TROPHY, "--model", "minilm", "-o", str(table), "-o", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) <= 12, out  # one line per statistic, not one per head (72)
    assert "72 heads" in out[0] and any(line.split()[0] == "entropy" for line in out[1:])
    assert len(table.read_text().splitlines()) == 73 and (tmp_path / "s.json").is_file()
    assert main(["stats", TROPHY, "--model", "minilm", "-o", str(table), "--table"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) > 72
    assert main(["stats", TROPHY, "--model", "minilm", "--layers", "0"]) == 0  # no file: the table
    assert len(capsys.readouterr().out.strip().splitlines()) > 12


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_captures_and_pruned_folders_follow_the_umask(tmp_path, bert_tokenizer, umask_022):
    from headmap.apps.prune import prune_heads
    from headmap.apps.prune.save import save_pruned
    from headmap.result import LayerKey, Stack

    saved = tmp_path / "run.safetensors"
    assert main(["capture", TROPHY, "--model", "minilm", "--layers", "0", "-o", str(saved)]) == 0
    assert _mode(saved) == 0o644
    cut = prune_heads(build("llama", bert_tokenizer)[0], {LayerKey(Stack.SELF, 0): [0]})
    folder = save_pruned(cut, tmp_path / "cut", {})
    assert _mode(folder) == 0o755
    assert {p.name: _mode(p) for p in folder.iterdir()} == {p.name: 0o644 for p in folder.iterdir()}


HEAVY = ("torch", "transformers", "matplotlib", "pandas", "scipy", "gradio", "ray")


def test_help_version_and_usage_errors_answer_without_importing_torch():
    """`--help`, `<cmd> --help`, `--version` and usage errors: no heavy import (they take ~0.2 s)."""
    script = """
import sys
from headmap.cli import build_parser, main
commands = [name for name in build_parser()._subparsers._group_actions[0].choices]
codes = []
for argv in [["--help"], ["--version"], ["render"], ["stats", "x", "--bogus"]] + [[c, "--help"] for c in commands]:
    try:
        main(argv)
    except SystemExit as exc:
        codes.append(exc.code)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(len(commands), codes[:4], set(codes[4:]), heavy, file=sys.stderr)
"""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", script, *HEAVY], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "18 [0, 0, 2, 2] {0} []"


def test_empty_text_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import headmap.models.loading

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded for an empty text")

    monkeypatch.setattr(headmap.models.loading, "load", no_load)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    for argv in (["render", " ", "-o", str(tmp_path / "x.png")], ["stats", str(empty)], ["explain", ""]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "empty" in err and len(err.strip().splitlines()) == 1


def test_version_is_the_installed_distributions():
    from importlib import metadata

    import headmap

    done = subprocess.run(
        [sys.executable, "-m", "headmap.cli", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"headmap {metadata.version('headmap')}"
    assert headmap.__version__ == metadata.version("headmap")


def test_the_explain_help_names_attributions_methods():
    from headmap.attribution.explain import METHODS
    from headmap.attribution.flow import FLOW_MAX_TOKENS
    from headmap.cli import explain

    assert explain.METHODS == METHODS and explain.FLOW_MAX_TOKENS == FLOW_MAX_TOKENS


def test_lazy_public_api_matches_what_it_declares():
    """Every name of headmap's public API resolves, the lazy table and the typing imports agree, and
    importing the subpackage headmap.capture leaves headmap.capture the function."""
    import ast

    import headmap
    import headmap.capture.engine  # noqa: F401 - the import that could rebind headmap.capture
    from headmap.capture import capture

    assert headmap.capture is capture and callable(headmap.capture)
    for name in headmap.__all__:
        assert getattr(headmap, name) is not None, name
    tree = ast.parse((SRC / "headmap" / "__init__.py").read_text(encoding="utf-8"))
    typed = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in node.body
        if isinstance(inner, ast.ImportFrom)
        for alias in inner.names
    }
    assert typed == set(headmap._LAZY)
    for name, module in headmap._LAZY.items():
        assert getattr(importlib.import_module(module), name) is getattr(headmap, name)


ROOT = SRC.parent


@pytest.mark.parametrize(
    ("script", "outer"), [("demo.sh", ["1/2", "2/2"]), ("test.sh", ["1/3", "2/3", "3/3"])]
)
def test_set_up_scripts_say_each_step(script, outer, tmp_path):
    """A dry run (no installs) of a fresh clone's set-up prints every step in order."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copy(ROOT / "requirements.txt", tmp_path)
    env = {**os.environ, "HEADMAP_SETUP_DRY_RUN": "1"}
    done = subprocess.run(
        [str(tmp_path / "scripts" / script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stderr.splitlines() if re.match(r"\w+: \[\d/\d\] ", line)]
    expected = [outer[0], *(f"{i}/6" for i in range(1, 7)), *outer[1:]]
    assert [s.split("]")[0].split("[")[1] for s in steps] == expected
    assert "creating .venv" in steps[1] and "torch 2.13.0" in steps[2] and "done in" in done.stderr
    assert not (tmp_path / ".venv").exists()


def test_the_wheel_ships_license_and_type_hints(tmp_path):
    """A wheel built from the tree holds LICENSE and py.typed (built from a copy: no build/ left here)."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(tree),
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("headmap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "headmap/py.typed" in names and "headmap/render/assets/" in " ".join(names)
    license_file = next(n for n in names if n.endswith("/LICENSE"))
    assert "Apache License" in zipfile.ZipFile(wheel).read(license_file).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and "Provides-Extra: serve" in metadata


@pytest.mark.parametrize(
    "argv",
    [
        ["heads", "corpus.txt", "-o", "a", "-o", "b"],
        ["demo", "--out", "headmap-demo", "--out", "b"],
        ["prune", "--texts", "t.txt", "--amount", "0.1", "--out", "a", "--out", "b"],
    ],
)
def test_a_folder_option_given_twice_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "given twice" in capsys.readouterr().err
