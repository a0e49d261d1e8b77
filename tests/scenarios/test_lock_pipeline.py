"""The load generator's lock pipeline (``scenarios.real.LockPipeline``) on a real anvil:
transactions signed in nonce order and handed to the chain by several threads at once all
land, each reported once with its hash; a transaction the chain refuses is reported with
the chain's reason, and the load goes on."""

from __future__ import annotations

import threading
from typing import Any

import coincurve
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_adapters.evm import connect
from chain_adapters.localchain import DEV_PRIVATE_KEYS, LocalChain
from chain_adapters.sender import TransactionSender, TxRequest
from scenarios.real import BROADCASTERS, Eip1559Fields, LockPipeline, signed_eip1559


class Reports:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[Any, tuple[bytes | None, str]] = {}

    def __call__(self, token: Any, tx_hash: bytes | None, error: str) -> None:
        with self.lock:
            assert token not in self.seen
            self.seen[token] = (tx_hash, error)


def test_locks_sent_by_several_threads_all_land_in_nonce_order(chain: LocalChain, w3: Any) -> None:
    rpc = connect(chain.rpc_url, 31337)
    key = DEV_PRIVATE_KEYS[7]
    sender = TransactionSender(rpc, key)
    to = Account.from_key(DEV_PRIVATE_KEYS[8]).address
    first_nonce = w3.eth.get_transaction_count(sender.address)
    request = TxRequest(to=to, data=b"", value=1, label="transfer")
    reports = Reports()
    pipeline = LockPipeline(sender, key, request, reports)
    count = 8 * BROADCASTERS
    for k in range(count):
        pipeline.submit(k, request)
    pipeline.close()
    assert sorted(reports.seen) == list(range(count))
    assert all(tx_hash is not None and error == "" for tx_hash, error in reports.seen.values())
    nonces = [w3.eth.get_transaction(tx_hash)["nonce"] for tx_hash, _ in reports.seen.values()]
    assert sorted(nonces) == list(range(first_nonce, first_nonce + count))
    for tx_hash, _ in reports.seen.values():
        assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["status"] == 1


def test_a_lock_the_chain_refuses_is_reported_with_its_reason(chain: LocalChain, w3: Any) -> None:
    rpc = connect(chain.rpc_url, 31337)
    key = DEV_PRIVATE_KEYS[6]
    sender = TransactionSender(rpc, key)
    balance = w3.eth.get_balance(sender.address)
    affordable = TxRequest(to=sender.address, data=b"", value=1)
    reports = Reports()
    pipeline = LockPipeline(sender, key, affordable, reports)
    pipeline.submit("too dear", TxRequest(to=sender.address, data=b"", value=balance * 2))
    pipeline.close()
    tx_hash, error = reports.seen["too dear"]
    assert tx_hash is None
    assert "funds" in error.lower(), error


def _eth_account_signed(key: str, tx: Eip1559Fields) -> Any:
    return Account.sign_transaction(
        {
            "type": 2,
            "chainId": tx.chain_id,
            "nonce": tx.nonce,
            "to": tx.to,
            "data": tx.data,
            "value": tx.value,
            "gas": tx.gas,
            "maxFeePerGas": tx.max_fee_per_gas,
            "maxPriorityFeePerGas": tx.max_priority_fee_per_gas,
        },
        key,
    )


@given(
    nonce=st.integers(0, 2**64 - 1),
    tip=st.integers(0, 10**12),
    extra_fee=st.integers(0, 10**12),
    gas=st.integers(21_000, 30_000_000),
    value=st.integers(0, 2**128),
    data=st.binary(max_size=600),
    key_index=st.integers(0, len(DEV_PRIVATE_KEYS) - 1),
)
@settings(max_examples=40, deadline=None)
def test_the_generators_signer_gives_eth_accounts_bytes(
    nonce: int, tip: int, extra_fee: int, gas: int, value: int, data: bytes, key_index: int
) -> None:
    key = DEV_PRIVATE_KEYS[key_index]
    to = Account.from_key(DEV_PRIVATE_KEYS[8]).address
    tx = Eip1559Fields(31337, nonce, tip, tip + extra_fee, gas, to, value, data)
    signer = coincurve.PrivateKey(bytes.fromhex(key[2:]))
    assert signed_eip1559(signer, tx) == bytes(_eth_account_signed(key, tx).raw_transaction)


def test_the_generators_signer_drops_leading_zeros_of_r_and_s() -> None:
    """RLP writes r and s without leading zero bytes; 1 signature in 128 has one."""
    key = DEV_PRIVATE_KEYS[3]
    signer = coincurve.PrivateKey(bytes.fromhex(key[2:]))
    to = Account.from_key(DEV_PRIVATE_KEYS[8]).address
    short = 0
    for nonce in range(2_000):
        tx = Eip1559Fields(31337, nonce, 1, 10**9, 100_000, to, 0, b"")
        signed = _eth_account_signed(key, tx)
        if signed.r.bit_length() <= 248 or signed.s.bit_length() <= 248:
            assert signed_eip1559(signer, tx) == bytes(signed.raw_transaction)
            short += 1
            if short == 3:
                return
    raise AssertionError("no signature with a short r or s in 2,000 nonces")
