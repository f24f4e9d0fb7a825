"""Command-line conventions every command shares: repeated -o, exit codes, quiet file output, file modes."""

from __future__ import annotations

import os
import stat

import pytest
from conftest import TROPHY
from tiny_models import build

from headmap.cli import main
from headmap.storage import load_result


def test_repeated_output_writes_every_file_in_render_plot_and_capture(tmp_path):
    png, svg = tmp_path / "a1.png", tmp_path / "a2.svg"
    args = ["render", TROPHY, "--model", "minilm", "--layer", "1", "--head", "1"]
    assert main([*args, "-o", str(png), "-o", str(svg)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()[:2000]
    first, second = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    assert main(["capture", TROPHY, "--model", "minilm", "--layers", "0", "-o", str(first), "-o", str(second)]) == 0
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
