"""EIP-2335 keystores: a node's BLS secret key encrypted under a password, as a JSON file.

Format (version 4): ``crypto.kdf`` derives a 32-byte decryption key from the password
(scrypt or PBKDF2-HMAC-SHA256, parameters and salt stored in the file);
``crypto.checksum`` is SHA-256(decryption_key[16:32] || ciphertext) and tells a wrong
password apart from a right one; ``crypto.cipher`` is AES-128-CTR with the first 16 bytes
of the decryption key. The password is NFKD-normalised, stripped of C0, C1 and DEL control
characters and UTF-8 encoded before use.

Decryption always uses the parameters found in the file. Encryption defaults to the EIP's
recommended cost (scrypt n=2^18, r=8, p=1: about 1 s and 256 MiB); keystores that dvpsim
generates for local and simulated committees may pass ``cost=TEST_SCRYPT`` (n=2^14) or a
lower ``PBKDF2`` iteration count so that a 31-node run starts quickly. Those keystores are
still valid EIP-2335 files, just cheaper to brute-force: never use them for real keys.

This module must never write a secret or a password to a log or an error message, never
accept a file whose checksum does not match, and never leave a half-written keystore on
disk (files are written to a temporary name, fsynced, then renamed, mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
import unicodedata
import uuid as uuid_module
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from consensus import bls

__all__ = [
    "STANDARD_PBKDF2",
    "STANDARD_SCRYPT",
    "TEST_PBKDF2",
    "TEST_SCRYPT",
    "KdfName",
    "KeystoreError",
    "Pbkdf2Cost",
    "ScryptCost",
    "decrypt",
    "decrypt_bls_key",
    "encrypt",
    "encrypt_bls_key",
    "load",
    "load_bls_key",
    "normalize_password",
    "save",
]

KdfName = Literal["scrypt", "pbkdf2"]

_DKLEN: Final = 32
_IV_LENGTH: Final = 16
_SALT_LENGTH: Final = 32
# Refuse parameters that would make loading a file a denial of service (scrypt memory is
# 128 * r * n bytes; 2^20 * 8 * 128 = 1 GiB) or that are too weak to mean anything.
_MAX_SCRYPT_N: Final = 2**20
_MAX_SCRYPT_RP: Final = 64
_MAX_PBKDF2_C: Final = 10_000_000
_MIN_SALT_LENGTH: Final = 16


class KeystoreError(ValueError):
    """A keystore cannot be used: wrong password, malformed or modified file, I/O failure.
    The message is one line naming the file and what to do; it never contains secrets."""


@dataclass(frozen=True, slots=True)
class ScryptCost:
    n: int
    r: int
    p: int


@dataclass(frozen=True, slots=True)
class Pbkdf2Cost:
    c: int


STANDARD_SCRYPT: Final = ScryptCost(n=2**18, r=8, p=1)
STANDARD_PBKDF2: Final = Pbkdf2Cost(c=2**18)
#: Cheap costs for keystores of local/simulated committees only (see module docstring).
TEST_SCRYPT: Final = ScryptCost(n=2**14, r=8, p=1)
TEST_PBKDF2: Final = Pbkdf2Cost(c=2**12)


def normalize_password(password: str) -> bytes:
    """EIP-2335 password processing: NFKD, strip C0 (0x00-0x1F), DEL (0x7F), C1 (0x80-0x9F),
    UTF-8 encode."""
    normalized = unicodedata.normalize("NFKD", password)
    kept = "".join(ch for ch in normalized if not (ord(ch) <= 0x1F or 0x7F <= ord(ch) <= 0x9F))
    return kept.encode("utf-8")


# --------------------------------------------------------------------------- key derivation


def _derive_scrypt(password: bytes, salt: bytes, cost: ScryptCost, dklen: int) -> bytes:
    return Scrypt(salt=salt, length=dklen, n=cost.n, r=cost.r, p=cost.p).derive(password)


def _derive_pbkdf2(password: bytes, salt: bytes, cost: Pbkdf2Cost, dklen: int) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=dklen, salt=salt, iterations=cost.c)
    return kdf.derive(password)


def _aes_128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    # CTR mode is its own inverse: the same call encrypts and decrypts.
    transform = Cipher(algorithms.AES(key[:16]), modes.CTR(iv)).encryptor()
    return transform.update(data) + transform.finalize()


def _checksum(decryption_key: bytes, ciphertext: bytes) -> bytes:
    return hashlib.sha256(decryption_key[16:32] + ciphertext).digest()


# --------------------------------------------------------------------------- encrypt


def encrypt(
    secret: bytes,
    password: str,
    *,
    kdf: KdfName = "scrypt",
    cost: ScryptCost | Pbkdf2Cost | None = None,
    pubkey: bytes = b"",
    path: str = "",
    description: str = "",
    salt: bytes | None = None,
    iv: bytes | None = None,
    keystore_uuid: str | None = None,
) -> dict[str, Any]:
    """Encrypt ``secret`` into an EIP-2335 keystore dict.

    ``cost`` defaults to the standard cost of ``kdf``; pass TEST_SCRYPT / TEST_PBKDF2 only for
    throwaway keys. ``salt``, ``iv`` and ``keystore_uuid`` are fresh random values unless
    given (tests pass them to reproduce the EIP vectors).
    """
    if not isinstance(secret, bytes) or not secret:
        raise KeystoreError("keystore secret must be non-empty bytes")
    salt = os.urandom(_SALT_LENGTH) if salt is None else salt
    iv = os.urandom(_IV_LENGTH) if iv is None else iv
    if len(iv) != _IV_LENGTH:
        raise KeystoreError(f"aes-128-ctr needs a {_IV_LENGTH}-byte iv")
    password_bytes = normalize_password(password)
    kdf_params: dict[str, Any]
    if kdf == "scrypt":
        scrypt_cost = STANDARD_SCRYPT if cost is None else cost
        if not isinstance(scrypt_cost, ScryptCost):
            raise KeystoreError("kdf 'scrypt' needs a ScryptCost")
        key = _derive_scrypt(password_bytes, salt, scrypt_cost, _DKLEN)
        kdf_params = {
            "dklen": _DKLEN,
            "n": scrypt_cost.n,
            "p": scrypt_cost.p,
            "r": scrypt_cost.r,
            "salt": salt.hex(),
        }
    elif kdf == "pbkdf2":
        pbkdf2_cost = STANDARD_PBKDF2 if cost is None else cost
        if not isinstance(pbkdf2_cost, Pbkdf2Cost):
            raise KeystoreError("kdf 'pbkdf2' needs a Pbkdf2Cost")
        key = _derive_pbkdf2(password_bytes, salt, pbkdf2_cost, _DKLEN)
        kdf_params = {"dklen": _DKLEN, "c": pbkdf2_cost.c, "prf": "hmac-sha256", "salt": salt.hex()}
    else:
        raise KeystoreError(f"unknown keystore kdf {kdf!r}; use 'scrypt' or 'pbkdf2'")
    ciphertext = _aes_128_ctr(key, iv, secret)
    return {
        "crypto": {
            "kdf": {"function": kdf, "params": kdf_params, "message": ""},
            "checksum": {
                "function": "sha256",
                "params": {},
                "message": _checksum(key, ciphertext).hex(),
            },
            "cipher": {
                "function": "aes-128-ctr",
                "params": {"iv": iv.hex()},
                "message": ciphertext.hex(),
            },
        },
        "description": description,
        "pubkey": pubkey.hex(),
        "path": path,
        "uuid": str(uuid_module.uuid4()) if keystore_uuid is None else keystore_uuid,
        "version": 4,
    }


def encrypt_bls_key(sk: int, password: str, **options: Any) -> dict[str, Any]:
    """``encrypt`` for a BLS secret key: 32-byte big-endian secret, ``pubkey`` filled in."""
    pubkey = bls.sk_to_pk(sk)
    return encrypt(sk.to_bytes(32, "big"), password, pubkey=pubkey, **options)


# --------------------------------------------------------------------------- decrypt


def _field(container: object, key: str, kind: type, where: str, source: str) -> Any:
    if not isinstance(container, Mapping) or key not in container:
        raise KeystoreError(f"keystore {source} is missing {where}.{key}; restore the file")
    value = container[key]
    # bool is an int subclass; a JSON true is never a valid count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        json_name = {int: "an integer", str: "a string", dict: "an object"}[kind]
        raise KeystoreError(
            f"keystore {source}: {where}.{key} must be {json_name}; restore the file"
        )
    return value


def _hex_field(container: object, key: str, where: str, source: str) -> bytes:
    text = _field(container, key, str, where, source)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise KeystoreError(
            f"keystore {source}: {where}.{key} is not hex; restore the file"
        ) from None


def _derive_from_file(kdf: object, password: bytes, source: str) -> bytes:
    function = _field(kdf, "function", str, "crypto.kdf", source)
    params = _field(kdf, "params", dict, "crypto.kdf", source)
    where = "crypto.kdf.params"
    dklen = _field(params, "dklen", int, where, source)
    salt = _hex_field(params, "salt", where, source)
    if not _DKLEN <= dklen <= 64:
        raise KeystoreError(f"keystore {source}: dklen {dklen} must be in [32, 64]")
    if len(salt) < _MIN_SALT_LENGTH:
        raise KeystoreError(f"keystore {source}: salt shorter than {_MIN_SALT_LENGTH} bytes")
    if function == "scrypt":
        cost = ScryptCost(
            n=_field(params, "n", int, where, source),
            r=_field(params, "r", int, where, source),
            p=_field(params, "p", int, where, source),
        )
        if cost.n < 2 or cost.n > _MAX_SCRYPT_N or cost.n & (cost.n - 1):
            raise KeystoreError(
                f"keystore {source}: scrypt n={cost.n} must be a power of two <= {_MAX_SCRYPT_N}"
            )
        if not (1 <= cost.r <= _MAX_SCRYPT_RP and 1 <= cost.p <= _MAX_SCRYPT_RP):
            raise KeystoreError(f"keystore {source}: scrypt r and p must be in [1, 64]")
        return _derive_scrypt(password, salt, cost, dklen)
    if function == "pbkdf2":
        prf = _field(params, "prf", str, where, source)
        if prf != "hmac-sha256":
            raise KeystoreError(f"keystore {source}: unsupported pbkdf2 prf {prf!r}")
        c = _field(params, "c", int, where, source)
        if not 1 <= c <= _MAX_PBKDF2_C:
            raise KeystoreError(f"keystore {source}: pbkdf2 c={c} out of range")
        return _derive_pbkdf2(password, salt, Pbkdf2Cost(c=c), dklen)
    raise KeystoreError(f"keystore {source}: unsupported kdf {function!r}")


def decrypt(keystore: Mapping[str, Any], password: str, *, source: str = "<memory>") -> bytes:
    """The secret of an EIP-2335 keystore dict. ``source`` names the file in errors.

    Raises KeystoreError("wrong password for keystore <source>") when the checksum does not
    match (a wrong password, or a modified salt, parameter or ciphertext), and a KeystoreError
    naming the field for any structural problem.
    """
    if not isinstance(keystore, Mapping):
        raise KeystoreError(f"keystore {source} is not a JSON object; restore the file")
    version = _field(keystore, "version", int, "keystore", source)
    if version != 4:
        raise KeystoreError(f"keystore {source} has version {version}; only version 4 is supported")
    crypto = _field(keystore, "crypto", dict, "keystore", source)
    kdf = _field(crypto, "kdf", dict, "crypto", source)
    checksum = _field(crypto, "checksum", dict, "crypto", source)
    cipher = _field(crypto, "cipher", dict, "crypto", source)

    checksum_function = _field(checksum, "function", str, "crypto.checksum", source)
    if checksum_function != "sha256":
        raise KeystoreError(f"keystore {source}: unsupported checksum {checksum_function!r}")
    if _field(checksum, "params", dict, "crypto.checksum", source):
        raise KeystoreError(f"keystore {source}: sha256 checksum takes no params")
    expected_checksum = _hex_field(checksum, "message", "crypto.checksum", source)
    if len(expected_checksum) != 32:
        raise KeystoreError(f"keystore {source}: checksum must be 32 bytes; restore the file")

    cipher_function = _field(cipher, "function", str, "crypto.cipher", source)
    if cipher_function != "aes-128-ctr":
        raise KeystoreError(f"keystore {source}: unsupported cipher {cipher_function!r}")
    cipher_params = _field(cipher, "params", dict, "crypto.cipher", source)
    iv = _hex_field(cipher_params, "iv", "crypto.cipher.params", source)
    if len(iv) != _IV_LENGTH:
        raise KeystoreError(f"keystore {source}: aes-128-ctr iv must be {_IV_LENGTH} bytes")
    ciphertext = _hex_field(cipher, "message", "crypto.cipher", source)
    if not ciphertext:
        raise KeystoreError(f"keystore {source}: empty ciphertext; restore the file")

    key = _derive_from_file(kdf, normalize_password(password), source)
    if not hmac.compare_digest(_checksum(key, ciphertext), expected_checksum):
        raise KeystoreError(f"wrong password for keystore {source}")
    return _aes_128_ctr(key, iv, ciphertext)


def decrypt_bls_key(keystore: Mapping[str, Any], password: str, *, source: str = "<memory>") -> int:
    """The BLS secret key of a keystore, checked against its ``pubkey`` field."""
    secret = decrypt(keystore, password, source=source)
    sk = int.from_bytes(secret, "big")
    if len(secret) != 32 or not 0 < sk < bls.CURVE_ORDER:
        raise KeystoreError(f"keystore {source} does not hold a BLS12-381 secret key")
    stored = keystore.get("pubkey", "")
    if not isinstance(stored, str):
        raise KeystoreError(f"keystore {source}: pubkey must be a hex string; restore the file")
    if stored and stored.lower().removeprefix("0x") != bls.sk_to_pk(sk).hex():
        raise KeystoreError(
            f"keystore {source}: decrypted key does not match its pubkey field; restore the file"
        )
    return sk


# --------------------------------------------------------------------------- files


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a keystore file as a dict (no decryption)."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise KeystoreError(
            f"cannot read keystore {source}: {exc.strerror or exc}; check the path"
        ) from None
    except UnicodeDecodeError:
        raise KeystoreError(f"keystore {source} is not UTF-8 text; restore the file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeystoreError(
            f"keystore {source} is not valid JSON (line {exc.lineno}); restore the file"
        ) from None
    if not isinstance(data, dict):
        raise KeystoreError(f"keystore {source} is not a JSON object; restore the file")
    return data


def save(path: str | os.PathLike[str], keystore: Mapping[str, Any]) -> None:
    """Write a keystore atomically with mode 0600 (temporary file, fsync, rename)."""
    target = Path(os.fspath(path))
    data = json.dumps(keystore, indent=2, sort_keys=True) + "\n"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=".keystore-", dir=target.parent or Path("."))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o600)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise KeystoreError(
            f"cannot write keystore {target}: {exc.strerror or exc}; check the directory"
        ) from None


def load_bls_key(path: str | os.PathLike[str], password: str) -> int:
    """Read and decrypt a BLS keystore file."""
    return decrypt_bls_key(load(path), password, source=os.fspath(path))
