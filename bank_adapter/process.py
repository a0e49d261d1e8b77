"""Start the bank service as a child process, wait until it listens, stop it by PID.

``BankProcess`` runs ``python -m bank_adapter serve`` with a working directory of files it
writes (committee, clients, accounts) and reads the ready line to learn the port. It is how
tests, benchmarks and scenario runners get a real bank: ``kill()`` is a SIGKILL (a crash),
``stop()`` a SIGTERM with a bounded wait, ``start()`` again reopens the same ledger file.
The child is started, registered and stopped by ``processes`` (the one way dvpsim starts a
process), with ``PR_SET_PDEATHSIG``: start it from a thread that outlives it.

It must never signal a process it did not start, or leave its child running after
``stop()``; the bank binds ``host`` only (127.0.0.1 by default, never every interface).
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from bank_adapter.devcommittee import DevCommittee
from processes import ManagedProcess, ProcessStartError, start_process
from processes.private import write_private

__all__ = ["BankProcess", "BankStartError"]

_READY_PREFIX = "dvpsim-bank listening on "


class BankStartError(RuntimeError):
    """The bank process exited or stayed silent before listening; the message has its log."""


class BankProcess:
    def __init__(
        self,
        workdir: str | Path,
        committee: DevCommittee,
        *,
        clients: dict[str, bytes] | None = None,
        accounts: Sequence[tuple[str, str, int]] = (),
        webhooks: Sequence[str] = (),
        admin_token: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.committee = committee
        self.clients = clients or {"node-0": secrets.token_bytes(32)}
        # "" starts the bank without an admin API.
        self.admin_token = secrets.token_hex(16) if admin_token is None else admin_token
        self.db = self.workdir / "bank.db"
        self.log_path = self.workdir / "bank.log"
        self.webhook_key_path = self.workdir / "webhook.key"
        committee.write_committee_file(self.workdir / "committee.json")
        write_private(
            self.workdir / "clients.json",
            json.dumps(
                {"clients": [{"client_id": c, "secret": s.hex()} for c, s in self.clients.items()]}
            ),
        )
        (self.workdir / "accounts.json").write_text(
            json.dumps(
                {
                    "accounts": [
                        {"account_id": a, "currency": c, "opening_balance": b}
                        for a, c, b in accounts
                    ]
                }
            )
        )
        self._port = port
        self.host = host
        self.webhooks = tuple(webhooks)
        self.extra_args = tuple(extra_args)
        self.start_timeout_s = start_timeout_s
        self.process: ManagedProcess | None = None
        self.url = ""
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "bank_adapter",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self._port),
            "--db",
            str(self.db),
            "--committee",
            str(self.workdir / "committee.json"),
            "--clients",
            str(self.workdir / "clients.json"),
            "--accounts",
            str(self.workdir / "accounts.json"),
            "--webhook-key",
            str(self.webhook_key_path),
        ]
        for url in self.webhooks:
            cmd += ["--webhook", url]
        return cmd + list(self.extra_args)

    def start(self) -> str:
        """Start (or restart on the same ledger) and return the base URL."""
        if self.process is not None and self.process.running():
            raise RuntimeError("bank process is already running")
        self.starts += 1
        try:
            self.process = start_process(
                "bank",
                self.command(),
                self.log_path,
                env={"DVPSIM_BANK_ADMIN_TOKEN": self.admin_token, "PYTHONUNBUFFERED": "1"},
                ready_prefix=_READY_PREFIX,
                ready_timeout=self.start_timeout_s,
            )
        except ProcessStartError as exc:
            self.process = exc.process
            raise BankStartError(
                f"bank did not start ({exc}); log {self.log_path}:\n"
                + self.log_path.read_text(errors="replace")[-2000:]
            ) from None
        assert self.process.ready_line is not None
        self.url = self.process.ready_line[len(_READY_PREFIX) :].strip()
        # Later runs reuse the port so clients keep their base URL across restarts.
        self._port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def kill(self) -> None:
        """SIGKILL: the crash the ledger must survive."""
        if self.process is not None:
            self.process.kill()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is not None:
            self.process.stop(timeout_s)

    def __enter__(self) -> BankProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
