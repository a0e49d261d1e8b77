"""Duplicate transmissions in the simulated world: two members' copies of one report land
in one block of a ``SimChain``; the coordinator model applies the first and refuses the
second before verifying it (ReportAlreadyApplied, as DvPCoordinator does on anvil:
tests/escrow/test_duplicates.py), and the world reports that copy to its member's driver
as "already-applied", a finished transmission (as ``node.pumps.evm`` does)."""

from __future__ import annotations

from chain_adapters.model import EscrowModel, Mode, State, Terms
from consensus import bls
from consensus.report import Action, CommitteeConfig
from consensus.signing import SigningCommittee, dev_secret_keys
from scenarios.sim.chain import Call, Receipt, SimChain
from scenarios.sim.world import transmission_result

COORDINATOR = "0x" + "c0" * 20
TOKEN, MINTER = "0x" + "a0" * 20, "0x" + "99" * 20
SELLER, BUYER = "0x" + "11" * 20, "0x" + "22" * 20
MEMBERS = ("0x" + "31" * 20, "0x" + "32" * 20)
GENESIS = 1_700_000_000


def _setup(model: EscrowModel) -> None:
    model.add_token(TOKEN, MINTER)
    model.mint(TOKEN, MINTER, SELLER, 10**6)
    model.approve(TOKEN, SELLER, COORDINATOR, 10**6)


def test_the_second_copy_in_a_block_is_refused_and_counts_as_already_applied() -> None:
    keys = dev_secret_keys(4, b"dvpsim duplicate transmissions")
    config = CommitteeConfig(
        31_337, bytes.fromhex(COORDINATOR[2:]), 1, tuple(bls.sk_to_pk(k) for k in keys), 1, 3
    )
    committee = SigningCommittee(config, keys)
    chain = SimChain(
        "A",
        31_337,
        coordinator=COORDINATOR,
        committee=config,
        block_time=0.25,
        genesis_time=GENESIS,
        setup=_setup,
    )
    terms = Terms(bytes(31) + b"\x01", int(Mode.ASSET_ESCROW), SELLER, BUYER, TOKEN, 70,
                  "0x" + "00" * 20, 0, GENESIS + 3600)  # fmt: skip
    chain.submit(Call(SELLER, "create_and_lock", (terms,), "lock"))
    assert chain.mine(0.25) is not None
    cert = committee.certify(
        committee.report([(terms.settlement_id, Action.COMMIT, terms.terms_hash())], 2, 9)
    )
    receipts: list[Receipt] = []
    for member in MEMBERS:  # both passed the transmitters' check: nothing applied yet
        assert chain.pending_decisions(cert.report) == 1
        chain.submit(Call(member, "apply_certificate", (cert, (terms,)), "report"), receipts.append)
    block = chain.mine(0.5)
    assert block is not None and len(block.receipts) == 1
    first, second = receipts
    assert first.ok and first.gas_used > 0
    assert (second.ok, second.error) == (False, "ReportAlreadyApplied")
    assert [transmission_result(r) for r in receipts] == ["ok", "already-applied"]
    assert chain.state_of(terms.settlement_id) == State.COMMITTED
    assert chain.model.report_done(cert.report)
