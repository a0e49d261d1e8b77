"""``python -m native.build [--force]``: compile :data:`native.MODULES` with mypyc.

The result goes to ``build/native/<key>/`` (``key`` from :func:`native.source_key`), and
``build/native/current.json`` names it; a build that is already current is kept (the
command then takes well under a second). mypyc's generated C and the compiler's objects go
to ``build/native-work/``. Older trees are removed once the new one is in place. On
failure the previous build stays as it was (stale builds are never used; see
:mod:`native`), mypyc's and the compiler's output is printed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from native import MANIFEST, MODULES, REPO_ROOT, source_key

#: Run in a child interpreter from the repository root, so module names follow the paths.
_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
work, files = sys.argv[1], sys.argv[2:]
sys.argv = [sys.argv[0], "build_ext", "--build-lib", work + "/lib", "--build-temp", work + "/temp"]
setup(name="dvpsim-native", ext_modules=mypycify(
    ["--config-file", "native/mypyc.ini", "--cache-dir", work + "/mypy-cache", *files],
    target_dir=work + "/c", opt_level="3"))
"""


def build(force: bool = False) -> Path:
    """Compile when the build is not current (or ``force``); return the compiled tree."""
    key = source_key()
    native_dir = MANIFEST.parent
    tree = native_dir / key[:16]
    try:
        current = json.loads(MANIFEST.read_text()).get("key") == key and tree.is_dir()
    except (OSError, ValueError):
        current = False
    if current and not force:
        return tree
    work = REPO_ROOT / "build" / "native-work"
    shutil.rmtree(work / "lib", ignore_errors=True)
    started = time.monotonic()
    print(f"native: compiling {len(MODULES)} modules with mypyc (about a minute)", file=sys.stderr)
    done = subprocess.run(
        [sys.executable, "-c", _SETUP, str(work), *MODULES],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"native: the build failed (exit {done.returncode}); see above")
    if source_key() != key:
        raise SystemExit("native: sources changed during the build; run it again")
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(work / "lib", tree)
    scratch = MANIFEST.with_suffix(".tmp")
    scratch.write_text(json.dumps({"key": key, "tree": tree.name, "python": sys.version}))
    scratch.replace(MANIFEST)
    for old in native_dir.iterdir():
        if old.is_dir() and old != tree:
            shutil.rmtree(old, ignore_errors=True)
    print(f"native: built {tree} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return tree


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m native.build", description=__doc__)
    parser.add_argument("--force", action="store_true", help="compile even when current")
    build(force=parser.parse_args(argv).force)


if __name__ == "__main__":
    main()
