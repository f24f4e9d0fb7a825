"""benchmarks/gpu.py and scripts/gpu-check.sh: their dry runs on the CPU (tiny models, tiny N), and
the pieces that decide what runs within the budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu  # noqa: E402
from configs import LLAMA_3_1_8B, LLAMA_3_2_1B, llama_config, parameter_count  # noqa: E402


def test_published_configs_become_transformers_configs():
    small, large = llama_config(LLAMA_3_2_1B), llama_config(LLAMA_3_1_8B)
    assert small.rope_parameters["rope_type"] == "llama3" and small.rope_parameters["factor"] == 32.0
    assert small.rope_parameters["rope_theta"] == 500000.0 and large.rope_parameters["factor"] == 8.0
    assert small.tie_word_embeddings and not large.tie_word_embeddings
    assert (small.num_key_value_heads, small.head_dim, large.head_dim) == (8, 64, 128)
    # The published sizes: 1.24 B and 8.03 B parameters.
    assert round(parameter_count(LLAMA_3_2_1B) / 1e9, 2) == 1.24
    assert round(parameter_count(LLAMA_3_1_8B) / 1e9, 2) == 8.03


def test_estimates_decide_what_cannot_fit():
    # Eager keeps every layer's maps: 8B at 8k needs more than an H200 has, 1B at 8k does not.
    assert gpu.eager_bytes(LLAMA_3_1_8B, 8192, 2) > 139 * 2**30 > gpu.eager_bytes(LLAMA_3_2_1B, 8192, 2)
    assert gpu.one_head_bytes(131072) == 64 * 2**30
    assert gpu.focus(LLAMA_3_2_1B) == (8, 4) and gpu.focus(LLAMA_3_1_8B) == (16, 4)
    # 8B at 128k: ~6.3 PFLOP, ~16 s at the assumed 400 TFLOP/s.
    assert 6.0e15 < gpu.forward_flops(LLAMA_3_1_8B, 131072) < 6.6e15


def test_row_timer_stops_python_code_and_is_disarmed_after():
    start = time.perf_counter()
    with pytest.raises(gpu.RowTimeout), gpu.row_timer(0.05):
        while True:
            time.sleep(0.001)
    assert time.perf_counter() - start < 2
    with gpu.row_timer(0.05):
        pass
    time.sleep(0.1)  # no alarm left armed


def test_table_shows_ratios_and_reasons():
    rows = [
        {"model": "m", "n": 8, "method": "plain", "seconds": 2.0, "peak_bytes": 2**30},
        {"model": "m", "n": 8, "method": "stats", "seconds": 3.0, "peak_bytes": 2**31, "path": "fused"},
        {"model": "m", "n": 8, "method": "eager", "skipped": "needs ~144 GiB"},
        {"model": "m", "n": 8, "method": "one_head", "error": "RuntimeError: boom"},
    ]
    lines = gpu.table({"rows": rows}).splitlines()
    assert lines[3] == "| m | 8 | stats | 3.000 | 2.00 | 1.50x | 2.00x | fused |"
    assert lines[4] == "| m | 8 | eager | skipped: needs ~144 GiB | | | | |"
    assert lines[5] == "| m | 8 | one_head | failed: RuntimeError: boom | | | | |"
    assert {line.count("|") for line in lines} == {9}


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    """The whole GPU check on the CPU: the CUDA tests on the CPU, then gpu.py --dry-run."""
    kept = {p: p.read_bytes() if p.is_file() else None for p in (ROOT / "benchmarks").glob("*")}
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu-check.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "passed" in (tmp_path / "tests.log").read_text(encoding="utf-8")
    results = json.loads((tmp_path / "gpu.json").read_text(encoding="utf-8"))
    assert set(results["models"]) == {"tiny-1b", "tiny-8b"} and results["dtype"] == "bfloat16"
    rows = {(r["model"], r["n"], r["method"]): r for r in results["rows"]}
    assert len(rows) == 2 * len(gpu.DRY_SIZES) * len(gpu.METHODS)
    for model in results["models"]:
        for n in gpu.DRY_SIZES:
            for method in ("plain", "stats", "one_head", "last_row", "eager"):
                assert "seconds" in rows[(model, n, method)], rows[(model, n, method)]
            # bfloat16: the statistics take the exact path, so that row is not measured twice.
            assert "takes this path already" in rows[(model, n, "stats_exact")]["skipped"]
    assert "<!-- gpu:begin -->" in (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "gpu-check: 30 of 36 rows measured" in done.stdout
    # The dry run leaves the repository's results and README alone, and writes nothing beside them.
    assert {p: p.read_bytes() for p in (ROOT / "benchmarks").glob("*") if p.is_file()} == {
        p: b for p, b in kept.items() if b is not None
    }
