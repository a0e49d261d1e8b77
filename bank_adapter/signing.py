"""Request authentication (HMAC) and callback signatures (Ed25519) of the bank's API.

Clients authenticate every request with HMAC-SHA256 over a canonical string::

    method "\\n" path-and-query "\\n" timestamp "\\n" nonce "\\n" idempotency-key "\\n" sha256(body)

sent in the headers ``X-Dvpsim-Client``, ``X-Dvpsim-Timestamp`` (unix seconds),
``X-Dvpsim-Nonce`` (16-64 of [A-Za-z0-9_-]) and ``X-Dvpsim-Signature`` (hex). We chose
signed requests over OAuth2 client credentials because the service runs on plain HTTP on
loopback: a bearer token can be replayed by anyone who sees it, while a signature binds
one body, one idempotency key and one nonce, needs no token endpoint round trip, and a
replayed request is refused by its nonce. The server accepts a timestamp within
``window_s`` of its clock and remembers each nonce for twice that window.

The nonce memory lives in the process: after a restart a request captured in the last
window could be replayed once. For a mutating call its idempotency key makes that a read
of the stored answer, never a second effect; the money rules rest on certificates and the
ledger, not on nonces.

Callbacks are signed by the bank with Ed25519 (header ``Dvpsim-Bank-Signature:
t=<unix seconds>,ed25519=<hex>`` over ``b"dvpsim-bank-webhook-v1." + t + b"." + body``).
An asymmetric key matters here: every oracle node receives callbacks, and with a shared
HMAC secret one faulty node could forge the bank's callbacks to the others.

This module must never compare secrets or signatures with ``==`` (constant time only),
log a secret, or read the clock (``now_s`` is a parameter).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import deque
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "HEADER_CLIENT",
    "HEADER_IDEMPOTENCY",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "WEBHOOK_EVENT_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "AuthError",
    "RequestAuthenticator",
    "WebhookSignatureError",
    "canonical_request",
    "new_nonce",
    "sign_request",
    "sign_webhook",
    "verify_webhook",
]

HEADER_CLIENT: Final = "X-Dvpsim-Client"
HEADER_TIMESTAMP: Final = "X-Dvpsim-Timestamp"
HEADER_NONCE: Final = "X-Dvpsim-Nonce"
HEADER_SIGNATURE: Final = "X-Dvpsim-Signature"
HEADER_IDEMPOTENCY: Final = "Idempotency-Key"
WEBHOOK_SIGNATURE_HEADER: Final = "Dvpsim-Bank-Signature"
WEBHOOK_EVENT_HEADER: Final = "Dvpsim-Bank-Event"

_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")
_WEBHOOK_DOMAIN: Final = b"dvpsim-bank-webhook-v1."


class AuthError(Exception):
    """A request failed authentication (HTTP 401); the message says which check."""

    code = "unauthenticated"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WebhookSignatureError(ValueError):
    """A callback's signature header is missing, malformed, stale or does not verify."""


def canonical_request(
    method: str, path_qs: str, timestamp: str, nonce: str, idempotency_key: str, body: bytes
) -> bytes:
    return "\n".join(
        [
            method.upper(),
            path_qs,
            timestamp,
            nonce,
            idempotency_key,
            hashlib.sha256(body).hexdigest(),
        ]
    ).encode()


def new_nonce() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def sign_request(
    client_id: str,
    secret: bytes,
    method: str,
    path_qs: str,
    body: bytes,
    *,
    timestamp: int,
    nonce: str,
    idempotency_key: str | None = None,
) -> dict[str, str]:
    """The authentication headers of one request (plus Idempotency-Key if given)."""
    message = canonical_request(method, path_qs, str(timestamp), nonce, idempotency_key or "", body)
    headers = {
        HEADER_CLIENT: client_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: hmac.new(secret, message, hashlib.sha256).hexdigest(),
    }
    if idempotency_key is not None:
        headers[HEADER_IDEMPOTENCY] = idempotency_key
    return headers


class RequestAuthenticator:
    """Server side of request signing: known clients, clock window, nonce memory."""

    def __init__(self, clients: Mapping[str, bytes], window_s: int = 300) -> None:
        self._clients = dict(clients)
        self.window_s = window_s
        self._seen: set[tuple[str, str]] = set()
        self._expiry: deque[tuple[float, tuple[str, str]]] = deque()

    def authenticate(
        self,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        body: bytes,
        now_s: float,
    ) -> str:
        """The authenticated client id; AuthError otherwise. A request that passes every
        check consumes its nonce."""
        client_id = headers.get(HEADER_CLIENT)
        timestamp = headers.get(HEADER_TIMESTAMP)
        nonce = headers.get(HEADER_NONCE)
        signature = headers.get(HEADER_SIGNATURE)
        if not client_id or not timestamp or not nonce or not signature:
            raise AuthError(
                f"missing authentication headers: send {HEADER_CLIENT}, {HEADER_TIMESTAMP}, {HEADER_NONCE} and {HEADER_SIGNATURE}"
            )
        secret = self._clients.get(client_id)
        if secret is None:
            raise AuthError(
                f"unknown client {client_id[:64]!r}; use a client id from the bank's clients file"
            )
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise AuthError(f"{HEADER_TIMESTAMP} must be unix seconds")
        if abs(int(timestamp) - now_s) > self.window_s:
            raise AuthError(
                f"{HEADER_TIMESTAMP} is more than {self.window_s} s from the bank's clock; sync the clock and sign again"
            )
        if _NONCE.fullmatch(nonce) is None:
            raise AuthError(f"{HEADER_NONCE} must be 16-64 characters of [A-Za-z0-9_-]")
        idempotency_key = headers.get(HEADER_IDEMPOTENCY, "")
        expected = hmac.new(
            secret,
            canonical_request(method, path_qs, timestamp, nonce, idempotency_key, body),
            hashlib.sha256,
        ).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise AuthError(
                f"{HEADER_SIGNATURE} does not match the request; check the client secret and the signed string"
            )
        self._forget_expired(now_s)
        key = (client_id, nonce)
        if key in self._seen:
            raise AuthError(
                f"{HEADER_NONCE} was already used; sign every request with a fresh nonce"
            )
        self._seen.add(key)
        # Remember the nonce as long as a timestamp that passes the window check could carry it.
        self._expiry.append((now_s + 2 * self.window_s, key))
        return client_id

    def _forget_expired(self, now_s: float) -> None:
        while self._expiry and self._expiry[0][0] < now_s:
            _, key = self._expiry.popleft()
            self._seen.discard(key)

    @property
    def remembered_nonces(self) -> int:
        return len(self._seen)


def check_idempotency_key(value: str | None) -> str:
    """The Idempotency-Key of a mutating call: 1-255 visible ASCII characters."""
    if value is None or _IDEMPOTENCY_KEY.fullmatch(value) is None:
        raise ValueError(
            f"{HEADER_IDEMPOTENCY} header of 1-255 visible ASCII characters is required"
        )
    return value


# --------------------------------------------------------------------------- webhooks


def _webhook_message(timestamp: int, body: bytes) -> bytes:
    return _WEBHOOK_DOMAIN + str(timestamp).encode() + b"." + body


def sign_webhook(key: Ed25519PrivateKey, body: bytes, timestamp: int) -> str:
    """The ``Dvpsim-Bank-Signature`` header value for a callback body."""
    signature = key.sign(_webhook_message(timestamp, body))
    return f"t={timestamp},ed25519={signature.hex()}"


def verify_webhook(
    public_key: bytes, header: str | None, body: bytes, now_s: float, tolerance_s: int = 300
) -> None:
    """Raise WebhookSignatureError unless ``header`` is the bank's valid, fresh signature of
    ``body``."""
    if not header:
        raise WebhookSignatureError(f"callback has no {WEBHOOK_SIGNATURE_HEADER} header")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, sig = parts.get("t", ""), parts.get("ed25519", "")
    if not t.isdigit() or len(t) > 12 or len(sig) != 128:
        raise WebhookSignatureError(f"callback {WEBHOOK_SIGNATURE_HEADER} header is malformed")
    if abs(int(t) - now_s) > tolerance_s:
        raise WebhookSignatureError(
            f"callback signature timestamp is more than {tolerance_s} s old or ahead"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            bytes.fromhex(sig), _webhook_message(int(t), body)
        )
    except (InvalidSignature, ValueError):
        raise WebhookSignatureError(
            "callback signature does not verify with the bank's key"
        ) from None
