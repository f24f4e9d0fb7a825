#!/usr/bin/env bash
# Set up (idempotent) and render the demo pictures of the bundled default model into ./headmap-demo
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/headmap demo --out headmap-demo "$@"
