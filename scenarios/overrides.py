"""Varying a scenario from the command line, and finding the scenarios dvpsim ships.

``--set KEY=VALUE`` (repeatable) changes one key of a scenario's TOML data before the
schema validates it, so an override gets the schema's own one-line errors:

- KEY is a dotted path: ``committee.n``, ``settlements.fail.0.count``; an array of
  tables is addressed by index, as in ``chains.0.block_time``;
- VALUE is parsed as a TOML value (``7``, ``0.5``, ``true``, ``"A"``, ``[0, 1]``,
  ``{node = 2}``); text that is not TOML is taken as a string (``mode=single-chain-bank``).

A missing table on the way is created (``--set committee.n=7`` in a file with no
``[committee]``); an unknown key is then refused by the schema, like a misspelt key in
the file. An index beyond the array, or a key below a plain value, is one line here.

Bundled scenarios are the ``*.toml`` files of the installed ``scenarios`` package, found
with importlib.resources, so ``dvpsim run reference`` works from any folder. Each is
described by the first sentence of its opening comment.

This module reads scenario files and validates through ``scenarios.schema``; it never
starts anything.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from scenarios.schema import Scenario, ScenarioError, parse, read_toml


class OverrideError(ScenarioError):
    """A ``--set`` is malformed or addresses nothing; ``str(e)`` is one line."""


@dataclass(frozen=True)
class Override:
    """One ``--set KEY=VALUE``: the key's path (table keys and array indexes) and the value."""

    text: str
    path: tuple[str, ...]
    value: Any


def parse_override(text: str) -> Override:
    """``KEY=VALUE`` as an :class:`Override` (module docstring); OverrideError if malformed."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OverrideError(
            f"--set {text!r}: expected KEY=VALUE: e.g. --set committee.n=7 "
            "or --set chains.0.block_time=0.5"
        )
    path = tuple(part.strip() for part in key.split("."))
    if any(not part for part in path):
        raise OverrideError(f"--set {text!r}: {key!r} has an empty part: write keys like a.b.0.c")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # not a TOML value: plain text, e.g. a mode's name
    return Override(text, path, value)


def apply(data: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """A copy of a scenario's TOML data with each override applied in order."""
    result = copy.deepcopy(data)
    for override in overrides:
        _apply_one(result, override)
    return result


def _apply_one(data: dict[str, Any], override: Override) -> None:
    node: Any = data
    for depth, part in enumerate(override.path):
        last = depth == len(override.path) - 1
        where = ".".join(override.path[:depth]) or "the scenario"
        if isinstance(node, dict):
            if last:
                node[part] = override.value
                return
            node = node.setdefault(part, {})
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise OverrideError(
                    f"--set {override.text}: {where} is an array of {len(node)}: "
                    f"address an entry by its index, 0 to {len(node) - 1}"
                    if node
                    else f"--set {override.text}: {where} is an empty array: "
                    "add the entry to the scenario file"
                )
            if last:
                node[int(part)] = override.value
                return
            node = node[int(part)]
        else:
            raise OverrideError(
                f"--set {override.text}: {where} is the value {node!r}, not a table: "
                f"set {where} itself"
            )


def load(
    path: Path, overrides: Sequence[str] = (), seed: int | None = None
) -> tuple[Scenario, dict[str, Any]]:
    """The scenario at ``path`` with ``overrides`` (``--set`` texts) and then ``seed``
    applied, validated by the schema, and the effective TOML data; ScenarioError (one line)."""
    data = read_toml(path, "scenario", "see `dvpsim scenarios` for the bundled ones")
    data = apply(data, [parse_override(text) for text in overrides])
    if seed is not None:
        data["seed"] = seed
    return parse(data, path), data


# --------------------------------------------------------------------------- bundled


def bundled_folder() -> Path:
    """Where the installed ``scenarios`` package keeps its scenario files."""
    return Path(str(resources.files("scenarios")))


def resolve(name_or_path: str) -> Path:
    """A scenario argument as a path: an existing file as given, otherwise the bundled
    scenario of that name (``reference`` or ``reference.toml``), otherwise the path as
    given (the loader then says it does not exist)."""
    given = Path(name_or_path)
    if given.exists() or given.parent != Path("."):
        return given
    stem = given.name.removesuffix(".toml")
    candidate = bundled_folder() / f"{stem}.toml"
    return candidate if candidate.is_file() else given


def description(path: Path) -> str:
    """The first sentence of a scenario file's opening comment ("" when it has none)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(part for part in lines if part)
    sentence, _, _ = text.partition(". ")
    return sentence.rstrip(".") if sentence else ""


def bundled() -> list[tuple[str, str]]:
    """Each bundled scenario's name and description, by name."""
    paths = sorted(bundled_folder().glob("*.toml"), key=lambda path: path.stem)
    return [(path.stem, description(path)) for path in paths]
