"""The contract build: compiles with pinned solcjs, caches by hash, reports file:line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain_adapters import build, toolchain


def test_compiles_every_contract_with_pinned_settings(contracts: dict[str, build.Artifact]) -> None:
    probe = contracts["PrecompileProbe"]
    assert probe.bytecode.startswith("0x60") and len(probe.bytecode) > 100
    assert any(item.get("name") == "pairingCheck" for item in probe.abi)
    assert build.SETTINGS["evmVersion"] == "prague" and build.SETTINGS["optimizer"]["enabled"]
    assert toolchain.solcjs_version(toolchain.solcjs_path()) == build.SOLC_VERSION


def test_cache_is_keyed_by_source_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVPSIM_BUILD_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "A.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.30;\ncontract A { uint256 public x = 1; }\n"
    )
    first = build.compile_contracts(src)
    cached = list((tmp_path / "cache").glob("*.json"))
    assert len(cached) == 1
    assert build.compile_contracts(src) == first  # served from the cache
    (src / "A.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.30;\ncontract A { uint256 public x = 2; }\n"
    )
    changed = build.compile_contracts(src)
    assert changed["A"].bytecode != first["A"].bytecode
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_broken_contract_reports_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVPSIM_BUILD_DIR", str(tmp_path / "cache"))
    (tmp_path / "Ok.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.30;\ncontract Ok {}\n"
    )
    (tmp_path / "Broken.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.30;\n\ncontract Broken {\n"
        "    function f() public pure returns (uint256) { return 1 }\n}\n"
    )
    with pytest.raises(build.CompileError) as info:
        build.compile_contracts(tmp_path)
    assert str(info.value).startswith("Broken.sol:5: ParserError:"), str(info.value)
    assert not list((tmp_path / "cache").glob("*.json"))  # nothing cached for a failed build


def test_type_error_reports_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVPSIM_BUILD_DIR", str(tmp_path / "cache"))
    (tmp_path / "T.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.30;\ncontract T {\n"
        "    function f() public pure returns (uint256) {\n        return undefinedName;\n    }\n}\n"
    )
    with pytest.raises(
        build.CompileError, match=r"^T\.sol:5: DeclarationError: Undeclared identifier"
    ):
        build.compile_contracts(tmp_path)


def test_solcjs_preamble_before_json_is_skipped() -> None:
    parsed = build._parse_solcjs_stdout('>>> Cannot retry compilation with SMT\n{"errors": []}')
    assert parsed == {"errors": []}
    with pytest.raises(build.CompileError, match="no JSON"):
        build._parse_solcjs_stdout("segfault\n")


def test_missing_solcjs_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVPSIM_SOLCJS", str(tmp_path / "solc.js"))
    with pytest.raises(build.ToolchainMissing, match="solcjs not found at DVPSIM_SOLCJS="):
        build.compile_sources({"A.sol": "contract A {}"})


def test_large_output_is_not_truncated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """solcjs exits right after writing: a pipe would cut its answer at 64 KiB."""
    monkeypatch.setenv("DVPSIM_BUILD_DIR", str(tmp_path / "cache"))
    body = "".join(
        f"    function f{i}(uint256 a) external pure returns (uint256) {{ return a * {i + 1}; }}\n"
        for i in range(200)
    )
    for k in range(6):
        (tmp_path / f"Big{k}.sol").write_text(
            f"// SPDX-License-Identifier: MIT\npragma solidity 0.8.30;\ncontract Big{k} {{\n{body}}}\n"
        )
    artifacts = build.compile_contracts(tmp_path)
    assert len(artifacts) == 6
    size = sum(
        len(json.dumps(a.abi)) + len(a.bytecode) + len(a.deployed_bytecode)
        for a in artifacts.values()
    )
    assert size > 200_000
