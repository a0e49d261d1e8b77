"""`bank_adapter.cli.main`: one-line errors for a user's mistakes, offline reconcile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bank_adapter.cli import main
from bank_adapter.devcommittee import DevCommittee


def _files(tmp_path: Path, committee: DevCommittee) -> list[str]:
    committee.write_committee_file(tmp_path / "committee.json")
    (tmp_path / "clients.json").write_text(
        json.dumps({"clients": [{"client_id": "n", "secret": "ab" * 16}]})
    )
    return [
        "serve",
        "--db",
        str(tmp_path / "b.db"),
        "--committee",
        str(tmp_path / "committee.json"),
        "--clients",
        str(tmp_path / "clients.json"),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--host", "0.0.0.0"], "not one interface's address"),
        (["--committee", "/nonexistent/committee.json"], "cannot read it"),
        (["--clients", "/nonexistent/clients.json"], "cannot read it"),
        (["--admin-token", "short"], "at least 16 characters"),
        (["--webhook", "ftp://x"], "http:// or https://"),
    ],
)
def test_user_mistakes_are_one_line_errors(
    change: list[str],
    message: str,
    tmp_path: Path,
    committee: DevCommittee,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(_files(tmp_path, committee) + change) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("dvpsim bank: ")


def test_bad_clients_file(
    tmp_path: Path, committee: DevCommittee, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _files(tmp_path, committee)
    (tmp_path / "clients.json").write_text(
        json.dumps({"clients": [{"client_id": "n", "secret": "abcd"}]})
    )
    assert main(args) == 2
    assert "at least 16 bytes" in capsys.readouterr().err


def test_reconcile_command(tmp_path: Path, committee: DevCommittee) -> None:
    from bank_adapter.process import BankProcess

    with BankProcess(tmp_path / "bank", committee, accounts=[("alice", "EUR", 5)]) as bank:
        pass
    done = subprocess.run(
        [sys.executable, "-m", "bank_adapter", "reconcile", "--db", str(bank.db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("ok: 2 accounts")
    assert main(["reconcile", "--db", str(tmp_path / "none.db")]) == 2
