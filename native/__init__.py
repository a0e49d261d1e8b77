"""The native build: dvpsim's hottest modules compiled to C by mypyc, used only when current.

A simulated run spends its time in pure Python: the consensus protocol, the node driver,
the DvP rules and the simulated world, every message and timer. ``python -m native.build``
(run by ``scripts/setup.sh``) compiles exactly the modules in :data:`MODULES` with mypyc
into ``build/native/``. They are the same source files; mypyc turns their type annotations
into C types, and checks them at run time. Nothing else changes: a run gives the same
history, byte for byte, with or without the build (``tests/foundation/test_native.py``).

A package that holds compiled modules calls :func:`extend` from its ``__init__``. When the
build is current (compiled from exactly today's sources, by this Python), the package finds
those modules in the build before its own directory; otherwise it uses its sources alone,
as if no build existed. So an edited module is never shadowed by a stale build: the edit
runs (in pure Python) until set-up compiles it again. ``DVPSIM_NATIVE=0`` uses the sources
alone even when the build is current; :func:`status` says which one a process uses.

A class that judges its own fields in ``__post_init__`` (messages, reports, configs: what
a peer or a user hands in) stays a Python class inside its compiled module
(``@mypyc_attr(native_class=False)``), and its ``__post_init__`` takes ``self: Any``.
Compiled otherwise, mypyc would refuse a field of the wrong type with a TypeError of its
own, at construction or at the check's first read of the field, before the class's check
could answer with the project's error. ``tests/foundation/test_native.py`` holds every
such class to both.

This module sits below every layer and imports nothing from the project.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["MODULES", "MANIFEST", "extend", "source_key", "status"]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The compiled modules (paths from the repository root): the per-event path of a
#: simulated run. Left out: chain_adapters/model.py (mypyc 2.4 fails on its undo frames),
#: scenarios/sim/run.py (it subclasses a class defined in an uncompiled module) and
#: everything a real run spends its time waiting in (I/O, the chain, the bank service).
MODULES = (
    "consensus/codec.py",
    "consensus/messages.py",
    "consensus/report.py",
    "consensus/events.py",
    "consensus/network.py",
    "consensus/outcome.py",
    "consensus/pacemaker.py",
    "consensus/protocol.py",
    "consensus/safety.py",
    "node/driver.py",
    "node/dvp.py",
    "node/legs.py",
    "node/trace.py",
    "scenarios/checks.py",
    "scenarios/history.py",
    "scenarios/sim/bank.py",
    "scenarios/sim/chain.py",
    "scenarios/sim/clock.py",
    "scenarios/sim/fastcrypto.py",
    "scenarios/sim/world.py",
)

#: Written by the build beside the compiled tree: which sources, for which Python.
MANIFEST = REPO_ROOT / "build" / "native" / "current.json"


def source_key(root: Path = REPO_ROOT) -> str:
    """What a build must have been compiled from: the compiled sources and this Python."""
    digest = hashlib.sha256(sys.version.encode())
    for relative in MODULES:
        digest.update(relative.encode() + b"\0" + (root / relative).read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def _current() -> tuple[Path | None, str]:
    """The compiled tree to use, or None; and why, in a few words."""
    if os.environ.get("DVPSIM_NATIVE", "1") == "0":
        return None, "off (DVPSIM_NATIVE=0)"
    try:
        manifest = json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return None, "not built (run scripts/setup.sh)"
    except (OSError, ValueError) as e:
        return None, f"unreadable manifest {MANIFEST}: {e}"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tree"), str):
        return None, f"unreadable manifest {MANIFEST}: no compiled tree named"
    if manifest.get("key") != source_key():
        return None, "stale: sources changed since the build (run scripts/setup.sh)"
    tree = MANIFEST.parent / manifest["tree"]
    if not manifest["tree"] or not tree.is_dir():
        return None, f"missing compiled tree {tree} (run scripts/setup.sh)"
    try:
        _load_shared_libraries(tree)
    except ImportError as e:
        return None, f"unloadable compiled tree {tree}: {e} (run scripts/setup.sh)"
    return tree, "in use"


def _load_shared_libraries(tree: Path) -> None:
    """Load the compiled modules' shared library (a top-level ``<hash>__mypyc`` module) by
    its path. The tree is not put on ``sys.path``: a worker process inherits its parent's
    ``sys.path``, and there the tree's package folders (which hold no ``__init__``) would
    be found first as namespace packages, hiding the real ones."""
    for library in sorted(tree.glob("*__mypyc.*")):
        name = library.name.split(".", 1)[0]
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, library)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {library.name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def extend(path: list[str], package: str) -> list[str]:
    """A package's ``__path__`` with the compiled tree's copy of it first, when current."""
    tree, _ = _current()
    if tree is None:
        return path
    return [str(tree.joinpath(*package.split("."))), *path]


def status() -> str:
    """One line: whether this process runs the compiled modules, and if not, why."""
    return f"native build: {_current()[1]}"
