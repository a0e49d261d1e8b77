"""docs/SCENARIOS.md is generated from the schema: stale or incomplete, a test says so."""

from __future__ import annotations

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios import reference_doc, schema

DOC = REPO_ROOT / "docs" / "SCENARIOS.md"


def test_scenario_reference_is_current() -> None:
    assert DOC.read_text() == reference_doc.render(), (
        f"docs/SCENARIOS.md is stale: regenerate it with `{reference_doc.COMMAND}`"
    )


def test_every_key_the_loader_reads_is_in_the_reference() -> None:
    text = reference_doc.render()
    for cls, table in (
        (schema.Committee, "[committee]"),
        (schema.Chain, "[[chains]]"),
        (schema.Settlements, "[settlements]"),
        (schema.Fault, "[[faults]]"),
        (schema.Budget, "[explore]"),
    ):
        section = text.split(f"## `{table}`", 1)[1].split("\n## ", 1)[0]
        for field in cls.__dataclass_fields__:
            key = schema._TOML_KEYS.get(cls, {}).get(field, field)
            if key != "fail":
                assert f"| `{key}` |" in section, (table, key)
    assert "| `time_limit` | number | `120.0` |" in text  # the loader's own default
    assert "| `name` | string | required |" in text


def test_a_key_without_a_meaning_is_an_error() -> None:
    docs = dict(schema.KEY_DOCS)
    del docs["chains.block_time"]
    docs["chains.blocktime"] = "a misspelt key"
    with pytest.raises(
        reference_doc.UndocumentedKey,
        match=r"missing \['chains.block_time'\], unknown \['chains.blocktime'\]",
    ):
        reference_doc.render(docs)
