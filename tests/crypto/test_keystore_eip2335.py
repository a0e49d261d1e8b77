"""EIP-2335 keystores: the two vectors of the EIP, password normalisation, wrong passwords,
tampered files, and round trips through files."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import bls, keystore
from consensus.keystore import TEST_PBKDF2, TEST_SCRYPT, KeystoreError
from tests.crypto.crypto_helpers import load_vector, secret_key

VECTORS = load_vector("eip2335.json")
PASSWORD: str = VECTORS["password"]
SECRET = bytes.fromhex(VECTORS["secret"])


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_eip_vector_decrypts(kdf: str) -> None:
    ks = VECTORS["keystores"][kdf]
    assert keystore.decrypt(ks, PASSWORD) == SECRET
    # The vector's pubkey is the BLS public key of its secret: checks sk_to_pk too.
    assert keystore.decrypt_bls_key(ks, PASSWORD) == int.from_bytes(SECRET, "big")


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_eip_vector_is_reproduced_by_encrypt(kdf: str) -> None:
    ks = VECTORS["keystores"][kdf]
    again = keystore.encrypt(
        SECRET,
        PASSWORD,
        kdf=kdf,  # type: ignore[arg-type]
        salt=bytes.fromhex(ks["crypto"]["kdf"]["params"]["salt"]),
        iv=bytes.fromhex(ks["crypto"]["cipher"]["params"]["iv"]),
        pubkey=bytes.fromhex(ks["pubkey"]),
        path=ks["path"],
        description=ks["description"],
        keystore_uuid=ks["uuid"],
    )
    assert again == ks


def test_password_normalisation_matches_eip() -> None:
    assert keystore.normalize_password(PASSWORD).hex() == VECTORS["encoded_password"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("pass\x00word", b"password"),
        ("\x1fpass\x7fword\x80\x9f", b"password"),
        ("pass word", b"pass word"),  # space is kept
        ("caf\u00e9", "cafe\u0301".encode()),  # NFKD decomposes
        ("\u00a0x", b" x"),  # NBSP is compatibility-mapped to a space, not stripped
    ],
)
def test_password_control_characters(raw: str, expected: bytes) -> None:
    assert keystore.normalize_password(raw) == expected


def test_passwords_equal_after_normalisation_open_the_same_keystore() -> None:
    ks = keystore.encrypt(SECRET, "pass\u2028word\x07", kdf="pbkdf2", cost=TEST_PBKDF2)
    # U+2028 is not a C0/C1 control, so it stays; BEL (0x07) is stripped.
    assert keystore.decrypt(ks, "pass\u2028word") == SECRET


@pytest.fixture
def small_keystore_file(tmp_path: Path) -> tuple[Path, int]:
    sk = secret_key("keystore", 0)
    path = tmp_path / "node-0.json"
    keystore.save(path, keystore.encrypt_bls_key(sk, "correct horse", cost=TEST_SCRYPT))
    return path, sk


def test_file_round_trip_and_mode(small_keystore_file: tuple[Path, int]) -> None:
    path, sk = small_keystore_file
    assert keystore.load_bls_key(path, "correct horse") == sk
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["node-0.json"]  # no temp files left
    assert keystore.load(path)["pubkey"] == bls.sk_to_pk(sk).hex()


def test_wrong_password_is_one_line_naming_the_file(small_keystore_file: tuple[Path, int]) -> None:
    path, _ = small_keystore_file
    with pytest.raises(KeystoreError) as caught:
        keystore.load_bls_key(path, "wrong horse")
    assert str(caught.value) == f"wrong password for keystore {path}"


def _tamper(ks: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(ks)
    *parents, leaf = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return out


_DELETE = object()
BASE = keystore.encrypt_bls_key(secret_key("keystore", 1), "pw", kdf="pbkdf2", cost=TEST_PBKDF2)


@pytest.mark.parametrize(
    ("dotted", "value", "fragment"),
    [
        ("crypto.cipher", _DELETE, "missing crypto.cipher"),
        ("crypto.kdf.params.salt", _DELETE, "missing crypto.kdf.params.salt"),
        ("crypto.kdf.params.c", "1000", "crypto.kdf.params.c must be an integer"),
        ("crypto.kdf.params.c", True, "crypto.kdf.params.c must be an integer"),
        ("crypto.kdf.params.c", 0, "pbkdf2 c=0 out of range"),
        ("crypto.kdf.params.prf", "hmac-sha512", "unsupported pbkdf2 prf"),
        ("crypto.kdf.params.dklen", 16, "dklen 16"),
        ("crypto.kdf.params.salt", "abcd", "salt shorter"),
        ("crypto.kdf.function", "argon2", "unsupported kdf"),
        ("crypto.cipher.function", "aes-256-gcm", "unsupported cipher"),
        ("crypto.cipher.params.iv", "00" * 8, "iv must be 16 bytes"),
        ("crypto.cipher.message", "zz", "crypto.cipher.message is not hex"),
        ("crypto.checksum.function", "keccak256", "unsupported checksum"),
        ("crypto.checksum.message", "00" * 31, "checksum must be 32 bytes"),
        ("crypto.checksum.params", {"x": 1}, "takes no params"),
        ("version", 3, "only version 4"),
        ("crypto", [], "keystore.crypto must be an object"),
    ],
)
def test_structural_tampering_is_named(dotted: str, value: Any, fragment: str) -> None:
    with pytest.raises(KeystoreError) as caught:
        keystore.decrypt(_tamper(BASE, dotted, value), "pw", source="ks.json")
    message = str(caught.value)
    assert fragment in message
    assert "ks.json" in message and "\n" not in message and "pw" not in message.split()


@pytest.mark.parametrize(
    ("dotted", "mutate"),
    [
        ("crypto.checksum.message", lambda h: ("0" if h[0] != "0" else "1") + h[1:]),
        ("crypto.cipher.message", lambda h: h[:-1] + ("0" if h[-1] != "0" else "1")),
        ("crypto.kdf.params.salt", lambda h: h[:-1] + ("0" if h[-1] != "0" else "1")),
    ],
)
def test_checksum_mismatch_is_refused(dotted: str, mutate: Any) -> None:
    """A modified checksum, ciphertext or salt looks exactly like a wrong password: the
    checksum cannot tell them apart, and nothing is decrypted either way."""
    node: Any = BASE
    for key in dotted.split("."):
        node = node[key]
    with pytest.raises(KeystoreError, match=r"^wrong password for keystore ks\.json$"):
        keystore.decrypt(_tamper(BASE, dotted, mutate(node)), "pw", source="ks.json")


def test_cost_parameter_change_is_refused() -> None:
    with pytest.raises(KeystoreError, match="wrong password"):
        keystore.decrypt(_tamper(BASE, "crypto.kdf.params.c", TEST_PBKDF2.c + 1), "pw")


def test_pubkey_mismatch_is_refused() -> None:
    other = bls.sk_to_pk(secret_key("keystore", 2)).hex()
    with pytest.raises(KeystoreError, match="does not match its pubkey field"):
        keystore.decrypt_bls_key(_tamper(BASE, "pubkey", other), "pw")


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [(1000, 8, 1), (2**21, 8, 1), (2**10, 0, 1), (2**10, 8, 65)],
)
def test_scrypt_parameters_out_of_bounds(n: int, r: int, p: int) -> None:
    ks = keystore.encrypt(SECRET, "pw", kdf="scrypt", cost=TEST_SCRYPT)
    ks["crypto"]["kdf"]["params"].update({"n": n, "r": r, "p": p})
    with pytest.raises(KeystoreError, match="scrypt"):
        keystore.decrypt(ks, "pw")


def test_bad_json_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"version": 4,', encoding="utf-8")
    with pytest.raises(KeystoreError, match=r"is not valid JSON \(line 1\); restore the file"):
        keystore.load(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(KeystoreError, match="is not a JSON object"):
        keystore.load(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(KeystoreError, match="not UTF-8"):
        keystore.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="cannot read keystore .*missing.json"):
        keystore.load(tmp_path / "missing.json")


def test_save_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="cannot write keystore"):
        keystore.save(tmp_path / "no" / "such" / "dir.json", BASE)


def test_saved_file_is_plain_eip2335_json(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keystore.save(path, BASE)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == BASE
    assert set(data) == {"crypto", "description", "pubkey", "path", "uuid", "version"}


@settings(max_examples=15, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=64),
    password=st.text(max_size=20),
    kdf=st.sampled_from(["scrypt", "pbkdf2"]),
)
def test_round_trip_any_secret_and_password(secret: bytes, password: str, kdf: str) -> None:
    cost = TEST_SCRYPT if kdf == "scrypt" else TEST_PBKDF2
    ks = keystore.encrypt(secret, password, kdf=kdf, cost=cost)  # type: ignore[arg-type]
    assert keystore.decrypt(ks, password) == secret
    with pytest.raises(KeystoreError, match="wrong password"):
        keystore.decrypt(ks, password + "x")
