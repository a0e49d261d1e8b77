"""A local committee of real node processes for tests: provision, start, kill, restart, stop."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain_adapters.localchain import free_port
from node.provision import MemberKeys, make_keys, start_node, wait_node_ready, write_committee
from processes import ManagedProcess

FAST_TIMING = {
    "delta_progress": 2.0,
    "delta_resend": 0.5,
    "delta_round": 0.3,
    "delta_grace": 0.05,
    "delta_stage": 0.5,
}


class Committee:
    def __init__(
        self,
        out: Path,
        n: int,
        f: int,
        mode: str,
        targets_for: Callable[[int], list[dict[str, Any]]],
        seed: int = 1,
    ) -> None:
        self.out = out
        self.members: list[MemberKeys] = make_keys(n, seed, [free_port() for _ in range(n)])
        self.paths = write_committee(
            out, self.members, f=f, mode=mode, targets_for=targets_for, timing=FAST_TIMING
        )
        self.procs: dict[int, ManagedProcess] = {}

    def start(self, index: int) -> ManagedProcess:
        proc = start_node(index, self.paths[index])
        self.procs[index] = proc
        return proc

    def start_all(self) -> None:
        for i in range(len(self.members)):
            self.start(i)

    def ready(self, index: int, timeout: float = 30.0) -> dict[str, Any]:
        return wait_node_ready(index, self.procs[index], self.paths[index], timeout)

    def stop_all(self) -> dict[int, int | None]:
        return {i: p.stop() for i, p in self.procs.items()}

    def signed_decisions(self, index: int) -> list[tuple[bytes, int, bytes]]:
        db = sqlite3.connect(self.paths[index].parent / "data" / "safety.sqlite")
        try:
            return [
                (bytes(a), b, bytes(c))
                for a, b, c in db.execute("SELECT settlement_id, action, terms_hash FROM decisions")
            ]
        finally:
            db.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
