"""The kept-alive JSON-RPC provider: web3's answers, one connection per thread, and the
failures ``chain_adapters.evm`` retries or reports, as they were through ``requests``."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from web3 import Web3

from chain_adapters.evm import is_transient
from chain_adapters.keepalive import KeepAliveProvider
from chain_adapters.localchain import LocalChain


class _OneCallPerConnection(http.server.BaseHTTPRequestHandler):
    """Answers eth_chainId once per connection, then closes it without saying so (as a
    server whose idle timeout ran out does); answers 503 to eth_blockNumber."""

    protocol_version = "HTTP/1.1"
    connections: list[int] = []  # client ports, one per request

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.connections.append(self.client_address[1])  # the client port: one per connection
        if request["method"] == "eth_blockNumber":
            body, status = b"busy", 503
        else:
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x7a69"}).encode()
            status = 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def closing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OneCallPerConnection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_answers_are_web3s_and_each_thread_keeps_its_own_connection(chain: LocalChain) -> None:
    provider = KeepAliveProvider(chain.rpc_url)
    w3 = Web3(provider)
    reference = chain.web3()
    assert w3.eth.chain_id == reference.eth.chain_id
    assert w3.eth.get_block("latest")["hash"] == reference.eth.get_block("latest")["hash"]
    connections: dict[str, Any] = {}

    def call(name: str) -> None:
        w3.eth.block_number  # noqa: B018 (a call)
        first = provider._local.connection
        w3.eth.block_number  # noqa: B018
        assert provider._local.connection is first  # kept alive
        connections[name] = first

    threads = [threading.Thread(target=call, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in connections.values()}) == 3


def test_a_connection_the_server_closed_is_opened_again_once(closing_server: str) -> None:
    provider = KeepAliveProvider(closing_server, timeout=5)
    _OneCallPerConnection.connections.clear()
    for _ in range(3):
        assert Web3(provider).eth.chain_id == 31337
    assert len(set(_OneCallPerConnection.connections)) == 3


def test_failures_look_as_they_did_through_requests(closing_server: str) -> None:
    with pytest.raises(requests.HTTPError) as busy:
        KeepAliveProvider(closing_server, timeout=5).make_request("eth_blockNumber", [])
    assert busy.value.response is not None and busy.value.response.status_code == 503
    assert is_transient(busy.value)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(requests.ConnectionError) as refused:
        KeepAliveProvider(f"http://127.0.0.1:{port}", timeout=5).make_request("eth_chainId", [])
    assert "refused" in str(refused.value).lower() and is_transient(refused.value)
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        provider = KeepAliveProvider(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.2)
        with pytest.raises(requests.Timeout) as slow:
            provider.make_request("eth_chainId", [])
    assert is_transient(slow.value)
    with pytest.raises(ValueError, match="not an http"):
        KeepAliveProvider("ws://127.0.0.1:8545")
