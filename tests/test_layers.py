"""The import structure: layers point one way, no cycles, and the real runtime reaches the
node's logic only through the node driver."""

from __future__ import annotations

import ast
from pathlib import Path

from chain_adapters.build import REPO_ROOT

PACKAGES = (
    "native",
    "processes",
    "consensus",
    "chain_adapters",
    "bank_adapter",
    "node",
    "scenarios",
    "dvpsim",
)
#: What each package may import from the project (the layers, bottom to top).
ALLOWED = {
    "native": {"native"},  # the native build's loader: below everything
    "processes": {"native", "processes"},
    "consensus": {"native", "consensus"},
    "chain_adapters": {"native", "consensus", "chain_adapters", "processes"},
    "bank_adapter": {"native", "consensus", "bank_adapter", "processes"},
    "node": {"native", "consensus", "chain_adapters", "bank_adapter", "node", "processes"},
    "scenarios": {
        "native",
        "consensus",
        "chain_adapters",
        "bank_adapter",
        "node",
        "scenarios",
        "processes",
    },
    "dvpsim": set(PACKAGES),
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports, at any level of the file (function-level too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name in known:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def reachable(edges: dict[str, set[str]], start: str, without: str | None = None) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        for target in edges.get(module, ()):
            if target != without and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_runtime_reaches_consensus_and_the_dvp_rules_only_through_the_driver() -> None:
    edges = graph()
    direct = edges["node.runtime"]
    for logic in ("consensus.protocol", "node.dvp", "node.legs"):
        assert logic not in direct, f"node/runtime.py imports {logic} itself"
        assert logic in reachable(edges, "node.runtime"), f"{logic} is not reached at all"
        assert logic not in reachable(edges, "node.runtime", without="node.driver"), (
            f"node/runtime.py reaches {logic} around the driver"
        )


def test_layers_point_one_way() -> None:
    for module, targets in graph().items():
        package = module.split(".")[0]
        for target in targets:
            assert target.split(".")[0] in ALLOWED[package], f"{module} imports {target}"


def test_no_import_cycles() -> None:
    edges = graph()
    for module in edges:
        assert module not in reachable(edges, module), f"{module} imports itself in a cycle"


def test_the_fast_crypto_suite_is_never_reached_from_a_real_node() -> None:
    edges = graph()
    for entry in ("node.cli", "node.assemble", "node.runtime", "scenarios.real"):
        assert "scenarios.sim.fastcrypto" not in reachable(edges, entry)
