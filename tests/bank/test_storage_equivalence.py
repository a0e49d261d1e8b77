"""The same Hypothesis-generated operation sequences run against both storages (SQLite and
in-memory): every outcome and every snapshot must be equal, and the books must reconcile
after every step. Certificates are reduced to Authorizations here (the core's input), drawn
from a small pool so that replays, wrong actions and duplicates happen often."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bank_adapter import ledger
from bank_adapter.ledger import Authorization, LedgerError, Operation, Outcome, reconcile
from bank_adapter.sqlite_storage import SqliteStorage
from bank_adapter.storage import MemoryStorage
from bank_adapter.terms import MAX_AMOUNT, PaymentTerms

ACCOUNTS = ["alice", "bob", "carol", "dave", "erin"]
# Every program starts from these books, so most instructions name real accounts.
INITIAL: list[tuple[Any, ...]] = [
    ("open", "alice", "EUR", 1000),
    ("open", "bob", "EUR", 0),
    ("open", "carol", "USD", 700),
]
SETTLEMENTS = [bytes([i]) * 32 for i in range(1, 11)]
# Weighted towards the funded accounts of INITIAL.
PAYERS = ["alice", "alice", "alice", "carol", "bob", "dave", "erin"]
PAYEES = ["bob", "bob", "bob", "alice", "carol", "dave", "erin"]
REPORTS = [bytes([0xA0 + i]) * 32 for i in range(8)]
START_MS = 1_700_000_000_000

amounts = st.one_of(st.integers(1, 800), st.sampled_from([1, MAX_AMOUNT // 2, MAX_AMOUNT]))
# None means "the operation the request performs": most certificates fit, some do not.
operations = st.sampled_from([None] * 9 + list(Operation))
right_terms = st.sampled_from([True] * 6 + [False])

op_open = st.tuples(
    st.just("open"),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(["EUR", "USD"]),
    st.one_of(st.integers(0, 3000), st.sampled_from([MAX_AMOUNT // 3, MAX_AMOUNT])),
)
op_prevalidate = st.tuples(
    st.just("prevalidate"),
    st.integers(0, len(SETTLEMENTS) - 1),
    st.sampled_from(PAYERS),
    st.sampled_from(PAYEES),
    amounts,
    st.sampled_from(["EUR", "EUR", "EUR", "USD"]),
    st.integers(-5, 60),  # deadline relative to now, seconds
    st.integers(0, len(REPORTS) - 1),
    operations,
    right_terms,  # certify the right terms hash
)
op_finish = st.tuples(
    st.sampled_from(["execute", "cancel"]),
    # Mostly an instruction that is PREVALIDATED (index into them), sometimes any settlement.
    st.one_of(
        st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(-len(SETTLEMENTS), -1)
    ),
    st.integers(0, len(REPORTS) - 1),
    operations,
    right_terms,
)
op_time = st.tuples(st.just("time"), st.integers(1, 30_000))
programs = st.lists(
    st.one_of(
        op_open, op_prevalidate, op_prevalidate, op_prevalidate, op_finish, op_finish, op_time
    ),
    min_size=10,
    max_size=60,
)


def _run(storage: Any, rule: Any, *args: Any) -> Any:
    try:
        with storage.transaction() as txn:
            result = rule(txn, *args)
            txn.apply(result.changes if isinstance(result, Outcome) else result)
    except LedgerError as exc:
        return ("error", exc.code)
    if isinstance(result, Outcome):
        return ("ok", result.instruction, result.duplicate)
    return ("ok", result)


def _step(storage: Any, op: tuple[Any, ...], now_ms: int) -> Any:
    kind = op[0]
    if kind == "open":
        _, account, currency, balance = op
        return _run(storage, ledger.open_account, account, currency, balance, now_ms)
    if kind == "prevalidate":
        _, s, payer, payee, amount, currency, rel, r, operation, right = op
        if payer == payee:
            return ("skip",)
        terms = PaymentTerms(SETTLEMENTS[s], payer, payee, amount, currency, now_ms // 1000 + rel)
        th = terms.terms_hash() if right else bytes(32)
        auth = Authorization(REPORTS[r], SETTLEMENTS[s], operation or Operation.PREVALIDATE, th)
        return _run(storage, ledger.prevalidate, terms, auth, "c", f"k{now_ms}", now_ms)
    _, pick, r, operation, right = op
    if pick < 0:
        sid = SETTLEMENTS[pick]
    else:
        prepared = [
            i.settlement_id for i in storage.snapshot().instructions if i.state == "PREVALIDATED"
        ]
        sid = prepared[pick % len(prepared)] if prepared else SETTLEMENTS[pick]
    existing = storage.instruction(sid)
    th = existing.terms_hash if (existing is not None and right) else bytes(32)
    default = Operation.EXECUTE if kind == "execute" else Operation.CANCEL
    auth = Authorization(REPORTS[r], sid, operation or default, th)
    rule = ledger.execute if kind == "execute" else ledger.cancel
    return _run(storage, rule, sid, auth, "c", f"k{now_ms}", now_ms)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_sqlite_and_memory_storages_agree_and_books_always_reconcile(
    program: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteStorage(Path(tmp) / "ledger.db")
        memory = MemoryStorage()
        try:
            now_ms = START_MS
            supply: dict[str, int] = {}
            sqlite_view: dict[bytes, str] = {}
            memory_view: dict[bytes, str] = {}
            seqs: dict[object, int] = {sqlite: 0, memory: 0}
            for op in INITIAL + program:
                if op[0] == "time":
                    now_ms += op[1]
                    continue
                got_memory = _step(memory, op, now_ms)
                got_sqlite = _step(sqlite, op, now_ms)
                assert got_memory == got_sqlite, op
                event(
                    f"{op[0]}: {got_memory[0]} {got_memory[1] if got_memory[0] == 'error' else ''}"
                )
                if got_memory[0] == "ok" and isinstance(got_memory[1], ledger.Instruction):
                    event(
                        f"{op[0]} -> {got_memory[1].state} {got_memory[1].reject_reason} duplicate={got_memory[2]}"
                    )
                if op[0] == "open" and got_memory[0] == "ok":
                    supply[op[2]] = supply.get(op[2], 0) + op[3]
                snap = memory.snapshot()
                assert sqlite.snapshot() == snap
                assert (
                    sorted(sqlite.instruction_states())
                    == sorted(memory.instruction_states())
                    == sorted((i.settlement_id, i.state.value) for i in snap.instructions)
                )
                # Reading only what changed since the last read keeps the same picture.
                for storage, view in ((sqlite, sqlite_view), (memory, memory_view)):
                    changed, seqs[storage] = storage.instruction_states_since(seqs[storage])
                    view.update(changed)
                assert sorted(sqlite_view.items()) == sorted(sqlite.instruction_states())
                assert sorted(memory_view.items()) == sorted(memory.instruction_states())
                assert seqs[sqlite] == seqs[memory] == len(snap.events)
                assert reconcile(snap) == []
                # Conservation: customer money per currency is exactly what was opened.
                for currency, total in supply.items():
                    customer = sum(
                        a.balance
                        for a in snap.accounts
                        if a.currency == currency and not a.internal
                    )
                    assert customer == total
        finally:
            sqlite.close()


def test_sqlite_ledger_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    storage = SqliteStorage(path)
    memory = MemoryStorage()
    now = START_MS
    ops: list[tuple[Any, ...]] = [
        ("open", "alice", "EUR", 500),
        ("open", "bob", "EUR", 0),
        ("prevalidate", 0, "alice", "bob", 200, "EUR", 60, 0, Operation.PREVALIDATE, True),
        ("execute", 0, 1, Operation.EXECUTE, True),
    ]
    for op in ops:
        assert _step(storage, op, now) == _step(memory, op, now)
    storage.close()
    reopened = SqliteStorage(path)
    try:
        assert reopened.snapshot() == memory.snapshot()
    finally:
        reopened.close()


def test_group_commit_keeps_each_request_all_or_nothing(tmp_path: Path) -> None:
    """Inside one group (one COMMIT), a request that fails rolls back only its savepoint."""
    storage = SqliteStorage(tmp_path / "ledger.db")
    try:
        with storage.group():
            assert _step(storage, ("open", "alice", "EUR", 500), START_MS)[0] == "ok"
            try:
                with storage.transaction() as txn:
                    txn.apply(ledger.open_account(txn, "bob", "EUR", 7, START_MS))
                    raise RuntimeError("request crashed after staging its changes")
            except RuntimeError:
                pass
            assert _step(storage, ("open", "carol", "EUR", 1), START_MS)[0] == "ok"
        snap = storage.snapshot()
        assert [a.account_id for a in snap.accounts if not a.internal] == ["alice", "carol"]
        assert reconcile(snap) == []
    finally:
        storage.close()
