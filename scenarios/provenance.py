"""What a run folder says about itself: the ``run-start`` record that opens every history
and whose fields ``summary.json`` repeats.

A run is described by the dvpsim version that ran it, the scenario file and the
``--set`` overrides applied to it, the sha256 of the effective scenario (the validated
scenario, written as canonical JSON: two runs with the same hash ran the same scenario,
whichever file and overrides produced it), the seed and the absolute start time.

This module describes; it never reads a run folder or decides an outcome.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from scenarios.schema import Scenario

#: The version of the history and summary formats (docs/HISTORY.md, docs/schemas/). Raise
#: it when a record or a summary key changes meaning or is removed.
SCHEMA_VERSION: Final = 2
#: The fields of the ``run-start`` record, which ``summary.json`` carries too.
RUN_START_FIELDS: Final = (
    "schema_version",
    "dvpsim_version",
    "scenario_path",
    "overrides",
    "scenario_sha256",
    "seed",
    "started_at",
)
_PYPROJECT: Final = Path(__file__).resolve().parent.parent / "pyproject.toml"


@functools.cache
def dvpsim_version() -> str:
    """The installed package's version; in a checkout that was never installed, the
    version pyproject.toml declares."""
    try:
        return metadata.version("dvpsim")
    except metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))["project"]
        return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def canonical_scenario(scenario: Scenario) -> str:
    """The validated scenario as canonical JSON (sorted keys, no spaces), without the
    path it was read from: the same text for the same effective scenario."""
    data = dataclasses.asdict(scenario)
    data.pop("path")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def scenario_sha256(scenario: Scenario) -> str:
    return hashlib.sha256(canonical_scenario(scenario).encode()).hexdigest()


def run_start(scenario: Scenario, overrides: Sequence[str], started_at: float) -> dict[str, Any]:
    """The ``run-start`` record's fields (``RUN_START_FIELDS``). ``overrides``: the
    ``--set KEY=VALUE`` texts, in the order they were applied."""
    return {
        "schema_version": SCHEMA_VERSION,
        "dvpsim_version": dvpsim_version(),
        "scenario_path": str(scenario.path),
        "overrides": list(overrides),
        "scenario_sha256": scenario_sha256(scenario),
        "seed": scenario.seed,
        "started_at": round(started_at, 3),
    }
