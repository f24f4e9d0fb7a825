"""The command line, run in-process through main() and once as a real subprocess."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import TROPHY

from headmap.cli import main
from headmap.storage import load_result


def test_render_png_words(tmp_path, capsys):
    out = tmp_path / "trophy.png"
    assert (
        main(
            ["render", TROPHY, "--model", "minilm", "--layer", "3", "--head", "5", "--words", "-o", str(out)]
        )
        == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layer 3" in capsys.readouterr().out


def test_render_grid_svg_and_topk_html_on_smollm2(tmp_path):
    grid = tmp_path / "grid.svg"
    assert (
        main(["render", TROPHY, "--model", "smollm2", "--layer", "12", "--head", "all", "-o", str(grid)]) == 0
    )
    assert b"<svg" in grid.read_bytes()[:2000]
    page = tmp_path / "map.html"
    assert (
        main(
            [
                "render",
                TROPHY,
                "--model",
                "smollm2",
                "--layer",
                "12",
                "--head",
                "4",
                "--norm",
                "topk:3",
                "-o",
                str(page),
            ]
        )
        == 0
    )
    html = page.read_text()
    assert "top-3" in html or "top 3" in html
    # plotly.js is embedded: no script is fetched from anywhere at view time.
    assert re.search(r"<script[^>]+src=", html) is None


def test_capture_then_plot(tmp_path):
    saved = tmp_path / "run.safetensors"
    assert main(["capture", TROPHY, "--model", "minilm", "--layers", "0,5", "-o", str(saved)]) == 0
    result = load_result(saved)
    assert [k.name for k in result.keys] == ["layer.0", "layer.5"]
    pdf = tmp_path / "plot.pdf"
    assert main(["plot", str(saved), "--layer", "5", "--head", "2", "-o", str(pdf)]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_text_from_file(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text(TROPHY, encoding="utf-8")
    assert (
        main(
            ["capture", str(src), "--model", "minilm", "--layers", "0", "-o", str(tmp_path / "f.safetensors")]
        )
        == 0
    )
    assert load_result(tmp_path / "f.safetensors").source.text == TROPHY


@pytest.mark.parametrize(
    "args, message",
    [
        (["render", "", "-o", "x.png"], "empty"),
        (["render", TROPHY, "--layer", "6", "-o", "x.png"], "0..5"),
        (["render", TROPHY, "--head", "12", "-o", "x.png"], "0..11"),
        (["render", TROPHY, "-o", "x.gif"], "extension"),
        (["render", TROPHY, "-o", "/no/such/dir/x.png"], "does not exist"),
        (["render", "word " * 600, "-o", "x.png"], "at most 512"),
        (["capture", TROPHY, "--model", "no-such-model-anywhere", "-o", "x.safetensors"], "unknown model"),
        (["plot", "missing.safetensors", "-o", "x.png"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("headmap: error:") and message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_console_script_help_and_usage_exit_codes():
    exe = [sys.executable, "-m", "headmap.cli"]
    done = subprocess.run([*exe, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "render" in done.stdout and "causation" in done.stdout
    bad = subprocess.run([*exe, "render"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
