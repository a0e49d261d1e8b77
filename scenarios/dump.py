"""Scenarios back to TOML: ``dumps(scenario)`` writes the file that ``schema.parse`` reads as
the same scenario.

Explore and sweep write the schedules they find this way, so a counterexample is an
ordinary scenario file that ``dvpsim sim`` and ``dvpsim run`` take as it is. A table keeps
only the keys that differ from their defaults, and a fault only its kind's own keys, so a
minimal schedule reads as small as it is; ``tests/scenarios/test_dump.py`` holds every
shipped scenario to ``parse(tomllib.loads(dumps(s))) == s``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import fields
from typing import Any

from scenarios.schema import (
    _TOML_KEYS,
    Account,
    Bank,
    Budget,
    Byzantine,
    Chain,
    Committee,
    Failure,
    Fault,
    Scenario,
    Settlements,
    Timing,
)

__all__ = ["dumps"]

#: The fields every table of the class is written with, defaults or not.
_ALWAYS: dict[type, tuple[str, ...]] = {
    Chain: ("name", "chain_id"),
    Account: ("name",),
    Byzantine: ("nodes", "behaviours"),
    Failure: ("count", "reason"),
    Fault: ("kind", "at"),
}


def _value(value: Any) -> str:
    """One TOML value: strings in JSON quoting (a subset of TOML's basic strings), floats
    that read back as the same float, arrays of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no TOML form in a scenario")
        return repr(value)
    if isinstance(value, str):
        # JSON escapes the control characters below U+0020; TOML also wants U+007F escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__} {value!r}")


def _pairs(item: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """``key = value`` lines of a dataclass, only the keys a reader needs."""
    cls = type(item)
    always = _ALWAYS.get(cls, ())
    aliases = _TOML_KEYS.get(cls, {})
    defaults = cls(**{name: getattr(item, name) for name in always})
    lines = []
    for spec in fields(cls):
        name = spec.name
        if name in skip:
            continue
        value = getattr(item, name)
        if name not in always and value == getattr(defaults, name):
            continue
        lines.append(f"{aliases.get(name, name)} = {_value(value)}")
    return lines


def dumps(scenario: Scenario) -> str:
    """The TOML text of ``scenario``; ``parse`` of it gives ``scenario`` back (its path
    aside)."""
    out = [
        f"name = {_value(scenario.name)}",
        f"mode = {_value(scenario.mode)}",
        f"time_limit = {_value(scenario.time_limit)}",
        f"seed = {scenario.seed}",
    ]
    if scenario.unsafe_self_refund:
        out.append("unsafe_self_refund = true")
    out.append("expect = " + (_value(scenario.expect) if scenario.expect else '"pass"'))

    def table(header: str, item: Any, skip: tuple[str, ...] = ()) -> None:
        out.extend(["", header, *_pairs(item, skip)])

    if scenario.committee != Committee():  # a missing table reads as the defaults
        table("[committee]", scenario.committee)
    if scenario.timing != Timing():
        table("[timing]", scenario.timing)
    for chain in scenario.chains:
        table("[[chains]]", chain)
    if scenario.bank is not None:
        table("[bank]", scenario.bank)
        if scenario.bank == Bank():
            out.append("start = true")
    for account in scenario.accounts:
        table("[[accounts]]", account)
    if dataclasses.replace(scenario.settlements, fail=()) != Settlements():
        table("[settlements]", scenario.settlements, skip=("fail",))
    for failure in scenario.settlements.fail:
        table("[[settlements.fail]]", failure)
    for group in scenario.byzantine:
        table("[[byzantine]]", group)
    for fault in scenario.faults:
        table("[[faults]]", fault)
    if scenario.explore != Budget():
        table("[explore]", scenario.explore)
    return "\n".join(out) + "\n"
