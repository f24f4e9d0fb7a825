#!/usr/bin/env bash
# Set up (idempotent) and render the demo pictures of the bundled default model into ./headmap-demo
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: [1/2] set-up (scripts/setup.sh; ~2.5 minutes the first time, seconds after)" >&2
./scripts/setup.sh
echo "demo: [2/2] rendering the demo of the bundled default model into ./headmap-demo" >&2
if [ -n "${HEADMAP_SETUP_DRY_RUN:-}" ]; then
  echo "demo:   would run: .venv/bin/headmap demo --out headmap-demo $*" >&2
  exit 0
fi
exec .venv/bin/headmap demo --out headmap-demo "$@"
