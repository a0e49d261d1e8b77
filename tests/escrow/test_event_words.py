"""The watcher's word-by-word decoding of static event data is eth_abi's decoding: the
same values for every encoding, and eth_abi's own answer (or refusal) for anything else."""

from __future__ import annotations

from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_adapters.watcher import _abi_decode, _components, _static_plan

# The escrow events' data, and a nested tuple.
TYPES = [
    [
        "bytes32",
        "address",
        "(bytes32,uint8,address,address,address,uint256,address,uint256,uint64)",
    ],
    ["uint8", "address", "address", "uint256", "uint8"],
    ["uint32", "uint64", "uint32", "uint32"],
    ["bytes32", "uint8"],
    ["address", "bool", "(uint16,(bytes4,bool))"],
]


def _values(kind: str) -> st.SearchStrategy[Any]:
    if kind.startswith("("):
        return st.tuples(*(_values(k) for k in _components(kind[1:-1])))
    if kind == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    if kind == "bool":
        return st.booleans()
    if kind.startswith("uint"):
        return st.integers(0, 2 ** int(kind[4:]) - 1)
    size = int(kind[5:])
    return st.binary(min_size=size, max_size=size)


@st.composite
def encoded(draw: st.DrawFn) -> tuple[list[str], bytes]:
    types = draw(st.sampled_from(TYPES))
    values = [draw(_values(k)) for k in types]
    return types, abi_encode(types, values)


@given(encoded())
@settings(max_examples=200, deadline=None)
def test_every_encoding_decodes_as_eth_abi_decodes_it(case: tuple[list[str], bytes]) -> None:
    types, data = case
    assert _static_plan(tuple(types)) is not None
    assert _abi_decode(types, data) == abi_decode(types, data)


def _answer(types: list[str], data: bytes) -> tuple[str, Any]:
    try:
        return "ok", _abi_decode(types, data)
    except Exception as exc:
        return "error", type(exc)


def _reference(types: list[str], data: bytes) -> tuple[str, Any]:
    try:
        return "ok", abi_decode(types, data)
    except Exception as exc:
        return "error", type(exc)


@given(st.sampled_from(TYPES), st.data())
@settings(max_examples=200, deadline=None)
def test_any_bytes_get_eth_abis_answer(types: list[str], data: st.DataObject) -> None:
    words = sum(9 if k.startswith("(bytes32") else 1 for k in types) + 3
    # Mostly zero bytes with a few set: padding that is almost canonical, and lengths off.
    raw = bytearray(32 * data.draw(st.integers(0, words)) + data.draw(st.sampled_from([0, 0, 1])))
    for _ in range(data.draw(st.integers(0, 4))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(1, 255))
    assert _answer(types, bytes(raw)) == _reference(types, bytes(raw))


def test_dynamic_types_are_left_to_eth_abi() -> None:
    assert _static_plan(("bytes32", "bytes")) is None
    assert _static_plan(("uint8[]",)) is None
    data = abi_encode(["bytes32", "bytes"], [b"\x01" * 32, b"dvp"])
    assert _abi_decode(["bytes32", "bytes"], data) == (b"\x01" * 32, b"dvp")
