"""The native build (``native``): used when current, never when stale, and a run gives the
same history with it as without it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import native
from chain_adapters.build import REPO_ROOT
from tests.test_static import STRICT

#: Runs every shipped scenario (and the reference on two more seeds) in sim with fast
#: crypto, and prints whether the compiled modules were in use, then one digest per run.
_DIGESTS = r"""
import dataclasses, sys, tempfile
from collections.abc import Iterator
from pathlib import Path
import native, consensus.protocol
from scenarios.schema import ScenarioError, load
from scenarios.sim.run import SimRun
print(native.status(), consensus.protocol.__file__.endswith(".so"))
scenarios = [load(p) for p in sorted(Path("scenarios").glob("*.toml"))]
reference = load(Path("scenarios/reference.toml"))
scenarios += [dataclasses.replace(reference, seed=reference.seed + k) for k in (1, 2)]
for scenario in scenarios:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = SimRun(scenario, Path(tmp), crypto="fast").run()
        except ScenarioError as refused:  # rogue-key.toml: refused before it runs
            print(scenario.name, "refused:", refused)
            continue
        print(scenario.name, scenario.seed, report.digest, report.summary["passed"])
"""


def _digests(native_on: bool) -> list[str]:
    env = {**os.environ, "DVPSIM_NATIVE": "1" if native_on else "0"}
    done = subprocess.run(
        [sys.executable, "-c", _DIGESTS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_every_shipped_scenario_gives_the_same_history_compiled_and_interpreted() -> None:
    compiled, interpreted = _digests(True), _digests(False)
    assert compiled[0] == "native build: in use True", (
        f"{compiled[0]}: the test run expects scripts/setup.sh to have built it"
    )
    assert interpreted[0] == "native build: off (DVPSIM_NATIVE=0) False"
    assert len(compiled) > 10
    assert compiled[1:] == interpreted[1:]


def test_every_compiled_module_is_held_to_mypy_strict() -> None:
    # mypyc turns annotations into run-time checks; strict typing keeps them true.
    for module in native.MODULES:
        assert any(module == s or module.startswith(s.rstrip("/") + "/") for s in STRICT), module


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "native" / "current.json"
    path.parent.mkdir()
    monkeypatch.setattr(native, "MANIFEST", path)
    monkeypatch.delenv("DVPSIM_NATIVE", raising=False)
    native._current.cache_clear()
    yield path
    native._current.cache_clear()


def test_a_stale_build_is_never_used(manifest: Path) -> None:
    (manifest.parent / "tree").mkdir()
    manifest.write_text(json.dumps({"key": "0" * 64, "tree": "tree"}))
    assert native.extend(["src/consensus"], "consensus") == ["src/consensus"]
    assert "stale" in native.status()


def test_a_current_build_comes_first(manifest: Path) -> None:
    (manifest.parent / "tree").mkdir()
    manifest.write_text(json.dumps({"key": native.source_key(), "tree": "tree"}))
    tree = manifest.parent / "tree"
    assert native.extend(["src/sim"], "scenarios.sim") == [
        str(tree / "scenarios" / "sim"),
        "src/sim",
    ]
    assert native.status() == "native build: in use"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "not built"),
        ("{", "unreadable manifest"),
        ("[]", "unreadable manifest"),
        ('{"key": "x"}', "no compiled tree named"),
        ('{"tree": "gone"}', "stale"),
    ],
)
def test_no_usable_build_means_the_sources_alone(
    manifest: Path, content: str | None, says: str
) -> None:
    if content is not None:
        manifest.write_text(content)
    assert native.extend(["src"], "node") == ["src"]
    assert says in native.status()


def test_a_listed_tree_that_is_gone_is_not_used(manifest: Path) -> None:
    manifest.write_text(json.dumps({"key": native.source_key(), "tree": "gone"}))
    assert native.extend(["src"], "node") == ["src"]
    assert "missing compiled tree" in native.status()


def test_switched_off_by_the_environment(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVPSIM_NATIVE", "0")
    assert native.extend(["src"], "node") == ["src"]
    assert native.status() == "native build: off (DVPSIM_NATIVE=0)"


def test_every_compiled_class_that_judges_its_own_fields_stays_a_python_class() -> None:
    # Compiled as a native class, a wrong field type would raise mypyc's TypeError before
    # the class's own check: another error than the interpreted run's (see native).
    for module in native.MODULES:
        tree = ast.parse((REPO_ROOT / module).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            judges = any(
                isinstance(f, ast.FunctionDef) and f.name == "__post_init__" for f in node.body
            )
            python_class = any(
                "mypyc_attr" in ast.unparse(d) and "native_class=False" in ast.unparse(d)
                for d in node.decorator_list
            )
            untyped_self = any(
                isinstance(f, ast.FunctionDef)
                and f.name == "__post_init__"
                and f.args.args[0].annotation is not None
                and ast.unparse(f.args.args[0].annotation) == "Any"
                for f in node.body
            )
            assert (python_class and untyped_self) or not judges, f"{module}: {node.name}"


def test_a_bad_field_is_refused_by_the_classes_own_error_compiled_or_not() -> None:
    from consensus.messages import MessageError, NewEpoch
    from consensus.report import Report, ReportError

    with pytest.raises(MessageError):
        NewEpoch("3")  # type: ignore[arg-type]
    with pytest.raises(ReportError):
        Report(b"\0" * 32, 1, 1, [])  # type: ignore[arg-type]


def test_a_current_key_naming_no_tree_is_not_used(manifest: Path) -> None:
    manifest.write_text(json.dumps({"key": native.source_key(), "tree": ""}))
    assert native.extend(["src"], "node") == ["src"]
    assert "missing compiled tree" in native.status()
