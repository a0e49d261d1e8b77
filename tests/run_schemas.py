"""Hold a run folder to the published JSON Schemas (docs/schemas/): every history line to
history-event.schema.json, summary.json to summary.schema.json, the history opening with
run-start and the summary repeating its fields."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from chain_adapters.build import REPO_ROOT
from scenarios.provenance import RUN_START_FIELDS

SCHEMAS = REPO_ROOT / "docs" / "schemas"


@functools.cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(name: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
        for e in validator(name).iter_errors(instance)
    ]


def assert_run_folder_conforms(folder: Path) -> None:
    records = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert records and records[0]["event"] == "run-start", records[:1]
    for number, record in enumerate(records, start=1):
        found = errors("history-event.schema.json", record)
        assert not found, f"history.jsonl line {number} ({record['event']}): {found}"
    summary = json.loads((folder / "summary.json").read_text())
    found = errors("summary.schema.json", summary)
    assert not found, f"summary.json: {found}"
    assert {k: summary[k] for k in RUN_START_FIELDS} == {k: records[0][k] for k in RUN_START_FIELDS}
