"""The scenario reference, docs/SCENARIOS.md, generated from the schema so it cannot drift.

Every table and key comes from :mod:`scenarios.schema` itself: the keys and their types
from the dataclasses the loader fills, the defaults from the dataclasses (and, for the
top-level keys, from loading the reference scenario without them), the allowed values from
the schema's own tuples (``KEY_VALUES``), and the one-line meanings from ``KEY_DOCS``.
A key without a meaning, or a meaning without a key, is an error.

Regenerate with::

    python -m scenarios.reference_doc > docs/SCENARIOS.md

This module only reads the schema and prints; it never runs anything.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scenarios import schema

COMMAND = "python -m scenarios.reference_doc > docs/SCENARIOS.md"
REFERENCE = Path(__file__).resolve().parent / "reference.toml"


class UndocumentedKey(Exception):
    """The schema and ``schema.KEY_DOCS`` disagree; the message names the keys."""


@dataclasses.dataclass(frozen=True)
class Key:
    path: str  # dotted, arrays of tables without an index: "chains.block_time"
    type: str
    default: str  # as TOML, or "required"
    values: tuple[str, ...]
    meaning: str


@dataclasses.dataclass(frozen=True)
class Table:
    path: str  # "" for the top level
    array: bool  # [[path]] rather than [path]
    keys: tuple[Key, ...]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _type_name(hint: Any) -> str:
    if hint is int:
        return "integer"
    if hint is float:
        return "number"
    if hint is str:
        return "string"
    if hint is bool:
        return "boolean"
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return f"array of {_type_name(args[0])}s".replace(
            "integer or strings", "integers or strings"
        )
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    raise TypeError(f"no TOML name for {hint!r}")


def _table_class(hint: Any) -> type | None:
    """The dataclass behind a field typed ``X``, ``X | None`` or ``tuple[X, ...]``."""
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate) and isinstance(candidate, type):
            return candidate
    return None


def _tables(path: str, cls: type, array: bool) -> Iterator[Table]:
    hints = typing.get_type_hints(cls, vars(schema))
    aliases = schema._TOML_KEYS.get(cls, {})
    keys, nested = [], []
    for f in dataclasses.fields(cls):
        key = f"{path}.{aliases.get(f.name, f.name)}"
        sub = _table_class(hints[f.name])
        if sub is not None:  # settlements.fail: an array of tables inside a table
            nested.append((key, sub))
            continue
        default = "required" if f.default is dataclasses.MISSING else _toml(f.default)
        keys.append(
            Key(key, _type_name(hints[f.name]), default, schema.KEY_VALUES.get(key, ()), "")
        )
    yield Table(path, array, tuple(keys))
    for key, sub in nested:
        yield from _tables(key, sub, True)


def _top_level() -> Table:
    """The top-level keys; a key's default is what loading the reference scenario without
    it gives (required when the loader refuses that)."""
    raw = schema.read_toml(REFERENCE, "scenario")
    keys = []
    for name, kind in schema._TOP_KEYS.items():
        if kind in (dict, list):
            continue
        try:
            loaded = schema.parse({k: v for k, v in raw.items() if k != name})
        except schema.ScenarioError:
            default = "required"
        else:
            value = getattr(loaded, name)
            default = _toml(value) if name != "expect" else _toml(list(value) or "pass")
        type_name = 'string "pass" or array of strings' if name == "expect" else _type_name(kind)
        keys.append(Key(name, type_name, default, schema.KEY_VALUES.get(name, ()), ""))
    return Table("", False, tuple(keys))


def tables() -> list[Table]:
    """Every table of a scenario file and its keys, in the order of the Scenario class."""
    hints = typing.get_type_hints(schema.Scenario, vars(schema))
    found = [_top_level()]
    for name, kind in schema._TOP_KEYS.items():
        if kind not in (dict, list):
            continue
        cls = _table_class(hints[name])
        assert cls is not None, name
        found.extend(_tables(name, cls, kind is list))
    return found


def _documented(docs: dict[str, str]) -> list[Table]:
    found = tables()
    paths = {t.path for t in found if t.path} | {k.path for t in found for k in t.keys}
    missing, unknown = sorted(paths - docs.keys()), sorted(docs.keys() - paths)
    if missing or unknown:
        raise UndocumentedKey(
            f"scenarios/schema.py KEY_DOCS: missing {missing or 'none'}, unknown {unknown or 'none'}: "
            "give every scenario key one line there"
        )
    return [
        dataclasses.replace(
            t, keys=tuple(dataclasses.replace(k, meaning=docs[k.path]) for k in t.keys)
        )
        for t in found
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(docs: dict[str, str] | None = None) -> str:
    """docs/SCENARIOS.md's text; :class:`UndocumentedKey` when ``docs`` (default
    ``schema.KEY_DOCS``) and the schema disagree."""
    docs = schema.KEY_DOCS if docs is None else docs
    out = [
        "# Scenario reference",
        "",
        f"<!-- Generated from scenarios/schema.py by `{COMMAND}`: edit the schema, not this file. -->",
        "",
        "A scenario is a TOML file (`scenarios/*.toml`) that `dvpsim run` and `dvpsim sim` read.",
        "Unknown keys are errors, and every mistake is reported in one line that names the",
        "file, the key and the fix. Arrays of tables (`[[chains]]`) are written once per entry.",
        "Numbers: an integer is accepted where a number is expected.",
        "",
    ]
    for table in _documented(docs):
        if table.path:
            heading = f"[[{table.path}]]" if table.array else f"[{table.path}]"
            out += [f"## `{heading}`", "", _cell(docs[table.path]), ""]
        else:
            out += ["## Top level", ""]
        out += [
            "| key | type | default | allowed values | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key in table.keys:
            name = key.path.rsplit(".", 1)[-1] if table.path else key.path
            values = ", ".join(f"`{v}`" for v in key.values)
            out.append(
                f"| `{name}` | {key.type} | `{_cell(key.default)}` | {values} | {_cell(key.meaning)} |"
                if key.default != "required"
                else f"| `{name}` | {key.type} | required | {values} | {_cell(key.meaning)} |"
            )
        out.append("")
    out += [
        "## Fault kinds",
        "",
        "Every `[[faults]]` entry has `kind`, `at` and `duration`; each kind takes these keys",
        "besides (any other is an error):",
        "",
        "| kind | keys |",
        "| --- | --- |",
    ]
    aliases = schema._TOML_KEYS[schema.Fault]
    for kind in schema.FAULT_KINDS:
        keys = sorted(aliases.get(k, k) for k in schema._FAULT_KEYS[kind])
        out.append(f"| `{kind}` | {', '.join(f'`{k}`' for k in keys) or 'none'} |")
    out.append("")
    return "\n".join(out)


def main() -> int:
    try:
        sys.stdout.write(render())
    except UndocumentedKey as exc:
        print(f"scenarios.reference_doc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
