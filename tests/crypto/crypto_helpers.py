"""Helpers for the crypto tests: deterministic BLS keys and the vector files.

Imported by the test modules of tests/crypto as tests.crypto.crypto_helpers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from consensus import bls

VECTORS = Path(__file__).parent / "vectors"


def secret_key(label: str, index: int) -> int:
    """A deterministic secret key (IETF KeyGen over a hash of the label and index)."""
    return bls.keygen(hashlib.sha256(f"{label}/{index}".encode()).digest())


def committee_secret_keys(n: int, label: str = "committee") -> list[int]:
    return [secret_key(label, i) for i in range(n)]


def load_vector(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))
