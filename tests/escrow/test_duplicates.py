"""Duplicate transmissions on DvPCoordinator (anvil): a copy of a report already done is
refused before its certificate is verified, cheaply; a report with a decision skipped for
a reason that can change is not marked done, so a later, good transmission still applies.

The gas figures are printed (``pytest -s``): the whole transaction's gasUsed and its
execution gas, which is gasUsed less the 21,000 base and the calldata (EIP-7623: a
transaction pays at least 10 gas per calldata token, so when that floor is what it paid
its execution cannot be read from the receipt), and the execution gas a trace of the
transaction counts, which the floor never hides.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chain_adapters.evm import connect
from chain_adapters.gas import FLOOR_TOKEN_GAS, NONZERO_BYTE_TOKENS, STANDARD_TOKEN_GAS, TX_BASE_GAS
from chain_adapters.localchain import DEV_PRIVATE_KEYS, LocalChain
from chain_adapters.model import Mode, SkipReason, State, Terms
from chain_adapters.sender import TransactionReverted, TransactionSender
from chain_adapters.verifier import set_bls_committee
from consensus.report import Action, Certificate
from consensus.signing import SigningCommittee
from node.pumps.evm import already_applied
from tests.escrow.escrow_helpers import Escrow

#: Execution gas a duplicate may use beyond the base cost and its calldata.
DUPLICATE_EXECUTION_LIMIT = 5_000
#: A duplicate is mined (an explicit gas limit skips the estimate that would refuse it).
GAS = 25_000_000


def _prepared(escrow: Escrow, count: int) -> list[Terms]:
    """``count`` asset escrows, locked by the seller (one transaction each, no estimate)."""
    batch = [escrow.terms(Mode.ASSET_ESCROW) for _ in range(count)]
    for t in batch:
        lock = escrow.co.contract.functions.createAndLock(t.as_abi())
        assert escrow.call(lock, t.seller, gas=500_000).receipt["status"] == 1
    return batch


def _commit(escrow: Escrow, batch: list[Terms], round: int = 1) -> Certificate:
    return escrow.certify(
        [(t.settlement_id, Action.COMMIT, t.terms_hash()) for t in batch], epoch=3, round=round
    )


def _execution_gas(escrow: Escrow, receipt: Any) -> tuple[int, int]:
    """(execution gas as the receipt shows it, execution gas as a trace counts it)."""
    tx = escrow.w3.eth.get_transaction(receipt["transactionHash"])
    data = bytes(tx["input"])
    zeros = data.count(0)
    tokens = zeros + NONZERO_BYTE_TOKENS * (len(data) - zeros)
    standard = TX_BASE_GAS + STANDARD_TOKEN_GAS * tokens
    floor = TX_BASE_GAS + FLOOR_TOKEN_GAS * tokens
    used = int(receipt["gasUsed"])
    from_receipt = 0 if used <= floor else used - standard
    # Replayed on the state the transaction left (a revert leaves it as it was).
    call = {"from": tx["from"], "to": tx["to"], "data": "0x" + data.hex(), "gas": hex(GAS)}
    options = {"disableStack": True, "disableStorage": True, "enableMemory": False}
    trace = escrow.w3.provider.make_request(
        "debug_traceCall", [call, hex(receipt["blockNumber"]), options]
    )["result"]["structLogs"]
    traced = int(trace[0]["gas"]) - int(trace[-1]["gas"]) + int(trace[-1]["gasCost"])
    return from_receipt, traced


@pytest.mark.parametrize(("batch", "strict"), [(1, False), (1, True), (64, False)])
def test_a_copy_of_a_done_report_is_refused_before_verification(
    escrow: Escrow, w3: Any, batch: int, strict: bool
) -> None:
    terms = _prepared(escrow, batch)
    cert = _commit(escrow, terms, round=7)
    first = escrow.apply(cert, terms, strict=strict, gas=GAS)
    assert first.names.count("SettlementCommitted") == batch
    again = escrow.apply(cert, terms, strict=strict, gas=GAS)
    receipt = again.receipt
    assert receipt["status"] == 0 and not again.events
    # The revert names the report: the transmitters read it as "already applied".
    call = escrow.w3.provider.make_request(
        "eth_call",
        [
            {
                "from": escrow.transmitter,
                "to": escrow.co.address,
                "data": "0x"
                + bytes(escrow.w3.eth.get_transaction(receipt["transactionHash"])["input"]).hex(),
            },
            "latest",
        ],
    )
    data = call["error"]["data"]
    assert escrow.co.decode_error_parts(bytes.fromhex(data.removeprefix("0x"))) == (
        "ReportAlreadyApplied",
        (3, 7),
    )
    from_receipt, traced = _execution_gas(escrow, receipt)
    print(
        f"\nduplicate of {batch} decision(s){' (strict)' if strict else ''}: "
        f"transaction {receipt['gasUsed']:,} gas (first copy {first.receipt['gasUsed']:,}), "
        f"execution {from_receipt:,} from the receipt, {traced:,} traced"
    )
    assert from_receipt <= DUPLICATE_EXECUTION_LIMIT
    assert traced <= DUPLICATE_EXECUTION_LIMIT
    assert escrow.co.states_of([t.settlement_id for t in terms]) == [State.COMMITTED] * batch


def test_a_report_skipped_for_a_changeable_reason_is_not_marked(escrow: Escrow, w3: Any) -> None:
    """A faulty transmitter's copy with wrong terms in calldata, and a decision sent before
    its settlement was prepared: neither marks the report, and a later copy applies."""
    good, unlocked = _prepared(escrow, 1)[0], escrow.terms(Mode.ASSET_ESCROW)
    assert escrow.create(unlocked).error is None
    cert = _commit(escrow, [good, unlocked], round=11)
    forged = replace(good, buyer=escrow.other)  # does not hash to the certified terms
    first = escrow.apply(cert, [forged, unlocked], gas=GAS)
    skipped = [e.reason for e in first.events or [] if e.NAME == "DecisionSkipped"]
    assert skipped == [SkipReason.TERMS_CALLDATA_MISMATCH, SkipReason.NOT_PREPARED]
    assert escrow.lock_asset(unlocked).error is None
    second = escrow.apply(cert, [good, unlocked], gas=GAS)
    assert second.names.count("SettlementCommitted") == 2
    # Now every decision is final: the next copy is refused early.
    third = escrow.apply(cert, [good, unlocked], gas=GAS)
    assert third.receipt["status"] == 0
    assert escrow.co.states_of([good.settlement_id, unlocked.settlement_id]) == [
        State.COMMITTED,
        State.COMMITTED,
    ]


def test_marks_are_per_round_and_never_stop_a_different_round(escrow: Escrow, w3: Any) -> None:
    """Rounds next to each other share a storage word, not a mark; a conflicting decision
    (CONFLICT) is final, so its report is marked too."""
    a, b = _prepared(escrow, 2)
    assert (
        escrow.apply(_commit(escrow, [a], round=255), [a], gas=GAS).names.count(
            "SettlementCommitted"
        )
        == 1
    )
    assert escrow.apply(_commit(escrow, [b], round=256), [b], gas=GAS).receipt["status"] == 1
    abort = escrow.certify([(a.settlement_id, Action.ABORT, a.terms_hash())], epoch=3, round=254)
    conflict = escrow.apply(abort, [a], gas=GAS)
    assert [e.reason for e in conflict.events or [] if e.NAME == "DecisionSkipped"] == [
        SkipReason.CONFLICT
    ]
    assert escrow.apply(abort, [a], gas=GAS).receipt["status"] == 0


def test_a_transmitter_takes_a_refused_copy_as_already_applied(
    escrow: Escrow, chain: LocalChain, w3: Any
) -> None:
    """The node's EVM transmitter: a copy refused at the estimate (ReportAlreadyApplied) or
    reverted on chain once nothing of the report is pending is a finished transmission."""
    (t,) = _prepared(escrow, 1)
    cert = _commit(escrow, [t], round=21)
    sender = TransactionSender(
        connect(chain.rpc_url, chain.chain_id),
        DEV_PRIVATE_KEYS[6],
        revert_decoder=escrow.co.decode_error,
    )
    assert not sender.send(escrow.co.apply_report_tx(cert, [t])).skipped

    def already_done() -> bool:
        return not escrow.co.pending_decisions(cert.report)

    with pytest.raises(TransactionReverted) as caught:
        sender.send(escrow.co.apply_report_tx(cert, [t]))  # no idempotency check: it tries
    assert caught.value.error == "ReportAlreadyApplied(3, 21)"
    assert already_applied(caught.value, lambda: False)
    # A copy mined after another member's: the receipt says only "reverted".
    on_chain = TransactionReverted("applyReport 0x.. reverted on chain")
    assert already_applied(on_chain, already_done)
    (other,) = _prepared(escrow, 1)  # a reverted report with work left: a real failure
    pending = _commit(escrow, [other], round=22)
    assert not already_applied(on_chain, lambda: not escrow.co.pending_decisions(pending.report))
    assert not already_applied(TransactionReverted("x", error="InvalidSignature()"), already_done)


def test_a_new_configuration_inherits_no_marks(escrow: Escrow, w3: Any) -> None:
    """setConfig again (the same members: only the config count changes, and with it the
    digest): a report of an epoch and round done under the old configuration applies; a
    copy of the old report is still refused as done, and an old-configuration report that
    was never done is refused for its digest, as before."""
    a, b = _prepared(escrow, 2)
    old = _commit(escrow, [a], round=30)
    assert escrow.apply(old, [a], gas=GAS).receipt["status"] == 1
    committee = escrow.stack.committee
    config = set_bls_committee(
        escrow.co.contract, committee.config.public_keys, committee.config.f, sender=escrow.deployer
    )
    renewed = SigningCommittee(config, committee.secret_keys)
    new = renewed.certify(
        renewed.report([(b.settlement_id, Action.COMMIT, b.terms_hash())], epoch=3, round=30)
    )
    assert escrow.apply(new, [b], gas=GAS).names.count("SettlementCommitted") == 1
    assert escrow.apply(new, [b]).error == "ReportAlreadyApplied"
    assert escrow.apply(old, [a]).error == "ReportAlreadyApplied"
    other = escrow.certify([(b.settlement_id, Action.COMMIT, b.terms_hash())], epoch=3, round=31)
    assert escrow.apply(other, [b]).error == "ConfigDigestMismatch"
