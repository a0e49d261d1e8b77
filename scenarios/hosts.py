"""Where the parts of a real run listen: a hosts file (`dvpsim run SCENARIO --hosts FILE`).

By default every part of a real run binds 127.0.0.1. A hosts file lays the run out over
addresses that other machines (or other network namespaces) reach:

    services = "10.213.0.1"        # the chains (anvil) and the bank bind this address

    [[nodes]]                      # one table per endpoint: members 0..n-1, then twin copies
    host = "10.213.0.2"            # its libp2p listen address, bank callbacks and metrics
    exec = ["ip", "netns", "exec", "dvpsim-n0"]   # optional: what its process starts under

Every node's config then names the others by ``/ip4/HOST/tcp/PORT/p2p/ID`` and the
services by ``http://SERVICES:PORT``; the runner starts each node process under its
``exec`` prefix, which must run the node in place (the runner stops it by its PID) and see
the run folder at the same path. docs/DEPLOY.md has the steps and what must be reachable.

This module only reads and validates; every mistake is one :class:`HostsError` line
naming the file, the key and the fix. It starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import host_problem
from scenarios.schema import read_toml

LOOPBACK = "127.0.0.1"


class HostsError(ValueError):
    """A hosts file is invalid; one line: file, key, problem, fix."""


@dataclass(frozen=True)
class NodeHost:
    host: str = LOOPBACK
    exec: tuple[str, ...] = ()  # the command prefix the node process starts under


@dataclass(frozen=True)
class Hosts:
    services: str = LOOPBACK
    nodes: tuple[NodeHost, ...] = ()  # by endpoint; none: every node on 127.0.0.1

    def node(self, endpoint: int) -> NodeHost:
        return self.nodes[endpoint] if self.nodes else NodeHost()


LOCAL = Hosts()  # everything on 127.0.0.1, as without a hosts file


def load_hosts(path: str | Path, endpoints: int) -> Hosts:
    """The layout in ``path`` for a run of ``endpoints`` node processes (n members and
    their twin copies)."""
    path = Path(path)
    raw = read_toml(path, "hosts file", error=HostsError)

    def fail(key: str, problem: str, fix: str) -> HostsError:
        return HostsError(f"{path}: {key}: {problem}: {fix}")

    def address(key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise fail(key, "missing or not a string", 'give an IPv4 address, e.g. "10.0.0.2"')
        problem = host_problem(value)
        if problem is not None:
            raise fail(key, problem, "give the address of one interface, e.g. 10.0.0.2")
        return value

    unknown = set(raw) - {"services", "nodes"}
    if unknown:
        raise fail(sorted(unknown)[0], "unknown key", "use services and [[nodes]]")
    services = address("services", raw.get("services"))
    tables = raw.get("nodes", [])
    if not isinstance(tables, list) or len(tables) != endpoints:
        count = len(tables) if isinstance(tables, list) else "no"
        raise fail(
            "nodes",
            f"{count} [[nodes]] tables for {endpoints} node processes",
            "give one per member in index order, then one per twin copy",
        )
    nodes = []
    for i, table in enumerate(tables):
        key = f"nodes[{i}]"
        if not isinstance(table, dict):
            raise fail(key, "not a table", "write each node as a [[nodes]] table")
        unknown = set(table) - {"host", "exec"}
        if unknown:
            raise fail(f"{key}.{sorted(unknown)[0]}", "unknown key", "use host and exec")
        prefix = table.get("exec", [])
        if not isinstance(prefix, list) or not all(isinstance(a, str) and a for a in prefix):
            raise fail(
                f"{key}.exec",
                "not a list of words",
                'give the command prefix as words, e.g. ["ip", "netns", "exec", "n0"]',
            )
        nodes.append(NodeHost(address(f"{key}.host", table.get("host")), tuple(prefix)))
    return Hosts(services, tuple(nodes))
