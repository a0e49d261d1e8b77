"""Request HMAC authentication and Ed25519 callback signatures, including tampering."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from bank_adapter.signing import (
    HEADER_IDEMPOTENCY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    AuthError,
    RequestAuthenticator,
    WebhookSignatureError,
    sign_request,
    sign_webhook,
    verify_webhook,
)

SECRET = b"s" * 32
NOW = 1_700_000_000


def signed(
    body: bytes = b'{"a":1}', *, nonce: str = "n" * 20, ts: int = NOW, key: str | None = "idem"
) -> dict[str, str]:
    return sign_request(
        "node-0",
        SECRET,
        "POST",
        "/v1/instructions",
        body,
        timestamp=ts,
        nonce=nonce,
        idempotency_key=key,
    )


def auth() -> RequestAuthenticator:
    return RequestAuthenticator({"node-0": SECRET}, window_s=300)


def test_valid_request_authenticates_once() -> None:
    a = auth()
    assert a.authenticate("POST", "/v1/instructions", signed(), b'{"a":1}', NOW) == "node-0"
    with pytest.raises(AuthError, match="already used"):
        a.authenticate("POST", "/v1/instructions", signed(), b'{"a":1}', NOW + 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: (h, b + b" "), "does not match"),
        (lambda h, b: ({**h, HEADER_IDEMPOTENCY: "other"}, b), "does not match"),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != HEADER_IDEMPOTENCY}, b),
            "does not match",
        ),
        (lambda h, b: ({**h, HEADER_SIGNATURE: "0" * 64}, b), "does not match"),
        (lambda h, b: ({**h, "X-Dvpsim-Client": "node-9"}, b), "unknown client"),
        (lambda h, b: ({k: v for k, v in h.items() if k != HEADER_NONCE}, b), "missing"),
        (lambda h, b: ({**h, HEADER_NONCE: "short"}, b), "16-64"),
        (lambda h, b: ({**h, HEADER_TIMESTAMP: "-5"}, b), "unix seconds"),
    ],
)
def test_tampered_requests_are_refused(change: object, message: str) -> None:
    headers, body = change(signed(), b'{"a":1}')  # type: ignore[operator]
    with pytest.raises(AuthError, match=message):
        auth().authenticate("POST", "/v1/instructions", headers, body, NOW)


def test_stale_and_future_timestamps_are_refused() -> None:
    for ts in (NOW - 301, NOW + 301):
        with pytest.raises(AuthError, match="clock"):
            auth().authenticate("POST", "/v1/instructions", signed(ts=ts), b'{"a":1}', NOW)


def test_wrong_path_or_method_is_refused() -> None:
    with pytest.raises(AuthError):
        auth().authenticate("POST", "/v1/instructions/x/execute", signed(), b'{"a":1}', NOW)
    with pytest.raises(AuthError):
        auth().authenticate("PUT", "/v1/instructions", signed(), b'{"a":1}', NOW)


def test_nonces_are_forgotten_only_after_their_window() -> None:
    a = auth()
    a.authenticate("POST", "/v1/instructions", signed(ts=NOW), b'{"a":1}', NOW)
    # Still within the window in which that timestamp would pass: refused.
    with pytest.raises(AuthError, match="already used"):
        a.authenticate("POST", "/v1/instructions", signed(ts=NOW + 299), b'{"a":1}', NOW + 599)
    a.authenticate(
        "POST", "/v1/instructions", signed(nonce="m" * 20, ts=NOW + 700), b'{"a":1}', NOW + 700
    )
    assert a.remembered_nonces == 1


@given(st.binary(min_size=1, max_size=64), st.integers(0, 63))
def test_any_body_change_breaks_the_signature(body: bytes, position: int) -> None:
    headers = sign_request("node-0", SECRET, "POST", "/p", body, timestamp=NOW, nonce="n" * 20)
    tampered = bytearray(body)
    tampered[position % len(body)] ^= 1
    with pytest.raises(AuthError):
        auth().authenticate("POST", "/p", headers, bytes(tampered), NOW)


def _key() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_webhook_signature_verifies_and_refuses_tampering() -> None:
    key, public = _key()
    body = b'{"event_id":"e1"}'
    header = sign_webhook(key, body, NOW)
    verify_webhook(public, header, body, NOW)
    with pytest.raises(WebhookSignatureError, match="does not verify"):
        verify_webhook(public, header, body + b" ", NOW)
    with pytest.raises(WebhookSignatureError, match="does not verify"):
        verify_webhook(_key()[1], header, body, NOW)
    with pytest.raises(WebhookSignatureError, match="old or ahead"):
        verify_webhook(public, header, body, NOW + 301)
    with pytest.raises(WebhookSignatureError, match="no Dvpsim-Bank-Signature"):
        verify_webhook(public, None, body, NOW)
    with pytest.raises(WebhookSignatureError, match="malformed"):
        verify_webhook(public, "t=1,ed25519=zz", body, NOW)
    # The timestamp is signed: moving it breaks the signature.
    moved = header.replace(f"t={NOW}", f"t={NOW + 1}")
    with pytest.raises(WebhookSignatureError, match="does not verify"):
        verify_webhook(public, moved, body, NOW)
