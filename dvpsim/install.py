"""`dvpsim setup`: install the pinned solcjs and anvil with npm, then build the contracts.

In a checkout the tools go to the checkout's ``node_modules/`` (where ``scripts/setup.sh``
has always put them; it calls this command); for a pip-installed dvpsim they go to the
user cache directory. Both steps are cached (npm by a stamp holding the hash of the
pinned npm files, the contracts by their source hash), so a second run takes about a
second. Progress goes to stderr; a missing Node.js or npm is one line and exit 1.
"""

from __future__ import annotations

import time
from pathlib import Path

from chain_adapters import build, toolchain
from chain_adapters.toolchain import say


def main(prefix: Path | None = None) -> int:
    began = time.monotonic()
    target = prefix or toolchain.default_prefix()
    try:
        if not toolchain.install(target):
            say(
                f"solc {toolchain.SOLC_VERSION} and anvil {toolchain.ANVIL_VERSION} already in {target / 'node_modules'}"
            )
        solcjs, anvil = toolchain.solcjs_path(), toolchain.anvil_path()
    except (toolchain.ToolNotFound, toolchain.InstallFailed) as exc:
        say(str(exc))
        return 1
    say(f"solcjs {solcjs}")
    say(f"anvil {anvil}")
    say(f"compiling the contracts into {build.build_dir()} (cached by source hash)")
    try:
        artifacts = build.compile_contracts()
    except build.CompileError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unknown error"
        say(f"contracts do not compile: {first} (`dvpsim build` shows every error)")
        return 1
    say(
        f"ready: {len(artifacts)} contracts, in {time.monotonic() - began:.1f} s; `dvpsim doctor` checks the chain"
    )
    return 0
