#!/usr/bin/env bash
# Run only the tests marked slow (kept out of the default run), with the cluster extra
# (Ray, for tests/test_pool_ray.py) installed into .venv from requirements-cluster.lock:
# kept out of requirements.lock so the default install stays lean; installed once, and
# again only when that lock changes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cluster_stamp=.venv/.dvpsim-cluster
cluster_hash=$(sha256sum requirements-cluster.lock | cut -c1-32)
if [ "$(cat "$cluster_stamp" 2>/dev/null)" != "$cluster_hash" ]; then
  printf 'test-slow: installing the cluster extra (Ray) from requirements-cluster.lock\n' >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-cluster.lock 2>&1 | grep -v 'is ignored' >&2 || true
  .venv/bin/python -c 'import ray' || { printf 'test-slow: Ray did not install: see the pip messages above\n' >&2; exit 1; }
  echo "$cluster_hash" > "$cluster_stamp"
fi
.venv/bin/python -m pytest -m slow "$@"
