#!/usr/bin/env bash
# Set up (idempotent), check lint, formatting and types, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test: [1/3] set-up (scripts/setup.sh; ~2.5 minutes the first time, seconds after)" >&2
./scripts/setup.sh
echo "test: [2/3] lint, format and types (ruff check, ruff format --check, mypy; ~1 minute)" >&2
if [ -n "${HEADMAP_SETUP_DRY_RUN:-}" ]; then
  echo "test:   would run: ruff check . && ruff format --check . && mypy" >&2
else
  .venv/bin/ruff check src tests benchmarks scripts examples
  .venv/bin/ruff format --check src tests benchmarks scripts examples
  .venv/bin/mypy
fi
echo "test: [3/3] running the test suite (~5 minutes on 2 idle cores)" >&2
if [ -n "${HEADMAP_SETUP_DRY_RUN:-}" ]; then
  echo "test:   would run: .venv/bin/python -m pytest -q $*" >&2
  exit 0
fi
exec .venv/bin/python -m pytest -q "$@"
