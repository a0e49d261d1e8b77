"""The transaction sender against real anvil processes: nonces, gas estimation, EIP-1559
fees and the bumping of a stuck transaction, the idempotency check, retries while the RPC
endpoint is down, recovery when it restarts on the same port (with and without its
history), and the one-line errors for an unreachable endpoint or a wrong chain id."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from chain_adapters.build import Artifact
from chain_adapters.deploy import deploy
from chain_adapters.evm import RetryPolicy, RpcUnreachable, WrongChain, connect
from chain_adapters.localchain import (
    DEV_PRIVATE_KEYS,
    HARDFORK,
    LocalChain,
    anvil_path,
    free_port,
    rpc_call,
    start_chain,
)
from chain_adapters.model import Mode, State
from chain_adapters.sender import FeePolicy, TransactionReverted, TransactionSender, TxRequest
from consensus.report import Action
from processes import die_with_parent
from tests.escrow.escrow_helpers import Escrow

CHAIN_ID = 41_002
KEY = DEV_PRIVATE_KEYS[6]


class RestartableAnvil:
    """An anvil on a fixed port that the test stops and starts again (the launcher picks a
    new free port each time, which is right for runs but not for a restart test). With
    ``state`` the chain keeps its history across restarts (anvil --state)."""

    def __init__(self, chain_id: int, log_dir: Path, state: Path | None) -> None:
        self.chain_id = chain_id
        self.port = free_port()
        self.state = state
        self.log = log_dir / f"anvil-restartable-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [str(anvil_path()), "--host", "127.0.0.1", "--port", str(self.port),
                "--chain-id", str(self.chain_id), "--hardfork", HARDFORK]  # fmt: skip
        if self.state is not None:
            args += ["--state", str(self.state)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                rpc_call(self.url, "eth_chainId")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # anvil writes its --state file on SIGTERM
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[RestartableAnvil]:
    node = RestartableAnvil(CHAIN_ID, tmp_path, tmp_path / "state.json")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def fee_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChain]:
    with start_chain(CHAIN_ID + 1, log_dir=tmp_path_factory.mktemp("anvil-sender")) as chain:
        yield chain


def transfer_to(recipient: str, value: int) -> TxRequest:
    return TxRequest(to=recipient, data=b"", value=value, label="transfer")


def test_consecutive_sends_use_consecutive_nonces_and_eip1559(fee_chain: LocalChain) -> None:
    sender = TransactionSender(connect(fee_chain.rpc_url, fee_chain.chain_id), KEY)
    w3 = fee_chain.web3()
    start = w3.eth.get_transaction_count(sender.address)
    recipient = w3.eth.accounts[9]
    results = [sender.send(transfer_to(recipient, 1)) for _ in range(3)]
    assert [r.nonce for r in results] == [start, start + 1, start + 2]
    for result in results:
        tx = w3.eth.get_transaction(result.tx_hash)
        assert tx["type"] == 2 and tx["chainId"] == fee_chain.chain_id
        assert tx["gas"] == int(21_000 * sender.gas_margin)  # estimated, with margin
        assert result.receipt["status"] == 1


def test_a_receipt_that_lags_behind_the_nonce_is_waited_for_not_sent_again(
    fee_chain: LocalChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node may count a nonce before it serves the receipt. The sender must not take that
    for a stolen nonce and send the work again (a lock sent twice reverted in a run)."""
    sender = TransactionSender(connect(fee_chain.rpc_url, fee_chain.chain_id), DEV_PRIVATE_KEYS[5])
    w3 = fee_chain.web3()
    start = w3.eth.get_transaction_count(sender.address)
    real_receipt = sender._receipt
    lagging = {"misses": 3}

    def lagging_receipt(flight: Any) -> Any:
        if lagging["misses"] > 0:
            lagging["misses"] -= 1
            return None
        return real_receipt(flight)

    monkeypatch.setattr(sender, "_receipt", lagging_receipt)
    result = sender.send(transfer_to(w3.eth.accounts[9], 3))
    assert result.receipt["status"] == 1 and result.nonce == start
    assert w3.eth.get_transaction_count(sender.address) == start + 1  # sent once


def test_concurrent_callers_never_share_a_nonce(fee_chain: LocalChain) -> None:
    sender = TransactionSender(connect(fee_chain.rpc_url, fee_chain.chain_id), DEV_PRIVATE_KEYS[7])
    recipient = fee_chain.web3().eth.accounts[9]
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(sender.send(transfer_to(recipient, 2))))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    nonces = sorted(r.nonce for r in results)
    assert nonces == list(range(nonces[0], nonces[0] + 4))
    assert all(r.receipt["status"] == 1 for r in results)


def test_a_stuck_transaction_is_replaced_with_higher_fees(fee_chain: LocalChain) -> None:
    w3 = fee_chain.web3()
    snapshot = fee_chain.snapshot()
    fee_chain.rpc("evm_setAutomine", [False])
    try:
        base = int(w3.eth.get_block("latest")["baseFeePerGas"])
        calls = []

        def mine_one_block(_seconds: float) -> None:
            # The test is the miner: each time the sender waits, one block is mined. Right
            # after the first submission the base fee jumps above the transaction's cap.
            if not calls:
                fee_chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(base * 20)])
            calls.append(1)
            fee_chain.rpc("evm_mine")

        sender = TransactionSender(
            connect(fee_chain.rpc_url, fee_chain.chain_id),
            DEV_PRIVATE_KEYS[8],
            fees=FeePolicy(priority_fee=10**9, bump_after_blocks=2, max_fee_per_gas=10**15),
            sleep=mine_one_block,
        )
        result = sender.send(transfer_to(w3.eth.accounts[9], 3))
        assert result.bumps >= 1
        mined = w3.eth.get_transaction(result.tx_hash)
        assert mined["maxFeePerGas"] > 2 * base + 10**9  # the replacement, not the original
        assert result.receipt["status"] == 1
        assert w3.eth.get_transaction_count(sender.address) == result.nonce + 1
    finally:
        fee_chain.rpc("evm_setAutomine", [True])
        fee_chain.revert(snapshot)


def test_a_revert_is_reported_before_sending_with_the_decoded_error(
    escrow: Escrow, chain: LocalChain, w3: Any
) -> None:
    sender = TransactionSender(
        connect(chain.rpc_url, chain.chain_id), KEY, revert_decoder=escrow.co.decode_error
    )
    nonce = w3.eth.get_transaction_count(sender.address)
    t = escrow.terms(Mode.ASSET_ESCROW)
    with pytest.raises(TransactionReverted) as caught:
        sender.send(escrow.co.lock_asset_tx(t))
    assert caught.value.error.startswith("UnknownSettlement(")
    assert "\n" not in str(caught.value) and "lockAsset" in str(caught.value)
    assert w3.eth.get_transaction_count(sender.address) == nonce  # nothing was sent


def test_the_idempotency_check_skips_decisions_already_applied(
    escrow: Escrow, chain: LocalChain, w3: Any
) -> None:
    t = escrow.terms(Mode.ASSET_ESCROW)
    escrow.prepare(t)
    cert = escrow.decide(t, Action.COMMIT)
    transmitter = TransactionSender(connect(chain.rpc_url, chain.chain_id), KEY)

    def already_done() -> bool:
        return not escrow.co.pending_decisions(cert.report)

    first = transmitter.send(escrow.co.apply_report_tx(cert, [t]), already_done=already_done)
    assert not first.skipped and escrow.co.state_of(t.settlement_id) == State.COMMITTED
    nonce = w3.eth.get_transaction_count(transmitter.address)
    second = transmitter.send(escrow.co.apply_report_tx(cert, [t]), already_done=already_done)
    assert second.skipped and second.tx_hash is None
    assert w3.eth.get_transaction_count(transmitter.address) == nonce


def test_sends_survive_an_endpoint_restart_on_the_same_port(restartable: RestartableAnvil) -> None:
    downtime = []

    def sleep_and_restart(seconds: float) -> None:
        # The retry loop's sleep: after a second of outage the chain comes back. (Restarted
        # from this thread: PR_SET_PDEATHSIG would stop a child started by a finished thread.)
        time.sleep(seconds)
        downtime.append(seconds)
        if sum(downtime) >= 1.0 and restartable.process is None:
            restartable.start()

    retry = RetryPolicy(attempts=40, first_delay=0.05, max_delay=0.5, budget=20)
    rpc = connect(restartable.url, CHAIN_ID, retry=retry, sleep=sleep_and_restart)
    sender = TransactionSender(rpc, KEY)
    recipient = "0x" + "77" * 20
    sender.send(transfer_to(recipient, 5))
    restartable.stop()
    result = sender.send(transfer_to(recipient, 6))  # retried until the chain is back
    assert result.receipt["status"] == 1
    assert rpc.outages > 0 and sum(downtime) >= 1.0
    w3 = rpc.web3
    assert w3.eth.get_balance(to_checksum_address(recipient)) == 11  # history kept (--state)
    assert w3.eth.get_transaction_count(sender.address) == 2


def test_a_chain_restarted_without_history_gets_a_resynced_nonce(tmp_path: Path) -> None:
    node = RestartableAnvil(CHAIN_ID, tmp_path, state=None)
    node.start()
    try:
        rpc = connect(
            node.url,
            CHAIN_ID,
            retry=RetryPolicy(attempts=40, first_delay=0.05, max_delay=0.5, budget=20),
        )
        sender = TransactionSender(rpc, KEY)
        for value in (1, 2):
            sender.send(transfer_to("0x" + "78" * 20, value))
        node.stop()
        node.start()  # a fresh chain: our nonce 2 would be queued forever
        result = sender.send(transfer_to("0x" + "78" * 20, 3))
        assert result.nonce == 0 and result.receipt["status"] == 1
    finally:
        node.stop()


def test_an_endpoint_that_stays_down_is_one_line(restartable: RestartableAnvil) -> None:
    rpc = connect(
        restartable.url, CHAIN_ID, retry=RetryPolicy(attempts=4, first_delay=0.01, budget=1)
    )
    sender = TransactionSender(rpc, KEY)
    restartable.stop()
    with pytest.raises(RpcUnreachable) as caught:
        sender.send(transfer_to("0x" + "79" * 20, 1))
    assert str(caught.value) == (
        f"cannot reach RPC endpoint {restartable.url}: connection refused (is the chain running?)"
    )


def test_never_reached_endpoint_and_wrong_chain_id_are_one_line(fee_chain: LocalChain) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RpcUnreachable) as down:
        connect(url, 1, retry=RetryPolicy(attempts=2, first_delay=0.01))
    assert (
        str(down.value)
        == f"cannot reach RPC endpoint {url}: connection refused (is the chain running?)"
    )
    with pytest.raises(WrongChain) as wrong:
        connect(fee_chain.rpc_url, 1)
    message = str(wrong.value)
    assert "\n" not in message
    assert f"serves chain id {fee_chain.chain_id}, expected 1" in message


def test_an_endpoint_replaced_by_another_chain_is_refused(
    restartable: RestartableAnvil, tmp_path: Path
) -> None:
    rpc = connect(
        restartable.url,
        CHAIN_ID,
        retry=RetryPolicy(attempts=40, first_delay=0.05, max_delay=0.5, budget=20),
    )
    sender = TransactionSender(rpc, KEY)
    sender.send(transfer_to("0x" + "7a" * 20, 1))
    restartable.stop()
    impostor = RestartableAnvil(CHAIN_ID + 5, tmp_path, state=None)
    impostor.port = restartable.port
    impostor.start()
    try:
        with pytest.raises(
            WrongChain, match=f"serves chain id {CHAIN_ID + 5}, expected {CHAIN_ID}"
        ):
            sender.send(transfer_to("0x" + "7a" * 20, 2))
    finally:
        impostor.stop()


def test_deployed_code_is_reachable_through_the_binding(
    fee_chain: LocalChain, contracts: dict[str, Artifact]
) -> None:
    """The bindings' TxRequests go through the sender like any other transaction."""
    from chain_adapters.bindings import TokenBinding

    w3 = fee_chain.web3()
    sender = TransactionSender(connect(fee_chain.rpc_url, fee_chain.chain_id), DEV_PRIVATE_KEYS[9])
    token_contract = deploy(w3, contracts["AssetToken"], sender=sender.address)
    token = TokenBinding(w3, token_contract.address, contracts["AssetToken"].abi)
    sender.send(token.mint_tx(w3.eth.accounts[1], 42))
    assert token.balance_of(w3.eth.accounts[1]) == 42


def test_an_endpoint_that_accepts_but_never_answers_times_out_in_one_line() -> None:
    """A hung endpoint: each call times out, the retry budget counts those waits too."""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        retry = RetryPolicy(attempts=50, first_delay=0.01, max_delay=0.01, budget=0.5)
        with pytest.raises(RpcUnreachable) as caught:
            connect(url, CHAIN_ID, retry=retry, timeout=0.1)
        assert str(caught.value) == (
            f"cannot reach RPC endpoint {url}: timed out (is the chain overloaded or the URL wrong?)"
        )
    finally:
        server.close()
