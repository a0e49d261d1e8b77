"""Hosts files (`dvpsim run SCENARIO --hosts FILE`, ``scenarios.hosts``): where the chains,
the bank and each node listen, and how each node starts; every mistake one line, exit 2.
The services bind the address they are given and never every interface. The whole layout
in action, a committee in network namespaces, is tests/e2e/test_netns.py (slow, root)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from bank_adapter.devcommittee import DevCommittee
from bank_adapter.process import BankProcess
from bank_adapter.server import check_host
from chain_adapters.build import REPO_ROOT
from chain_adapters.localchain import start_chain
from dvpsim.run import main as run_main
from scenarios.hosts import LOCAL, HostsError, NodeHost, load_hosts

GOOD = """
services = "10.213.0.1"
[[nodes]]
host = "10.213.0.2"
exec = ["ip", "netns", "exec", "n0"]
[[nodes]]
host = "10.213.0.3"
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_a_hosts_file_places_every_part(tmp_path: Path) -> None:
    hosts = load_hosts(_file(tmp_path, GOOD), endpoints=2)
    assert hosts.services == "10.213.0.1"
    assert hosts.node(0) == NodeHost("10.213.0.2", ("ip", "netns", "exec", "n0"))
    assert hosts.node(1) == NodeHost("10.213.0.3", ())
    # Without a hosts file everything stays on loopback, started as before.
    assert LOCAL.services == "127.0.0.1" and LOCAL.node(7) == NodeHost("127.0.0.1", ())


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD.replace("10.213.0.1", "0.0.0.0"), "services: 0.0.0.0 is not one interface's"),
        (GOOD.replace('"10.213.0.3"', '"node1.example"'), "nodes[1].host: 'node1.example' is not"),
        (GOOD.replace('host = "10.213.0.3"', ""), "nodes[1].host: missing"),
        (GOOD + '[[nodes]]\nhost = "10.213.0.4"\n', "nodes: 3 [[nodes]] tables for 2"),
        (GOOD.replace('"n0"]', '""]'), "nodes[0].exec: not a list of words"),
        (GOOD.replace("exec =", "command ="), "nodes[0].command: unknown key"),
        ("colour = 1\n" + GOOD, "colour: unknown key"),
        (GOOD.replace("[[nodes]]", "[nodes", 1), "not valid TOML"),
    ],
)
def test_each_mistake_is_one_line(tmp_path: Path, text: str, words: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(HostsError) as info:
        load_hosts(path, endpoints=2)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message, message


def test_dvpsim_run_refuses_a_bad_hosts_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference scenario has 4 node processes; a file for 2 is refused before anything
    starts."""
    path = _file(tmp_path, GOOD)
    assert run_main(str(REPO_ROOT / "scenarios" / "reference.toml"), None, str(path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dvpsim run: {path}: nodes: 2 [[nodes]] tables for 4"), err
    assert "\n" not in err


def test_the_chain_and_the_bank_listen_on_the_address_given(tmp_path: Path) -> None:
    """127.0.0.2 stands for another interface's address: nothing answers for them on
    127.0.0.1 at their ports."""
    with start_chain(4545, log_dir=tmp_path, host="127.0.0.2") as chain:
        assert chain.rpc_url == f"http://127.0.0.2:{chain.port}"
        assert int(chain.rpc("eth_chainId"), 16) == 4545
        with BankProcess(tmp_path / "bank", DevCommittee.create(n=4, f=1), host="127.0.0.2") as b:
            assert b.url.startswith("http://127.0.0.2:")
            with urllib.request.urlopen(b.url + "/v1/health", timeout=5) as answer:
                assert answer.status == 200
            port = b.url.rsplit(":", 1)[1]
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "localhost", "224.0.0.1"])
def test_the_bank_never_binds_every_interface(host: str) -> None:
    with pytest.raises(ValueError, match=f"--host {host} is not"):
        check_host(host)
    assert check_host("10.213.0.1") == "10.213.0.1" and check_host("::1") == "::1"
