"""The example notebooks of examples/: saved without outputs, exactly as their builder writes them, and
run top to bottom with nbclient in a kernel of this interpreter, each showing the interactive view,
no error and no URL of another host in any output."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_interactive import embedded

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.ipynb"))
# Any http(s) URL whose host is not this machine: a page that fetched one would leave it.
NETWORK_URL = re.compile(r"https?://(?!(?:localhost|127\.0\.0\.1|\[::1\])(?:[:/]|$))[^\s\"'<>)]+", re.I)
# The interactive view's root element and the code that mounts it (headmap.render.interactive), and
# those of the view over an image (headmap.render.image_view).
VIEW_MARKERS = ("<div class='hmv' id='hmv-", "headmapView().mountNotebook(")
IMAGE_MARKERS = ("<div class='hmv hmi' id='hmi-", "headmapImage().mountImage(")


def builder():  # type: ignore[no-untyped-def]
    """examples/build_notebooks.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_notebooks", EXAMPLES / "build_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)


def texts(output: nbformat.NotebookNode) -> list[str]:
    """Every text an output carries (stream text, error traceback, each non-image MIME type)."""
    if output["output_type"] == "stream":
        return [output["text"]]
    if output["output_type"] == "error":
        return [*output["traceback"], output["evalue"]]
    return [v if isinstance(v, str) else "\n".join(v) for k, v in output["data"].items() if k != "image/png"]


def test_the_notebooks_are_the_builders_output():
    build = builder()
    assert list(build.NOTEBOOKS) == NAMES and len(NAMES) == 7
    for name in NAMES:
        saved = (EXAMPLES / f"{name}.ipynb").read_text(encoding="utf-8")
        assert saved == build.text(name), f"{name}.ipynb differs: run python examples/build_notebooks.py"
    assert build.main(["--check"]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_saved_notebooks_are_clean_and_state_the_caveat(name):
    nb = read(name)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    markdown = " ".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert "correlation, not causation" in markdown
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_shows_the_interactive_view(name, tmp_path):
    nb = read(name)
    # The kernel is this interpreter (jupyter_client runs the python3 spec with sys.executable), and
    # it imports headmap from this checkout; files go to tmp_path, not into examples/.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "HEADMAP_EXAMPLES_OUT": str(tmp_path),
    }
    client = NotebookClient(
        nb,
        timeout=300,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    start = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError, naming the cell, on the first error
    elapsed = time.perf_counter() - start
    print(f"{name}: executed in {elapsed:.1f} s")
    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o["output_type"] == "error"]

    setup = "".join(o["text"] for o in nb.cells[1].outputs if o["output_type"] == "stream")
    assert f"python: {sys.executable}\n" in setup
    assert f"from {ROOT / 'src' / 'headmap'}\n" in setup

    pages = [
        o["data"].get("text/html", "")
        for o in outputs
        if o["output_type"] in ("display_data", "execute_result")
    ]
    views = [html for html in pages if all(marker in html for marker in VIEW_MARKERS)]
    images = [html for html in pages if all(marker in html for marker in IMAGE_MARKERS)]
    assert views or images, f"{name} shows no interactive view"
    for html in views:
        payload = embedded(html)
        assert payload["layers"] and all(axis["labels"] for axis in payload["axes"])
        assert "not causation" in payload["warning"]
    for html in images:
        payload = json.loads(re.search(r"class='hmi-data'>(.*?)</script>", html, re.S).group(1))
        assert payload["pictures"] and payload["labels"] and "not causation" in payload["warning"]

    urls = [url for o in outputs for t in texts(o) for url in NETWORK_URL.findall(t)]
    assert urls == [], f"{name} outputs name other hosts: {sorted(set(urls))[:5]}"
