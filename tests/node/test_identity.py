"""Node identities: seeds and identity files map to stable libp2p peer ids."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.identity import (
    IdentityError,
    generate_seed,
    identity_from_seed,
    load_identity_file,
    seed_from_label,
    write_identity_file,
)


@given(seed=st.binary(min_size=32, max_size=32))
def test_same_seed_same_peer_id_and_it_matches_the_public_key(seed: bytes) -> None:
    a, b = identity_from_seed(seed), identity_from_seed(seed)
    assert a.peer_id == b.peer_id
    assert a.peer_id_text.startswith("12D3KooW")  # Ed25519 keys inline in the peer id
    assert a.key_pair.public_key.verify(b"m", a.key_pair.private_key.sign(b"m"))


def test_different_labels_give_different_identities() -> None:
    ids = {identity_from_seed(seed_from_label(f"n{i}")).peer_id_text for i in range(8)}
    assert len(ids) == 8


def test_rfc8032_seed_gives_the_rfc_public_key() -> None:
    # RFC 8032 section 7.1, TEST 1.
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert identity_from_seed(seed).key_pair.public_key.to_bytes() == public


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_seed_size_is_a_one_line_error(size: int) -> None:
    with pytest.raises(IdentityError) as caught:
        identity_from_seed(b"\x01" * size)
    assert "\n" not in str(caught.value) and "32" in str(caught.value)


def test_identity_file_round_trip_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node0.key"
    seed = generate_seed()
    written = write_identity_file(path, seed)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity_file(path).peer_id == written.peer_id
    with pytest.raises(IdentityError, match="already exists"):
        write_identity_file(path, generate_seed())
    assert load_identity_file(path).peer_id == written.peer_id
    assert seed.hex() not in repr(written)


@pytest.mark.parametrize(
    ("content", "expected"),
    [("abc\n", "expected 64 hex"), ("zz" * 32, "not hexadecimal"), ("", "expected 64 hex")],
)
def test_bad_identity_files_say_what_and_where(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(IdentityError) as caught:
        load_identity_file(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_identity_file(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="does not exist"):
        load_identity_file(tmp_path / "nope.key")
