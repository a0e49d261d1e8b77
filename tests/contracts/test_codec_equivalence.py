"""Python and Solidity agree on the bytes: report decoding and hashing, config digests,
and which report encodings are canonical (Hypothesis, eth_call only)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.report import (
    Action,
    CommitteeConfig,
    Decision,
    Report,
    ReportError,
    config_digest,
    decode_report,
    encode_report,
    report_hash,
)
from tests.contracts.conftest import ConfiguredVerifier
from tests.contracts.contract_helpers import make_committee

FIXTURES_OK = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

bytes32 = st.binary(min_size=32, max_size=32)
decisions = st.lists(
    st.builds(Decision, settlement_id=bytes32, action=st.sampled_from(Action), terms_hash=bytes32),
    max_size=6,
    unique_by=lambda d: d.settlement_id,
).map(tuple)
reports = st.builds(
    Report,
    config_digest=bytes32,
    epoch=st.integers(0, 2**32 - 1),
    round=st.integers(0, 2**64 - 1),
    decisions=decisions,
)


@FIXTURES_OK
@given(report=reports)
def test_report_decodes_and_hashes_alike(
    report: Report, w3: Any, bls_harness: Any, verifier4: ConfiguredVerifier
) -> None:
    encoded = encode_report(report)
    digest, epoch, round_, ids, actions, terms = bls_harness.functions.decodeReport(encoded).call()
    assert (digest, epoch, round_) == (report.config_digest, report.epoch, report.round)
    assert list(zip(ids, actions, terms, strict=True)) == [
        (d.settlement_id, int(d.action), d.terms_hash) for d in report.decisions
    ]
    assert verifier4.contract.functions.hashReport(encoded).call() == report_hash(report)


@FIXTURES_OK
@given(report=reports, position=st.integers(0, 2**16), value=st.integers(0, 255))
def test_canonical_encodings_accepted_alike(
    report: Report, position: int, value: int, w3: Any, bls_harness: Any
) -> None:
    """One byte changed anywhere in an encoding (or the encoding cut short): Solidity's
    validate accepts exactly when Python's strict decoder does."""
    encoded = bytearray(encode_report(report))
    index = position % (len(encoded) + 1)
    mutated = bytes(encoded[:index]) if index == len(encoded) else None
    if mutated is None:
        encoded[index] = value
        mutated = bytes(encoded)
    try:
        decode_report(mutated)
        python_accepts = True
    except ReportError:
        python_accepts = False
    try:
        bls_harness.functions.decodeReport(mutated).call()
        solidity_accepts = True
    except Exception:  # noqa: BLE001 - any revert means "rejected"
        solidity_accepts = False
    if python_accepts != solidity_accepts:
        # The one documented difference: Python also rejects a settlement named twice.
        ids = [mutated[160 + 96 * i : 192 + 96 * i] for i in range((len(mutated) - 160) // 96)]
        assert solidity_accepts and len(set(ids)) < len(ids), mutated.hex()


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chain_id=st.integers(0, 2**256 - 1),
    verifier=st.binary(min_size=20, max_size=20),
    count=st.integers(0, 2**64 - 1),
    members=st.permutations(range(7)).flatmap(
        lambda order: st.integers(1, 7).map(lambda k: order[:k])
    ),
    data=st.data(),
)
def test_config_digest_alike(
    chain_id: int,
    verifier: bytes,
    count: int,
    members: list[int],
    data: st.DataObject,
    w3: Any,
    verifier4: ConfiguredVerifier,
) -> None:
    keys = tuple(make_committee(7).public_keys[i] for i in members)
    n = len(keys)
    f = data.draw(st.integers(0, (n - 1) // 3))
    t = data.draw(st.integers(f + 1, n))
    cfg = CommitteeConfig(
        chain_id=chain_id, verifier=verifier, config_count=count, public_keys=keys, f=f, t=t
    )
    solidity = verifier4.contract.functions.configDigestOf(
        chain_id, verifier4.contract.w3.to_checksum_address(verifier), count, b"".join(keys), f, t
    ).call()
    assert solidity == config_digest(cfg)
    assert solidity[:2] == b"\x0d\x01"
