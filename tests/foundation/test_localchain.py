"""The local chain launcher: starts anvil, answers, stops by PID whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT, Artifact
from chain_adapters.deploy import deploy
from chain_adapters.localchain import ChainError, LocalChain, anvil_path, start_chain
from dvpsim.doctor import pairing_inputs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_start_answer_and_stop(tmp_path: Path) -> None:
    with start_chain(4242, log_dir=tmp_path) as chain:
        assert chain.web3().eth.chain_id == 4242
        assert chain.rpc_url.startswith("http://127.0.0.1:")
        pid = chain.pid
        assert _alive(pid)
    assert not _alive(pid)
    assert chain.log_path.exists()


def test_stopped_even_when_the_body_raises(tmp_path: Path) -> None:
    pids = []
    with pytest.raises(RuntimeError, match="boom"), start_chain(4343, log_dir=tmp_path) as chain:
        pids.append(chain.pid)
        raise RuntimeError("boom")
    assert pids and not _alive(pids[0])


def test_two_chains_with_different_ids_at_once(tmp_path: Path) -> None:
    with start_chain(1001, log_dir=tmp_path) as a, start_chain(1002, log_dir=tmp_path) as b:
        assert a.port != b.port
        assert (a.web3().eth.chain_id, b.web3().eth.chain_id) == (1001, 1002)
        a.rpc("evm_mine")
        assert a.web3().eth.block_number == 1 and b.web3().eth.block_number == 0


def test_block_time_mines_by_itself(tmp_path: Path) -> None:
    with start_chain(1003, block_time=0.2, log_dir=tmp_path) as chain:
        w3 = chain.web3()
        import time

        deadline = time.monotonic() + 10
        while w3.eth.block_number < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w3.eth.block_number >= 2


def test_chain_dies_with_a_killed_owner(tmp_path: Path) -> None:
    """A runner killed with SIGKILL cannot clean up; the kernel stops its chain for it."""
    # The owner starts as from a shell: SIGINT unblocked and raising KeyboardInterrupt,
    # whatever mask or disposition the test runner's own process has come to hold.
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from chain_adapters.localchain import start_chain
        chain = start_chain(1004, log_dir=__import__('pathlib').Path({str(tmp_path)!r}))
        print(chain.pid, flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        anvil_pid = int(owner.stdout.readline())
        assert _alive(anvil_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        for _ in range(200):
            if not _alive(anvil_pid):
                break
            import time

            time.sleep(0.025)
        assert not _alive(anvil_pid)
    finally:
        if owner.poll() is None:
            owner.kill()


def test_ctrl_c_in_owner_stops_its_chain(tmp_path: Path) -> None:
    # The owner starts as from a shell: SIGINT unblocked and raising KeyboardInterrupt,
    # whatever mask or disposition the test runner's own process has come to hold.
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from chain_adapters.localchain import start_chain
        with start_chain(1005, log_dir=__import__('pathlib').Path({str(tmp_path)!r})) as chain:
            print(chain.pid, flush=True)
            time.sleep(60)
        """
    )
    errors = (tmp_path / "owner.err").open("w")  # a file: a full pipe cannot stall it
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=errors, text=True
    )
    try:
        assert owner.stdout is not None
        anvil_pid = int(owner.stdout.readline())
        owner.send_signal(signal.SIGINT)
        try:
            owner.wait(timeout=30)  # bounded; a loaded machine can take a while to stop anvil
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "the owner did not end after Ctrl-C; its stderr: "
                + (tmp_path / "owner.err").read_text()[-2000:]
            ) from None
        assert not _alive(anvil_pid)
    finally:
        if owner.poll() is None:
            owner.kill()
        errors.close()


def test_missing_anvil_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVPSIM_ANVIL", "/nonexistent/anvil")
    with pytest.raises(ChainError, match=r"^anvil not found at DVPSIM_ANVIL=/nonexistent/anvil: "):
        start_chain(1006)


def test_anvil_comes_from_the_pinned_npm_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVPSIM_ANVIL", raising=False)
    assert str(anvil_path()).startswith(str(REPO_ROOT / "node_modules"))


def test_snapshot_fixture_reverts_between_tests_part1(w3: Any, chain: LocalChain) -> None:
    w3.provider.make_request("anvil_setBalance", [w3.eth.accounts[5], hex(12345)])
    assert w3.eth.get_balance(w3.eth.accounts[5]) == 12345


def test_snapshot_fixture_reverts_between_tests_part2(w3: Any) -> None:
    assert w3.eth.get_balance(w3.eth.accounts[5]) != 12345


@pytest.mark.parametrize("expected", [True, False])
def test_bls_pairing_precompile_answers(
    w3: Any, contracts: dict[str, Artifact], expected: bool
) -> None:
    probe = deploy(w3, contracts["PrecompileProbe"])
    true_input, false_input = pairing_inputs()
    assert probe.functions.pairingCheck(true_input if expected else false_input).call() is expected


def test_pairing_precompile_missing_before_prague_reads_as_missing(
    tmp_path: Path, contracts: dict[str, Artifact]
) -> None:
    """With an older hardfork the precompile returns nothing; the probe must revert, not say False."""
    from web3.exceptions import ContractLogicError

    with start_chain(1007, log_dir=tmp_path, hardfork="cancun") as chain:
        probe = deploy(chain.web3(), contracts["PrecompileProbe"])
        with pytest.raises(ContractLogicError):
            probe.functions.pairingCheck(pairing_inputs()[0]).call()


def test_free_ports_are_outside_the_ephemeral_range_distinct_and_bindable() -> None:
    """Ports for processes that bind later must not be ones the kernel hands out to
    outgoing connections or port-0 listeners in the meantime."""
    import socket

    from chain_adapters.localchain import _ephemeral_range, free_port

    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    if low > 16000:  # room below the range (the Linux default): every port comes from there
        assert all(p < low for p in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
