"""Command line of the bank service: ``dvpsim bank serve`` and ``dvpsim bank reconcile``.

``serve`` opens (or creates) the SQLite ledger, loads the trusted committee and the client
credentials, optionally opens the accounts of an accounts file, and runs the HTTP API on one
address (127.0.0.1 by default) until SIGTERM/SIGINT, printing ``dvpsim-bank listening on http://HOST:PORT``
once it accepts connections. ``reconcile`` checks a ledger file offline (exit 0 if the books
hold, 1 with one line per problem otherwise).

Files (JSON; formats in docs/INTERFACES.md, section bank_adapter):
  --committee  the trusted committee with proofs of possession
  --clients    {"clients": [{"client_id": "node-0", "secret": "<hex, >= 16 bytes>"}]}
  --accounts   {"accounts": [{"account_id": "alice", "currency": "EUR", "opening_balance": 1000}]}
  --webhook-key  the Ed25519 key that signs callbacks (32 bytes hex; created if absent)

This module must never print a secret, bind every interface (0.0.0.0), or exit with a
traceback for a user's mistake (one line on stderr, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

__all__ = ["main"]

ADMIN_TOKEN_ENV = "DVPSIM_BANK_ADMIN_TOKEN"


class UsageError(Exception):
    """A user's mistake: printed as one line, exit status 2."""


def _read_json(path: str, what: str) -> object:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(
            f"{what} {path}: cannot read it ({exc.strerror}); pass an existing file"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{what} {path}: not valid JSON ({exc}); fix the file") from None


def load_webhook_key(path: str) -> Ed25519PrivateKey:
    """The callback signing key in ``path`` (hex of the 32-byte seed), created if absent."""
    p = Path(path)
    if not p.exists():
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(raw.hex() + "\n")
        return key
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(p.read_text().strip()))
    except (ValueError, OSError):
        raise UsageError(
            f"webhook key file {path}: must hold 64 hex digits (an Ed25519 seed); delete it to create a new one"
        ) from None


def _seed_accounts(service: object, path: str) -> None:
    from bank_adapter import ledger
    from bank_adapter.service import BankService

    assert isinstance(service, BankService)
    raw = _read_json(path, "accounts file")
    if not isinstance(raw, dict) or not isinstance(raw.get("accounts"), list):
        raise UsageError(f"accounts file {path}: must be an object with a list 'accounts'")
    for i, entry in enumerate(raw["accounts"]):
        if not isinstance(entry, dict) or set(entry) != {
            "account_id",
            "currency",
            "opening_balance",
        }:
            raise UsageError(
                f"accounts file {path}: accounts[{i}] needs exactly account_id, currency, opening_balance"
            )
        with service.storage.transaction() as txn:
            existing = txn.account(str(entry["account_id"]))
            if existing is not None:
                if existing.currency != entry["currency"]:
                    raise UsageError(
                        f"accounts file {path}: account {existing.account_id} exists in {existing.currency}, not {entry['currency']}"
                    )
                continue  # opened by an earlier start
            try:
                changes = ledger.open_account(
                    txn, entry["account_id"], entry["currency"], entry["opening_balance"], _now_ms()
                )
            except (ledger.LedgerError, ValueError) as exc:
                raise UsageError(f"accounts file {path}: accounts[{i}]: {exc}") from None
            txn.apply(changes)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def cmd_serve(args: argparse.Namespace) -> int:
    from bank_adapter.authorization import CommitteeFileError, load_committee
    from bank_adapter.server import (
        BankServer,
        ServerConfig,
        check_host,
        parse_clients,
        serve_forever,
    )
    from bank_adapter.service import BankService
    from bank_adapter.sqlite_storage import SqliteStorage
    from bank_adapter.storage import StorageIntegrityError

    try:
        check_host(args.host)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port; use 0 for any free port")
    try:
        committee = load_committee(args.committee)
    except CommitteeFileError as exc:
        raise UsageError(str(exc)) from None
    try:
        clients = parse_clients(
            _read_json(args.clients, "clients file"), f"clients file {args.clients}"
        )
    except ValueError as exc:
        raise UsageError(f"{exc}; fix the file") from None
    admin_token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
    if admin_token is not None and len(admin_token) < 16:
        raise UsageError(
            f"admin token must be at least 16 characters (--admin-token or ${ADMIN_TOKEN_ENV})"
        )
    for url in args.webhook:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--webhook {url}: must be an http:// or https:// URL")
    webhook_key = load_webhook_key(args.webhook_key or args.db + ".webhook-key")
    try:
        storage = SqliteStorage(args.db, args.webhook, synchronous=args.synchronous)
    except (StorageIntegrityError, OSError) as exc:
        raise UsageError(f"ledger {args.db}: {exc}") from None
    except Exception as exc:  # sqlite3.DatabaseError: not a database, locked, ...
        raise UsageError(
            f"ledger {args.db}: cannot open it as a SQLite ledger ({exc}); pass another --db"
        ) from None
    service = BankService(storage, committee)
    if args.accounts:
        _seed_accounts(service, args.accounts)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        admin_token=admin_token,
        webhook_retry_base_ms=args.webhook_retry_base_ms,
        webhook_retry_cap_ms=args.webhook_retry_cap_ms,
        webhook_poll_s=args.webhook_poll_ms / 1000,
        clients=clients,
    )
    server = BankServer(service, config, webhook_key)
    try:
        serve_forever(server)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror}); choose another --port"
        ) from None
    finally:
        storage.close()
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from bank_adapter.ledger import reconcile
    from bank_adapter.sqlite_storage import SqliteStorage

    if not Path(args.db).exists():
        raise UsageError(f"ledger {args.db} does not exist; pass the --db file of a bank")
    storage = SqliteStorage(args.db)
    try:
        snapshot = storage.snapshot()
    finally:
        storage.close()
    problems = reconcile(snapshot)
    for problem in problems:
        print(problem)
    executed = sum(1 for i in snapshot.instructions if i.state == "EXECUTED")
    print(
        f"{'ok' if not problems else 'BROKEN'}: {len(snapshot.accounts)} accounts, {len(snapshot.instructions)} instructions ({executed} executed), {len(snapshot.journal)} journal entries"
    )
    return 0 if not problems else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvpsim bank", description="the dvpsim bank payment service"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bank's HTTP API")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind: 127.0.0.1 (default), or one interface's address that nodes "
        "on other machines reach (never 0.0.0.0)",
    )
    serve.add_argument(
        "--port", type=int, default=9545, help="TCP port, 0 for any free port (default 9545)"
    )
    serve.add_argument("--db", required=True, help="SQLite ledger file (created if absent)")
    serve.add_argument("--committee", required=True, help="trusted committee JSON file")
    serve.add_argument("--clients", required=True, help="client credentials JSON file")
    serve.add_argument(
        "--accounts", help="accounts JSON file to open at start (existing ones are kept)"
    )
    serve.add_argument(
        "--admin-token",
        help=f"enables the admin API (accounts, faults, crash); or ${ADMIN_TOKEN_ENV}",
    )
    serve.add_argument(
        "--webhook", action="append", default=[], metavar="URL", help="callback URL (repeatable)"
    )
    serve.add_argument(
        "--webhook-key", help="Ed25519 callback signing key file (default: DB.webhook-key)"
    )
    serve.add_argument("--webhook-retry-base-ms", type=int, default=200)
    serve.add_argument("--webhook-retry-cap-ms", type=int, default=30_000)
    serve.add_argument("--webhook-poll-ms", type=int, default=250)
    serve.add_argument(
        "--synchronous",
        choices=["FULL", "EXTRA", "NORMAL"],
        default="FULL",
        help="SQLite durability (default FULL: a commit survives power loss)",
    )
    serve.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    serve.set_defaults(func=cmd_serve)
    rec = sub.add_parser("reconcile", help="check a ledger file's invariants offline")
    rec.add_argument("--db", required=True)
    rec.set_defaults(func=cmd_reconcile)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"dvpsim bank: {exc}", file=sys.stderr)
        return 2
