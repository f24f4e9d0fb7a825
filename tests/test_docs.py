"""The documentation site: `mkdocs build --strict` passes, every task page and the API reference are
there with their real content, the site loads nothing from another host, and the include hook that
takes the pages' text from the READMEs fails loudly on a stale heading."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import time
from html import unescape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = Path(sys.executable).parent / "mkdocs"
TASK_PAGES = {
    # page: a sentence its README section holds, so an empty or wrong include fails
    "render": "is the one type that flows from capture to rendering",
    "stats": "need every weight of every head but keep none",
    "heads": "streams it in batches",
    "explain": "The explained output F",
    "faithfulness": "AOPC",
    "generate": "The model (a decoder; default the bundled SmolLM2) generates greedily",
    "audit": "headmap verify record.json",
    "rag": "Position calibration",
    "bias": "A probe on one template is not a bias audit.",
    "prune": "Physical cut",
    "serve": "Type or paste a text and press",
}
_spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
assert _spec is not None and _spec.loader is not None
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


def public_names() -> list[str]:
    """``headmap.__all__`` as the source tree declares it (the installed package may be another tree)."""
    tree = ast.parse((ROOT / "src" / "headmap" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("src/headmap/__init__.py has no __all__")


def text_of(html: str) -> str:
    """The visible text of a page, tags dropped and entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert MKDOCS.exists(), f"{MKDOCS} is missing: pip install -r requirements.txt"
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [str(MKDOCS), "build", "--strict", "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    assert seconds < 60, f"mkdocs build took {seconds:.0f} s"
    return out


def test_every_task_page_is_built_from_its_readme_section(site: Path) -> None:
    for page, sentence in TASK_PAGES.items():
        html = (site / f"{page}.html").read_text(encoding="utf-8")
        assert sentence in text_of(html), page
    index = text_of((site / "index.html").read_text(encoding="utf-8"))
    assert "Attention is correlation, not causation." in index
    for page in TASK_PAGES:
        assert f'href="{page}.html"' in (site / "index.html").read_text(encoding="utf-8")
    started = text_of((site / "getting-started.html").read_text(encoding="utf-8"))
    assert "./scripts/test.sh" in started and "mkdocs build --strict" in started


def test_images_and_links_point_into_the_site(site: Path) -> None:
    for page in site.glob("*.html"):
        if page.name == "404.html":  # served from any depth, so its links are absolute by design
            continue
        html = page.read_text(encoding="utf-8")
        for src in re.findall(r'<img[^>]*\bsrc="([^"]+)"', html):
            assert (site / src).is_file(), f"{page.name}: {src}"
        for target in re.findall(r'<a[^>]*\bhref="([^"#]+)', html):
            if not re.match(r"^(https?:|mailto:)", target):
                assert (site / target).exists(), f"{page.name} links {target}"
    assert (site / "images" / "rag-vault.png").is_file()


def test_the_api_page_documents_every_public_name_from_its_docstring(site: Path) -> None:
    api = (site / "api.html").read_text(encoding="utf-8")
    text = text_of(api)
    for name in public_names():
        assert re.search(rf"\b{re.escape(name)}\b", text), name
    # capture's signature and the first line of its docstring, rendered by mkdocstrings
    assert 'id="headmap.capture.engine.capture"' in api
    assert re.search(r'padding_side\s*:\s*str\s*=\s*"right"', text)
    assert "Capture attention maps of text (one string -> one result, a list -> a list of results)." in text
    assert "Load a model" in text or "load(" in text
    assert ":class:" not in api and ":func:" not in api  # Sphinx roles are shown as code


def test_the_benchmark_tables_are_the_benchmark_readme(site: Path) -> None:
    source = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    html = (site / "benchmarks.html").read_text(encoding="utf-8")
    text = text_of(html)
    headings = [h for h in re.findall(r"^## (.+)$", source, re.M)]
    assert len(headings) >= 5
    for heading in headings:
        assert text_of(heading.replace("`", "")) in text, heading
    assert html.count("<table>") == len(re.findall(r"^\|[-| :]+\|$", source, re.M))


def test_the_site_asks_no_other_host(site: Path) -> None:
    resources = re.compile(
        r"<(?:script|img|iframe|source|audio|video)[^>]*\bsrc=\"([^\"]+)\"|<link[^>]*\bhref=\"([^\"]+)\""
    )
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        for url in (a or b for a, b in resources.findall(html)):
            assert not re.match(r"^(https?:)?//", url), f"{page.name} loads {url}"
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html, page.name
        # Material fetches mermaid from unpkg.com only for a mermaid diagram: there is none
        assert 'class="mermaid"' not in html, page.name
    for sheet in site.rglob("*.css"):
        css = sheet.read_text(encoding="utf-8")
        assert not re.search(r"(@import|url\()\s*['\"]?(https?:)?//", css), sheet.name
    # the offline plugin: pages link each other as files, and the search index is a script
    assert (site / "search" / "search_index.js").is_file()
    assert 'href="api.html"' in (site / "index.html").read_text(encoding="utf-8")
    assert (site / "assets" / "iframe-worker-shim.js").is_file()


def test_an_include_takes_a_section_and_rewrites_its_links(tmp_path: Path) -> None:
    text = (
        "# Title\n\nintro\n\n## First\n\nbody [bench](benchmarks/README.md#speed) ![x](docs/images/a.png)\n"
        "[lic](LICENSE) [web](https://example.org)\n\n```bash\n# a comment, not a heading\n```\n\n"
        "### Sub\n\nsub body\n\n## Second\n\nother\n"
    )
    lines, level = hooks.section(text, "First", intro=False)
    body = hooks.rewrite_links("\n".join(hooks.lift(lines, level, 1)))
    assert level == 2 and "other" not in body and "# a comment, not a heading" in body
    assert "## Sub" in body.splitlines() and "[bench](benchmarks.md#speed)" in body
    assert "![x](images/a.png)" in body and "lic" in body and "(LICENSE)" not in body
    assert "[web](https://example.org)" in body
    intro, _ = hooks.section(text, "First", intro=True)
    assert "sub body" not in "\n".join(intro)
    nested, _ = hooks.section(text, "First", intro=False)
    assert "### Sub" in hooks.lift(nested, 2, 2)


def test_a_stale_heading_fails_the_build_with_its_name() -> None:
    with pytest.raises(hooks.IncludeError, match="no heading starting with 'No such section'"):
        hooks.on_page_markdown("# Page\n\n<!-- include: README.md # No such section -->\n")
    with pytest.raises(hooks.IncludeError, match="unknown option"):
        hooks.on_page_markdown("<!-- include: README.md # Python | sideways -->\n")


def test_the_readme_shows_the_docs_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/mkdocs build --strict" in readme and ".venv/bin/mkdocs serve" in readme
    pins = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    for package in ("mkdocs", "mkdocs-material", "mkdocstrings", "mkdocstrings-python"):
        assert re.search(rf"^{package}==[\d.]+$", pins, re.M), package
    assert (
        "/site/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    )  # the built site is not committed
