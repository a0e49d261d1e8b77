"""The docs stand alone: they name no file outside the repository, every link resolves,
every DVPSIM_ environment variable and every command is in the README, and the license
the project declares is the LICENSE file beside it."""

from __future__ import annotations

import re
import subprocess
import tomllib
import warnings
from pathlib import Path

from chain_adapters.build import REPO_ROOT
from dvpsim.cli import build_parser

README = REPO_ROOT / "README.md"
DOCS = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
#: Paths that exist only on the machines dvpsim is developed on, never in a clone.
OUTSIDE = re.compile(r"\.\./shared|\bshared/[A-Z]|/work/|file://|/root/|/home/[a-z]")
#: The same for any tracked file (code may well say file://).
MACHINE = re.compile(r"\.\./shared|\bshared/[A-Z]|/work/")
MARKDOWN_NAME = re.compile(r"\b([A-Za-z0-9_-]+\.md)\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *patterns],
        capture_output=True,
        cwd=REPO_ROOT,
        check=True,
    ).stdout.decode()
    return [REPO_ROOT / p for p in listed.split("\0") if p and (REPO_ROOT / p).is_file()]


def outside_references(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``path:line: text`` for each line naming a file outside the repository, and each
    relative link whose target is not in it."""
    found = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if OUTSIDE.search(line):
            found.append(f"{path.relative_to(root)}:{number}: {line.strip()[:120]}")
        if path.suffix == ".md":
            for target in LINK.findall(line):
                if "://" in target or target.startswith("mailto:"):
                    continue
                resolved = (path.parent / target).resolve()
                if not resolved.exists() or not resolved.is_relative_to(root):
                    found.append(f"{path.relative_to(root)}:{number}: link to {target}")
    return found


def test_readme_and_docs_name_no_file_outside_the_repository() -> None:
    problems = [p for doc in DOCS for p in outside_references(doc)]
    assert not problems, "\n".join(problems)


def test_no_tracked_text_file_names_the_development_machine() -> None:
    """No development-machine path, and every ``NAME.md`` named is a file of the repo."""
    this = Path(__file__).resolve()
    files = _tracked("*.py", "*.md", "*.toml", "*.sh", ".ci/*")
    markdown = {path.name for path in files if path.suffix == ".md"}
    problems = []
    for path in files:
        if path.resolve() == this:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            where = f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()[:120]}"
            if MACHINE.search(line):
                problems.append(where)
            if set(MARKDOWN_NAME.findall(line)) - markdown:
                problems.append(where)
    assert not problems, "\n".join(problems)


def test_the_outside_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ARCHITECTURE.md").write_text("# layers\n")
    doc = tmp_path / "docs" / "PROBE.md"
    doc.write_text(
        "see ../shared/STYLE.md\nsee [x](missing.md) and [y](ARCHITECTURE.md#layers)\n"
        "and [z](../../outside.md)\n"
    )
    assert outside_references(doc, tmp_path) == [
        "docs/PROBE.md:1: see ../shared/STYLE.md",
        "docs/PROBE.md:2: link to missing.md",
        "docs/PROBE.md:3: link to ../../outside.md",
    ]


def test_every_environment_variable_is_in_the_readme_table() -> None:
    used = set()
    for path in _tracked("*.py", "*.sh"):
        if "tests" not in path.relative_to(REPO_ROOT).parts:
            used |= set(re.findall(r"\bDVPSIM_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))
    assert {"DVPSIM_ANVIL", "DVPSIM_SOLCJS", "DVPSIM_BUILD_DIR", "DVPSIM_PYTHON"} <= used
    table = set(re.findall(r"^\| `(DVPSIM_[A-Z_]+)` \|", README.read_text(), re.M))
    assert used - table == set(), (
        f"add these to README's Environment variables table: {used - table}"
    )
    assert table - used == set(), f"README documents variables no code reads: {table - used}"


def test_every_command_is_in_the_readme_command_table() -> None:
    readme = README.read_text()
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for name in sub.choices:  # type: ignore[attr-defined]
        assert f"| `dvpsim {name}" in readme, f"README's command table lacks dvpsim {name}"
    assert "| `dvpsim bank reconcile --db FILE` |" in readme


def test_license_is_the_apache_text_the_project_declares() -> None:
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}  # the wheel carries LICENSE itself


def test_pyproject_reads_with_the_setuptools_of_the_environment() -> None:
    """The native build runs setup() beside pyproject.toml with the environment's own
    setuptools (3.11's venv brings 65.5): newer-only forms such as license = "SPDX" or
    project.license-files would break it."""
    from setuptools.config.pyprojecttoml import read_configuration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "[tool.setuptools] support is in beta"
        read_configuration(REPO_ROOT / "pyproject.toml")
