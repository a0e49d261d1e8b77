#!/usr/bin/env bash
# Set up everything dvpsim needs, idempotently: .venv/ (Python 3.11, pinned by
# requirements.lock, dvpsim installed editable), then `dvpsim setup` (solcjs and anvil into
# node_modules/, pinned by chain_adapters/npm/package-lock.json, and the contract build:
# the same command a pip-installed dvpsim runs), then the native build (python -m
# native.build: the hot modules compiled by mypyc). A second run that finds nothing changed
# takes about a second: each part is redone only when the hash of its inputs changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

python=${DVPSIM_PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      python=$(command -v "$candidate"); break
    fi
  done
fi
[ -n "$python" ] || die "Python 3.11 not found: install it, or set DVPSIM_PYTHON=/path/to/python3.11"

hash_of() { cat "$@" | sha256sum | cut -c1-32; }

# --- Python -----------------------------------------------------------------
py_stamp=.venv/.dvpsim-setup
py_hash=$(hash_of requirements.lock pyproject.toml)
if [ ! -x .venv/bin/python ] || [ "$(cat "$py_stamp" 2>/dev/null)" != "$py_hash" ]; then
  say "creating .venv with $python and installing requirements.lock (about 40 s the first time)"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock 2>&1 | grep -v 'is ignored' >&2 || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 | grep -v 'is ignored' >&2 || true
  .venv/bin/python -c 'import dvpsim, web3, pyblst, py_ecc, libp2p' || die "Python packages did not install: see the pip messages above"
  echo "$py_hash" > "$py_stamp"
fi

# --- Node.js: solcjs and anvil, and the contracts (dvpsim setup; cached by hashes) ---
.venv/bin/dvpsim setup || die "dvpsim setup failed: see its message above"

# --- Chromium and its driver: the report page's browser test (tests/test_report.py) ---
# Debian's packages; a file check when present. Optional: without them only that test fails,
# and it says how to install them.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  say "installing chromium and chromium-driver (apt-get; for the report's browser test)"
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }
  if ! { command -v apt-get >/dev/null 2>&1 && { apt_install || { apt-get update -q >/dev/null 2>&1 && apt_install; }; }; }; then
    say "could not install chromium and chromium-driver: the report's browser test will fail until 'apt-get install -y chromium chromium-driver' works"
  fi
fi

# --- The native build: the hot modules compiled by mypyc (a file read when current) ----
# Optional for correctness (without it the same sources run as pure Python), needed for
# the simulation's speed; needs gcc and Python's headers.
.venv/bin/python -m native.build || say "the native build failed (see above): dvpsim works without it, slower"
say "ready ($root)"
