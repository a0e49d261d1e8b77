"""JSON-RPC over HTTP for web3 at a seventh of the CPU: one kept-alive connection per thread.

web3's ``HTTPProvider`` sends each call through ``requests``: a session that merges proxy
and netrc settings from the environment, prepares and hooks every request, and pools
connections through urllib3. On a local chain that costs about 0.8 ms of CPU per call,
seven times the call itself, and a node calls its chain several times per block (the
event watcher, the newest block, receipts). ``KeepAliveProvider`` posts the same JSON-RPC
bodies over a plain ``http.client`` connection that each thread keeps open (web3 clients
are called from worker threads; a connection is never shared between two).

Failures look as they did through ``requests`` (``chain_adapters.evm`` decides what is
worth retrying from them): a refused, reset or unreachable endpoint raises
``requests.ConnectionError``, a call that outlives the timeout ``requests.Timeout``, and
an answer that is not 2xx ``requests.HTTPError`` with its status. A connection the server
closed while it sat idle is opened again once, at once: that is not an outage.

This module must never retry a call beyond that one reopening, share a connection between
threads, or follow a redirect.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from typing import Any

import requests
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

__all__ = ["KeepAliveProvider"]

# What a kept-alive connection that the server closed meanwhile raises on its next use.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class KeepAliveProvider(JSONBaseProvider):
    """A web3 provider posting JSON-RPC to ``url`` (http or https) with ``timeout``
    seconds per call, over one kept-alive connection per calling thread."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"RPC URL {url!r} is not an http(s) URL")
        self.endpoint_uri = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._local = threading.local()

    def __str__(self) -> str:
        return f"RPC connection {self.endpoint_uri}"

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return self.decode_rpc_response(self.post(self.encode_rpc_request(method, params)))

    def make_batch_request(
        self, requests_: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse] | RPCResponse:
        answer = self.decode_rpc_response(self.post(self.encode_batch_rpc_request(requests_)))
        if isinstance(answer, list):
            return sorted(answer, key=lambda item: int(item.get("id", 0)))
        return answer

    def post(self, body: bytes) -> bytes:
        """POST ``body``; the answer's body (module docstring: the failures)."""
        for attempt in (1, 2):
            connection, reused = self._connection()
            try:
                connection.request("POST", self._path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
            except TimeoutError as exc:
                self._drop()
                raise requests.Timeout(f"{self.endpoint_uri}: timed out ({exc})") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if reused and attempt == 1 and isinstance(exc, _STALE):
                    continue
                raise requests.ConnectionError(f"{self.endpoint_uri}: {exc!r}") from None
            if response.will_close:
                self._drop()
            if not 200 <= response.status < 300:
                answer = requests.Response()
                answer.status_code = response.status
                answer._content = data
                raise requests.HTTPError(f"HTTP {response.status}", response=answer)
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it served a call before."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=self.timeout)
        self._local.connection = connection
        return connection, False

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()
