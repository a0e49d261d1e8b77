"""Crypto suites: every signature the consensus parts make or check, behind one interface.

The sans-I/O parts (``consensus.protocol.Node``, ``consensus.report``'s certificate
functions, the Byzantine wrappers, the escrow model, the bank's ``authorize``) sign and
verify through a ``CryptoSuite`` passed in as a parameter, never by calling a backend
directly. Every such parameter defaults to ``REAL_CRYPTO``, so real mode never changes.
Three suites exist:

- ``REAL_CRYPTO`` ("real"): exactly the cryptography of a real deployment, BLS12-381 via
  blst (``consensus.bls``) and Ed25519 via libsodium (``consensus.identity``), with the
  process's ``bls.PROCESS_CACHE`` (a real node is one member per process).
  ``RealCrypto(bls.BlsCache())`` is the same with a cache of its own: one per member where
  one process plays many members and each must pay for its own work (the consensus
  benchmark).
- ``MemoizedCrypto(inner)`` ("memoized"; ``MEMOIZED_CRYPTO`` wraps the real suite): the
  same answers, remembered in one bounded LRU. Every operation of a suite is a pure
  function of its inputs (BLS and Ed25519 signatures are deterministic, verification has
  no state), so remembering an answer can never change one. It pays off where one process
  plays many parties: a full-system simulation, where every simulated member verifies the
  same certificate and the same observations, and reruns of one seed (shrinking).
- ``scenarios.sim.fastcrypto.FastCrypto`` ("fast"): keyed hashes standing in for BLS and
  Ed25519, for simulations only. It lives outside ``consensus`` on purpose.

A suite that must be told the committee's keys before it can check their signatures (the
fast one) also implements ``KeyRegistry``; the harness registers every member's keys with
it when it builds a committee or a simulation.

Public keys are always the real ones (``sk_to_pk``), so committee configurations, config
digests and report hashes are the same under every suite; only signature bytes differ.

This module must never: change a verdict of the real backends (the real suite adds nothing
to them, the memoized one only remembers); cache anything keyed by a secret in readable
form (cache keys are digests); read the clock, the disk or a global random generator.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, cast, runtime_checkable

from nacl.signing import SigningKey

from consensus import bls, identity

__all__ = [
    "DEFAULT_MEMO_CAPACITY",
    "MEMOIZED_CRYPTO",
    "REAL_CRYPTO",
    "CacheStats",
    "CryptoSuite",
    "KeyRegistry",
    "MemoizedCrypto",
    "RealCrypto",
]

_T = TypeVar("_T", bytes, bool)

#: Entries of the memoized suite's LRU (all operations together). An entry is a 32-byte
#: digest and at most 96 bytes of answer, about 250 bytes with Python's overhead.
DEFAULT_MEMO_CAPACITY: Final = 200_000


class CryptoSuite(Protocol):
    """What the consensus parts sign and verify with. Secret BLS keys are ints in [1, r),
    public keys 48-byte compressed G1 points, BLS signatures 96 bytes; identity keys are
    Ed25519 (PyNaCl ``SigningKey`` secret, 32-byte raw public key, 64-byte signature).
    Verification functions answer False on malformed input, never raise."""

    @property
    def name(self) -> str:
        """The suite's name, "real", "memoized" or "fast", recorded with results so a
        reader knows which cryptography produced them."""
        ...

    def sk_to_pk(self, sk: int) -> bytes: ...

    def bls_sign(self, sk: int, message: bytes) -> bytes: ...

    def bls_verify(self, pk: bytes, message: bytes, signature: bytes) -> bool: ...

    def bls_aggregate(self, signatures: Sequence[bytes]) -> bytes:
        """The aggregate of ``signatures``; ``bls.BlsError`` on an empty list or a
        signature that fails ``bls_signature_validate`` (like ``bls.aggregate``)."""
        ...

    def bls_signature_validate(self, signature: bytes) -> bool: ...

    def bls_fast_aggregate_verify(
        self, pks: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool: ...

    def pop_prove(self, sk: int) -> bytes: ...

    def pop_verify(self, pk: bytes, proof: bytes) -> bool: ...

    def sign_observation(self, key: SigningKey, message: bytes) -> bytes:
        """The identity key's signature of ``message`` (an ``observation_message``)."""
        ...

    def verify_observation(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...


@runtime_checkable
class KeyRegistry(Protocol):
    """A suite that checks signatures only for keys it was given (the simulation's fast
    suite). Registering returns the key's public half."""

    def register_bls(self, sk: int) -> bytes: ...

    def register_identity(self, signing_key: SigningKey) -> bytes: ...


# --------------------------------------------------------------------------- real


class RealCrypto:
    """The real cryptography, unchanged: ``consensus.bls`` and ``consensus.identity``,
    remembering hashed messages in ``cache`` (the process's by default)."""

    __slots__ = ("_cache",)

    def __init__(self, cache: bls.BlsCache = bls.PROCESS_CACHE) -> None:
        self._cache = cache

    @property
    def name(self) -> str:
        return "real"

    @property
    def cache(self) -> bls.BlsCache:
        """The BLS cache this suite's calls use."""
        return self._cache

    def __repr__(self) -> str:
        return "REAL_CRYPTO" if self._cache is bls.PROCESS_CACHE else "RealCrypto(own cache)"

    def sk_to_pk(self, sk: int) -> bytes:
        return bls.sk_to_pk(sk)

    def bls_sign(self, sk: int, message: bytes) -> bytes:
        return bls.sign(sk, message, self._cache)

    def bls_verify(self, pk: bytes, message: bytes, signature: bytes) -> bool:
        return bls.verify(pk, message, signature, self._cache)

    def bls_aggregate(self, signatures: Sequence[bytes]) -> bytes:
        return bls.aggregate(signatures)

    def bls_signature_validate(self, signature: bytes) -> bool:
        return bls.signature_validate(signature)

    def bls_fast_aggregate_verify(
        self, pks: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        return bls.fast_aggregate_verify(pks, message, signature, self._cache)

    def pop_prove(self, sk: int) -> bytes:
        return bls.pop_prove(sk)

    def pop_verify(self, pk: bytes, proof: bytes) -> bool:
        return bls.pop_verify(pk, proof)

    def sign_observation(self, key: SigningKey, message: bytes) -> bytes:
        return identity.sign_message(key, message)

    def verify_observation(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        return identity.verify_message(public_key, message, signature)


REAL_CRYPTO: Final[CryptoSuite] = RealCrypto()


# --------------------------------------------------------------------------- memoized


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Hits and misses of one operation of a ``MemoizedCrypto``."""

    hits: int = 0
    misses: int = 0


def _secret_part(sk: int) -> object:
    """A secret key as cache-key input: its bytes, or, for anything but an int, itself
    (not bytes, so the call is not cached and the inner suite refuses it)."""
    if isinstance(sk, bool) or not isinstance(sk, int):
        return sk
    # Out-of-range keys still get bytes: the inner suite raises for them, nothing is kept.
    return sk.to_bytes(max(32, (sk.bit_length() + 8) // 8), "big", signed=True)


class MemoizedCrypto:
    """``inner``'s answers, remembered in one bounded LRU shared by all operations.

    Keys are SHA-256 digests of the operation's name and its length-prefixed inputs (so
    an observation of kilobytes costs 32 bytes of cache, and no secret is held in clear).
    Only answers are cached: an ``inner`` call that raises (``bls_aggregate`` of a malformed
    signature, signing with an out-of-range key) raises again the next time. Thread-safe;
    the inner suite is called outside the lock.
    """

    __slots__ = ("_capacity", "_entries", "_hits", "_inner", "_lock", "_misses", "_name")

    def __init__(self, inner: CryptoSuite, capacity: int = DEFAULT_MEMO_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"MemoizedCrypto capacity must be at least 1, not {capacity}")
        self._inner = inner
        self._capacity = capacity
        self._name = "memoized" if inner.name == "real" else f"memoized-{inner.name}"
        self._entries: OrderedDict[bytes, bytes | bool] = OrderedDict()
        self._lock = threading.Lock()
        self._hits: dict[str, int] = {}
        self._misses: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def inner(self) -> CryptoSuite:
        return self._inner

    @property
    def capacity(self) -> int:
        return self._capacity

    def __repr__(self) -> str:
        return f"MemoizedCrypto({self._inner!r}, capacity={self._capacity})"

    # ------------------------------------------------------------------ counters

    @property
    def hits(self) -> int:
        return sum(self._hits.values())

    @property
    def misses(self) -> int:
        return sum(self._misses.values())

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, CacheStats]:
        """Hits and misses per operation (operations never called are left out)."""
        with self._lock:
            names = sorted(set(self._hits) | set(self._misses))
            return {n: CacheStats(self._hits.get(n, 0), self._misses.get(n, 0)) for n in names}

    def clear(self) -> None:
        """Forget every answer and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._hits.clear()
            self._misses.clear()

    # ------------------------------------------------------------------ the cache

    def _remember(self, op: str, parts: Sequence[object], compute: Callable[[], _T]) -> _T:
        data = [part for part in parts if isinstance(part, bytes)]
        if len(data) != len(parts):
            return compute()  # wrongly typed input: the inner suite's answer, not kept
        digest = hashlib.sha256(op.encode())
        for part in data:
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        key = digest.digest()
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self._hits[op] = self._hits.get(op, 0) + 1
                return cast(_T, found)
            self._misses[op] = self._misses.get(op, 0) + 1
        value = compute()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return value

    # ------------------------------------------------------------------ the suite

    def sk_to_pk(self, sk: int) -> bytes:
        inner = self._inner
        return self._remember("sk_to_pk", (_secret_part(sk),), lambda: inner.sk_to_pk(sk))

    def bls_sign(self, sk: int, message: bytes) -> bytes:
        inner = self._inner
        return self._remember(
            "bls_sign", (_secret_part(sk), message), lambda: inner.bls_sign(sk, message)
        )

    def bls_verify(self, pk: bytes, message: bytes, signature: bytes) -> bool:
        inner = self._inner
        return self._remember(
            "bls_verify",
            (pk, message, signature),
            lambda: inner.bls_verify(pk, message, signature),
        )

    def bls_aggregate(self, signatures: Sequence[bytes]) -> bytes:
        inner, given = self._inner, tuple(signatures)
        return self._remember("bls_aggregate", given, lambda: inner.bls_aggregate(given))

    def bls_signature_validate(self, signature: bytes) -> bool:
        inner = self._inner
        return self._remember(
            "bls_signature_validate",
            (signature,),
            lambda: inner.bls_signature_validate(signature),
        )

    def bls_fast_aggregate_verify(
        self, pks: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        inner, keys = self._inner, tuple(pks)
        # The key count is an input of its own, so (keys, message) cannot be re-split.
        count = len(keys).to_bytes(2, "big")
        return self._remember(
            "bls_fast_aggregate_verify",
            (count, *keys, message, signature),
            lambda: inner.bls_fast_aggregate_verify(keys, message, signature),
        )

    def pop_prove(self, sk: int) -> bytes:
        inner = self._inner
        return self._remember("pop_prove", (_secret_part(sk),), lambda: inner.pop_prove(sk))

    def pop_verify(self, pk: bytes, proof: bytes) -> bool:
        inner = self._inner
        return self._remember("pop_verify", (pk, proof), lambda: inner.pop_verify(pk, proof))

    def sign_observation(self, key: SigningKey, message: bytes) -> bytes:
        inner = self._inner
        return self._remember(
            "sign_observation", (bytes(key), message), lambda: inner.sign_observation(key, message)
        )

    def verify_observation(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        inner = self._inner
        return self._remember(
            "verify_observation",
            (public_key, message, signature),
            lambda: inner.verify_observation(public_key, message, signature),
        )


MEMOIZED_CRYPTO: Final = MemoizedCrypto(REAL_CRYPTO)
