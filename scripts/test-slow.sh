#!/usr/bin/env bash
# Run only the tests marked slow (kept out of the default run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh && .venv/bin/python -m pytest -m slow "$@"
