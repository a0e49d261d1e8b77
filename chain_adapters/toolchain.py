"""Where dvpsim finds its two external tools, solcjs and anvil, and how `dvpsim setup`
installs them.

Both come pinned from npm: the ``solc`` package (solcjs, the Solidity compiler) and
``@foundry-rs/anvil`` (whose per-platform package holds the anvil binary). Their
``package.json`` and ``package-lock.json`` live in this package's ``npm/`` folder, the one
copy of the pins: a checkout and an installed wheel read the same files.

A tool is looked up in this order, first found wins:

1. ``$DVPSIM_SOLCJS`` / ``$DVPSIM_ANVIL`` (a path; an error if it is not there);
2. a checkout's ``node_modules/`` (``scripts/setup.sh`` installs there, as it always did);
3. the user cache directory (``platformdirs.user_cache_dir("dvpsim")``, where
   `dvpsim setup` installs for a pip-installed dvpsim);
4. the ``PATH``: ``anvil`` of any version; ``solcjs`` only when it is the pinned version
   (the artifact cache is keyed by that version).

:func:`install` copies the two npm files into a prefix and runs ``npm install`` there;
a stamp holding the hash of the two files makes a second run a file read. This module
runs npm and reads files; it never starts a chain or compiles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import platformdirs

#: The checkout (or, installed, the site-packages folder) that holds the packages.
REPO_ROOT = Path(__file__).resolve().parent.parent
NPM_FILES_DIR = Path(__file__).resolve().parent / "npm"
NPM_FILES = ("package.json", "package-lock.json")
#: Written into ``node_modules/`` after a successful install: the hash of NPM_FILES.
STAMP = ".dvpsim-setup"
SOLC_VERSION = "0.8.30"
ANVIL_VERSION = "1.7.1"
SETUP_HINT = "run `dvpsim setup` (needs Node.js and npm)"


class ToolNotFound(Exception):
    """A tool is missing or is the wrong version; the message says where dvpsim looked."""


class InstallFailed(Exception):
    """npm ran and failed; its own messages are on stderr above this one."""


def is_checkout(root: Path = REPO_ROOT) -> bool:
    """True when dvpsim runs from a source tree (a clone), not from an installed wheel."""
    return (root / "pyproject.toml").is_file() and (root / "chain_adapters").is_dir()


def cache_dir() -> Path:
    """The user cache directory: npm tools and, when installed, the contract build cache."""
    return Path(platformdirs.user_cache_dir("dvpsim"))


def default_prefix() -> Path:
    """Where `dvpsim setup` installs: the checkout's root, else the user cache directory."""
    return REPO_ROOT if is_checkout() else cache_dir() / "npm"


def npm_prefixes() -> list[Path]:
    """Folders whose ``node_modules/`` may hold the tools, in lookup order."""
    prefixes = [REPO_ROOT] if is_checkout() else []
    return [*prefixes, cache_dir() / "npm"]


def lock_hash() -> str:
    """The hash of the pinned npm files (the same as scripts/setup.sh always wrote)."""
    digest = hashlib.sha256()
    for name in NPM_FILES:
        digest.update((NPM_FILES_DIR / name).read_bytes())
    return digest.hexdigest()[:32]


def platform_package() -> str:
    """The npm package holding this platform's anvil binary, e.g. ``anvil-linux-amd64``."""
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = {"linux": "linux", "darwin": "darwin"}.get(
        platform.system().lower(), platform.system().lower()
    )
    return f"anvil-{system}-{arch}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def anvil_path(prefixes: Sequence[Path] | None = None) -> Path:
    """The anvil binary, by the lookup order of this module; raises :class:`ToolNotFound`."""
    override = os.environ.get("DVPSIM_ANVIL")
    if override:
        if not _executable(Path(override)):
            raise ToolNotFound(
                f"anvil not found at DVPSIM_ANVIL={override}: unset it or point it at an anvil binary"
            )
        return Path(override)
    looked = []
    for prefix in npm_prefixes() if prefixes is None else prefixes:
        path = prefix / "node_modules" / "@foundry-rs" / platform_package() / "bin" / "anvil"
        if _executable(path):
            return path
        looked.append(str(path.parent))
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise ToolNotFound(
        f"anvil not found (looked in {', '.join(looked)} and on PATH): {SETUP_HINT}, "
        f"or set DVPSIM_ANVIL to an anvil {ANVIL_VERSION} binary"
    )


def solcjs_version(path: Path) -> str | None:
    """The version of the npm ``solc`` package that ``path`` (its ``solc.js`` or a link to
    it, such as ``node_modules/.bin/solcjs``) belongs to, or None if it belongs to none."""
    manifest = path.resolve().parent / "package.json"
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("name") != "solc":
        return None
    version = data.get("version")
    return version if isinstance(version, str) else None


def solcjs_path(prefixes: Sequence[Path] | None = None) -> Path:
    """solcjs's ``solc.js`` (run as ``node solc.js``), by the lookup order of this module;
    raises :class:`ToolNotFound`."""
    override = os.environ.get("DVPSIM_SOLCJS")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ToolNotFound(
                f"solcjs not found at DVPSIM_SOLCJS={override}: unset it or point it at solc.js of the npm solc {SOLC_VERSION} package"
            )
        version = solcjs_version(path)
        if version is not None and version != SOLC_VERSION:
            raise ToolNotFound(
                f"DVPSIM_SOLCJS={override} is solcjs {version}, dvpsim pins {SOLC_VERSION}: unset it or {SETUP_HINT}"
            )
        return path
    looked = []
    for prefix in npm_prefixes() if prefixes is None else prefixes:
        path = prefix / "node_modules" / "solc" / "solc.js"
        version = solcjs_version(path) if path.is_file() else None
        if version == SOLC_VERSION:
            return path
        looked.append(f"{path} ({version})" if version else str(path))
    on_path = shutil.which("solcjs")
    if on_path and solcjs_version(Path(on_path)) == SOLC_VERSION:
        return Path(on_path)
    wrong = f"; solcjs on PATH is {solcjs_version(Path(on_path))}" if on_path else ""
    raise ToolNotFound(
        f"solcjs {SOLC_VERSION} not found (looked at {', '.join(looked)} and on PATH){wrong}: {SETUP_HINT}"
    )


def node_path() -> str:
    node = shutil.which("node")
    if node is None:
        raise ToolNotFound("Node.js not found on PATH: install Node.js 20+ (it runs solcjs)")
    return node


def installed(prefix: Path) -> bool:
    """True when ``prefix`` holds the tools of the current pins (its stamp matches)."""
    try:
        return (prefix / "node_modules" / STAMP).read_text().strip() == lock_hash()
    except OSError:
        return False


def say(message: str) -> None:
    print(f"dvpsim setup: {message}", file=sys.stderr, flush=True)


def install(prefix: Path) -> bool:
    """Install the pinned solc and anvil into ``prefix/node_modules`` with npm, unless the
    stamp says they are there. Returns True when npm ran; raises :class:`ToolNotFound`
    when Node.js or npm is missing and :class:`InstallFailed` when npm fails."""
    if installed(prefix):
        return False
    node_path()
    npm = shutil.which("npm")
    if npm is None:
        raise ToolNotFound("npm not found on PATH: install npm beside Node.js")
    prefix.mkdir(parents=True, exist_ok=True)
    if prefix.resolve() != NPM_FILES_DIR.resolve():
        for name in NPM_FILES:
            shutil.copyfile(NPM_FILES_DIR / name, prefix / name)
    say(
        f"installing solc {SOLC_VERSION} and @foundry-rs/anvil {ANVIL_VERSION} into "
        f"{prefix / 'node_modules'} with npm (about 30 s the first time)"
    )
    # Not `npm ci`: npm records only one platform's anvil binary package in the lock file
    # and `npm ci` then refuses the lock as out of sync on another. `npm install --no-save`
    # installs exactly the locked versions and leaves package-lock.json untouched.
    proc = subprocess.run(
        [npm, "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=prefix,
        stdout=sys.stderr,
        check=False,
    )
    if proc.returncode != 0:
        raise InstallFailed(
            f"npm install in {prefix} exited {proc.returncode}: see npm's messages above"
        )
    (prefix / "node_modules" / STAMP).write_text(lock_hash() + "\n")
    return True
