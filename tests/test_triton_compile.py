"""The Triton kernels compile for GPUs that are not here (sm_90 Hopper, sm_80 Ampere), with the tile
sizes the launcher picks: the interpreter (tests/test_triton.py) checks their numbers, this checks
what only a compiler sees (globals, types, layouts) and that the main pass keeps to its registers.

The compiles run in one child process without ``TRITON_INTERPRET`` (under it, kernels are
interpreted functions, which do not compile)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

HERE = Path(__file__).resolve().parent
# [kernel, dtype, head width, mask kind, softcap and window, sm]: every dtype and mask kind, both widths.
CASES = [
    ["fused_stats", "bf16", 128, 0, False, 90],
    ["fused_stats", "bf16", 64, 0, False, 90],
    ["fused_stats", "bf16", 64, 1, True, 90],
    ["fused_stats", "fp16", 128, 2, False, 90],
    ["fused_stats", "fp32", 64, 2, True, 90],
    ["fused_stats", "fp32", 128, 0, False, 90],
    ["fused_stats", "bf16", 128, 0, False, 80],
    ["row_keys", "bf16", 128, 1, True, 90],
    ["row_keys", "fp32", 128, 2, False, 90],
    ["row_maps", "bf16", 128, 1, True, 90],
    ["row_maps", "fp32", 64, 2, False, 90],
]


@pytest.fixture(scope="module")
def compiled() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, str(HERE / "triton_compile.py"), json.dumps(CASES)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {json.dumps(case): usage for case, usage in json.loads(proc.stdout.splitlines()[-1])}


def _spilled(usage: str) -> int:
    found = re.search(r"STACK:(\d+)", usage)
    assert found, usage
    return int(found.group(1))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_kernels_compile_with_their_tiles(case, compiled):
    usage = compiled[json.dumps(case)]
    assert not usage.startswith("error"), usage
    kernel, _, _, mask_kind, _, sm = case
    if kernel == "fused_stats" and mask_kind == 0 and sm == 90:
        # The tiles were chosen so that the loop stays in registers (ptxas's spill stack: 0 bytes).
        assert _spilled(usage) == 0, usage
    else:  # a mask tile, or the small row kernels: at most a little spill
        assert _spilled(usage) <= 128, usage
