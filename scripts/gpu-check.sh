#!/usr/bin/env bash
# The GPU check, one prepared run for a machine with CUDA (sized for one H200: ends within
# GPU_CHECK_BUDGET seconds, default 480): the CUDA tests (tests/test_cuda.py, tests/test_triton.py), then
# the GPU benchmark (benchmarks/gpu.py: Llama 3.2 1B and Llama 3.1 8B shapes, random weights, 8k to
# 128k tokens), then a summary. Writes benchmarks/gpu.json and the gpu table of benchmarks/README.md.
#
# Needs a Python with torch (a CUDA build), transformers 5, tokenizers, safetensors, numpy, pandas,
# pyarrow, scipy, matplotlib, tqdm and pytest: $PYTHON, else the project's .venv, else python3 (a
# GPU image's own python3 usually has all of them; scripts/setup.sh installs the CPU build of torch,
# so it is not run here). headmap itself runs from this checkout (PYTHONPATH=src). Nothing is
# downloaded, except that a missing Triton (the fused statistics kernel on CUDA) is tried once
# with `pip install triton==3.9.0`, which needs PyPI; without it the check goes on.
#
#   scripts/gpu-check.sh [--dry-run] [--out DIR]
#     --dry-run  the same steps on the CPU with tiny models, no CUDA needed (timings meaningless):
#                the CUDA tests with HEADMAP_CUDA_TEST_DEVICE=cpu, gpu.py --dry-run (results in a
#                temporary folder; gpu.json and README.md are left alone)
#     --out DIR  also copy gpu.json, the README and the logs to DIR
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${GPU_CHECK_BUDGET:-480}
START=$SECONDS
DRY=
OUTDIR=
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) OUTDIR=${2:?--out needs a folder}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (--dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
# Wheels carried into .whl/ (a machine without an index: `pip download --no-deps` them here, e.g.
# transformers==5.24.0, the version the project pins) go first on the path, over the image's own.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$LOGS/site" .whl/*.whl >&2
  export PYTHONPATH="$LOGS/site:$PYTHONPATH"
  echo "gpu-check: carried wheels: $(cd .whl && ls *.whl | tr '\n' ' ')" >&2
fi
step() { echo "gpu-check: [$1/4] $2 ($((SECONDS - START)) s)" >&2; }

step 1 "checking the device and the Python packages ($PY)"
if [ -z "$DRY" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
  else
    echo "gpu-check: nvidia-smi is not on the PATH (torch decides below)" >&2
  fi
fi
"$PY" - "$DRY" <<'EOF' >&2
import importlib, sys
dry = sys.argv[1] == "1"
missing = []
for name in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow", "scipy", "matplotlib", "tqdm", "pytest"):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing.append(f"{name} ({exc})")
if missing:
    sys.exit("gpu-check: missing Python packages: " + ", ".join(missing) + "; set PYTHON to a Python that has them")
import torch, transformers
print(f"gpu-check: python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
if not dry and not torch.cuda.is_available():
    sys.exit("gpu-check: torch sees no CUDA device (torch.cuda.is_available() is False); --dry-run checks the steps on the CPU")
if not dry:
    print(f"gpu-check: device {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
import headmap
print(f"gpu-check: headmap from {headmap.__file__}")
EOF
if [ -z "$DRY" ]; then
  if "$PY" -c "import triton" 2>/dev/null; then
    "$PY" -c "import triton; print('gpu-check: triton', triton.__version__, '(the project pins 3.9.0)')" >&2
  else
    echo "gpu-check: no Triton; trying pip install triton==3.9.0 (needs PyPI)" >&2
    "$PY" -m pip install --quiet triton==3.9.0 >&2 \
      || echo "gpu-check: could not install Triton: statistics take headmap's torch kernels on the GPU" >&2
  fi
fi

step 2 "the CUDA tests (tests/test_cuda.py, and tests/test_triton.py on CUDA tensors)"
TESTS=0
if [ -n "$DRY" ]; then
  HEADMAP_CUDA_TEST_DEVICE=cpu "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 \
    | tee "$LOGS/tests.log" >&2 || TESTS=$?
else
  # test_triton.py runs the Triton kernel's own tests on CUDA tensors here (in CI, the interpreter).
  timeout 270 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_triton.py 2>&1 \
    | tee "$LOGS/tests.log" >&2 || TESTS=$?
fi

LEFT=$((BUDGET - (SECONDS - START) - 20))
[ "$LEFT" -lt 60 ] && LEFT=60
step 3 "the GPU benchmark (benchmarks/gpu.py, budget ${LEFT} s)"
BENCH=0
if [ -n "$DRY" ]; then
  "$PY" benchmarks/gpu.py --dry-run --budget "$LEFT" 2>&1 | tee "$LOGS/bench.log" >&2 || BENCH=$?
else
  "$PY" benchmarks/gpu.py --budget "$LEFT" 2>&1 | tee "$LOGS/bench.log" >&2 || BENCH=$?
fi

step 4 "summary"
RESULTS=$(sed -n 's/^gpu: results in \([^,]*\).*/\1/p' "$LOGS/bench.log" | tail -1)
TABLE=$(sed -n 's/.*, table in \(.*\)$/\1/p' "$LOGS/bench.log" | tail -1)
echo "gpu-check: tests: $(grep -E '(passed|failed|skipped|error)' "$LOGS/tests.log" | tail -1 || echo 'no result') (exit $TESTS)"
echo "gpu-check: benchmark: exit $BENCH; results ${RESULTS:-none}; table ${TABLE:-none}"
if [ -n "$RESULTS" ] && [ -f "$RESULTS" ]; then
  "$PY" - "$RESULTS" <<'EOF'
import json, sys
results = json.load(open(sys.argv[1]))
rows = results["rows"]
done = [r for r in rows if "seconds" in r]
print(f"gpu-check: {len(done)} of {len(rows)} rows measured in {results['elapsed_s']:.0f} s on {results['device']}")
for r in rows:
    if "seconds" not in r:
        print(f"gpu-check:   {r['model']} N={r['n']} {r['method']}: {r.get('skipped') or 'failed: ' + r.get('error', '')}")
EOF
fi
if [ -n "$OUTDIR" ]; then
  mkdir -p "$OUTDIR"
  cp "$LOGS"/*.log "$OUTDIR"/
  [ -n "$RESULTS" ] && [ -f "$RESULTS" ] && cp "$RESULTS" "$OUTDIR"/gpu.json
  [ -n "$TABLE" ] && [ -f "$TABLE" ] && cp "$TABLE" "$OUTDIR"/README.md
  echo "gpu-check: copied the logs and results to $OUTDIR"
fi
echo "gpu-check: done in $((SECONDS - START)) s"
[ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ]
