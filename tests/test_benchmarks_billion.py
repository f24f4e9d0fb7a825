"""benchmarks/billion.py: the same code as the billion-parameter run, on a tiny config (seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_tiny_run_measures_every_method_beside_its_plain_forward():
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "billion.py"), "--tiny"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stderr.splitlines() if x.startswith("billion: results in "))
    out, table = line.removeprefix("billion: results in ").split(", table in ")
    results = json.loads(Path(out).read_text(encoding="utf-8"))
    assert [(r["n"], r["method"]) for r in results["rows"]] == [
        (256, "plain"),
        (256, "one_head"),
        (128, "plain"),
        (128, "stats"),
    ]
    assert all(r["seconds"] > 0 and r["peak_bytes"] > 0 for r in results["rows"]), results["rows"]
    assert results["parameters"] < 1e6 and results["model"] == "tiny-llama-random"
    assert any(n.startswith("statistics:") for n in results["rows"][3]["notes"])
    written = Path(table).read_text(encoding="utf-8")
    assert "<!-- billion:begin -->" in written and "| 128 | stats |" in written
    # The dry run leaves the repository's results and README alone.
    assert Path(out).parent != ROOT / "benchmarks"
    assert (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8") == readme
