"""Watch contract events on an EVM chain with a confirmation depth, and survive reorgs.

Oracle nodes act on what they saw on chain (an asset locked, a settlement committed). A
block can be dropped by a reorg, and with it the events the node acted on, so the watcher
delivers each event as a :class:`Delivered` record once its block has ``confirmations``
confirmations (``1`` = as soon as it is in a block), and if a delivered event's block
leaves the canonical chain it emits a :class:`Retracted` record for it. Events of the new
branch are then delivered, each exactly once.

How: every :meth:`EventWatcher.poll` first checks that the last block it scanned still has
the hash it recorded; if not, it walks back over the hashes it keeps (every block that
held a delivered event, and the last block of every scan, for the last ``history``
blocks) to the newest block that still matches, retracts everything delivered above it
(newest first) and rescans from there. Scanning a range uses one ``eth_getLogs``; the
headers of the blocks that hold logs and of the range's end are read again afterwards, so
a reorg that happens during the scan is noticed and the range is simply scanned again at
the next poll. A reorg deeper than ``history`` blocks cannot be undone and raises
:class:`ReorgTooDeep`.

The watcher is driven by its caller (a node runtime thread, a test): ``poll()`` returns
what happened since the last call. It never sleeps, never sends transactions, and never
decides anything from events; it only reports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from chain_adapters.evm import Rpc
from chain_adapters.verifier import abi_type

__all__ = [
    "ChainLog",
    "Delivered",
    "EventDecoder",
    "EventWatcher",
    "ReorgTooDeep",
    "Retracted",
    "WatchRecord",
    "chain_log",
]


class ReorgTooDeep(Exception):
    """A reorg replaced blocks older than the watcher's history window."""


@dataclass(frozen=True, slots=True)
class ChainLog:
    """One event log of a canonical (at delivery time) block, decoded when its ABI is known."""

    chain_id: int
    address: str
    block_number: int
    block_hash: bytes
    transaction_hash: bytes
    log_index: int
    event: str  # event name, "" when no ABI in the decoder matches
    args: tuple[tuple[str, Any], ...]  # decoded arguments in ABI order (structs as tuples)
    topics: tuple[bytes, ...]
    data: bytes

    @property
    def key(self) -> tuple[bytes, int]:
        """Identity of the log: the same transaction mined in another block is another log."""
        return (self.block_hash, self.log_index)

    def arg(self, name: str) -> Any:
        for key, value in self.args:
            if key == name:
                return value
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Delivered:
    log: ChainLog


@dataclass(frozen=True, slots=True)
class Retracted:
    log: ChainLog


WatchRecord = Delivered | Retracted


class EventDecoder:
    """Decodes logs with the events of some contract ABIs (topic0 -> event): indexed
    arguments from the topics, the others from the data, addresses checksummed, tuples as
    tuples. It does with ``eth_abi`` what web3's ``process_log`` does (tests hold the two
    equal) at a fraction of the cost: a node decodes every escrow log it watches."""

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]]) -> None:
        self._events: dict[bytes, _EventLayout] = {}
        for abi in abis:
            for entry in abi:
                if entry.get("type") != "event" or entry.get("anonymous"):
                    continue
                inputs = list(entry["inputs"])
                signature = f"{entry['name']}({','.join(abi_type(i) for i in inputs)})"
                self._events[bytes(keccak(text=signature))] = _EventLayout(
                    name=str(entry["name"]),
                    inputs=tuple((str(i["name"]), i, bool(i.get("indexed"))) for i in inputs),
                    data_types=[abi_type(i) for i in inputs if not i.get("indexed")],
                )

    def topic(self, event: str) -> bytes:
        """The first topic (the signature's hash) of the event named ``event``."""
        for topic, layout in self._events.items():
            if layout.name == event:
                return topic
        raise ValueError(f"no event {event!r} in these ABIs")

    def decode(self, raw: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, Any], ...]]:
        topics = [_hexbytes(t) for t in raw.get("topics") or []]
        layout = self._events.get(topics[0]) if topics else None
        if layout is None:
            return "", ()
        data = _abi_decode(layout.data_types, _hexbytes(raw["data"]))
        args: list[tuple[str, Any]] = []
        next_topic, next_data = 1, 0
        for name, entry, indexed in layout.inputs:
            if indexed:
                kind = abi_type(entry)
                topic = topics[next_topic]
                next_topic += 1
                # Dynamic indexed values are stored as their hash: the topic is the value.
                value = topic if _is_dynamic(kind) else _abi_decode([kind], topic)[0]
            else:
                value = data[next_data]
                next_data += 1
            args.append((name, _normalized(entry, value)))
        return layout.name, tuple(args)


@dataclass(frozen=True, slots=True)
class _EventLayout:
    name: str
    inputs: tuple[tuple[str, Mapping[str, Any], bool], ...]  # (name, ABI entry, indexed)
    data_types: list[str]


def _abi_decode(types: Sequence[str], data: bytes) -> tuple[Any, ...]:
    """``eth_abi.decode(types, data)``; word by word when every type is static and the data
    is exactly their words in canonical form (every escrow event: eth_abi's generic decoders
    were a tenth of a node's CPU), else by eth_abi itself (which also raises on bad data)."""
    plan = _static_plan(tuple(types))
    if plan is not None and len(data) == 32 * _words(plan):
        try:
            return _decode_words(plan, data, 0)[0]
        except _NotCanonical:
            pass
    return tuple(abi_decode(list(types), data))


class _NotCanonical(Exception):
    """Padding or a value eth_abi would refuse: left to eth_abi."""


# A static type as decoding steps: ("uint", bits), ("bytes", size), ("address",),
# ("bool",) or ("tuple", steps of its components).
_Step = tuple[Any, ...]


@lru_cache(maxsize=256)
def _static_plan(types: tuple[str, ...]) -> tuple[_Step, ...] | None:
    """The steps decoding ``types``, or None when one is not a static type of these."""
    plan: list[_Step] = []
    for kind in types:
        if kind.startswith("(") and kind.endswith(")"):
            inner = _static_plan(tuple(_components(kind[1:-1])))
            if inner is None:
                return None
            plan.append(("tuple", inner))
        elif kind in ("address", "bool"):
            plan.append((kind,))
        elif kind.startswith("uint") and kind[4:].isdigit():
            plan.append(("uint", int(kind[4:])))
        elif kind.startswith("bytes") and kind[5:].isdigit():
            plan.append(("bytes", int(kind[5:])))
        else:
            return None
    return tuple(plan)


def _components(inner: str) -> list[str]:
    """The component types of a tuple type's inside, split at its own commas."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    return [p for p in parts if p]


def _words(plan: tuple[_Step, ...]) -> int:
    return sum(_words(step[1]) if step[0] == "tuple" else 1 for step in plan)


def _decode_words(plan: tuple[_Step, ...], data: bytes, offset: int) -> tuple[tuple[Any, ...], int]:
    values: list[Any] = []
    for step in plan:
        if step[0] == "tuple":
            value, offset = _decode_words(step[1], data, offset)
            values.append(value)
            continue
        word = data[offset : offset + 32]
        offset += 32
        if step[0] == "uint":
            number = int.from_bytes(word, "big")
            if number >> step[1]:
                raise _NotCanonical
            values.append(number)
        elif step[0] == "bytes":
            if any(word[step[1] :]):
                raise _NotCanonical
            values.append(word[: step[1]])
        elif step[0] == "address":
            if any(word[:12]):
                raise _NotCanonical
            values.append("0x" + word[12:].hex())
        else:  # bool
            if any(word[:31]) or word[31] > 1:
                raise _NotCanonical
            values.append(word[31] == 1)
    return tuple(values), offset


def _is_dynamic(kind: str) -> bool:
    return kind in ("bytes", "string") or kind.endswith("]") or kind.startswith("(")


def _normalized(entry: Mapping[str, Any], value: Any) -> Any:
    """eth_abi's value as the watcher hands it on: checksummed addresses, tuples."""
    kind = str(entry["type"])
    if kind.endswith("]"):
        inner = dict(entry, type=kind[: kind.rindex("[")])
        return tuple(_normalized(inner, v) for v in value)
    if kind == "tuple":
        return tuple(_normalized(c, v) for c, v in zip(entry["components"], value, strict=True))
    if kind == "address":
        return _checksummed(value)
    return value


@lru_cache(maxsize=4096)
def _checksummed(address: str) -> str:
    # A keccak per address per log adds up; the same few parties and tokens recur.
    return str(to_checksum_address(address))


def chain_log(raw: Mapping[str, Any], chain_id: int, decoder: EventDecoder | None) -> ChainLog:
    """A log of an ``eth_getLogs`` answer as JSON-RPC gives it (hex strings), decoded by
    ``decoder`` when given."""
    event, args = decoder.decode(raw) if decoder else ("", ())
    return ChainLog(
        chain_id=chain_id,
        address=_checksummed(raw["address"]),
        block_number=_quantity(raw["blockNumber"]),
        block_hash=_hexbytes(raw["blockHash"]),
        transaction_hash=_hexbytes(raw["transactionHash"]),
        log_index=_quantity(raw["logIndex"]),
        event=event,
        args=args,
        topics=tuple(_hexbytes(t) for t in raw["topics"]),
        data=_hexbytes(raw["data"]),
    )


def _quantity(value: Any) -> int:
    """A JSON-RPC quantity ("0x1a") or an int."""
    return int(value, 16) if isinstance(value, str) else int(value)


def _hexbytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    return bytes(value)


class EventWatcher:
    """Delivers the logs of ``addresses`` with ``confirmations`` confirmations, retracting
    those of blocks that a reorg drops. Not thread-safe: one thread polls it."""

    def __init__(
        self,
        rpc: Rpc,
        addresses: Sequence[str],
        *,
        confirmations: int = 1,
        from_block: int = 0,
        decoder: EventDecoder | None = None,
        max_block_range: int = 2_000,
        history: int = 256,
    ) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1 (1 = included in a block)")
        if history < confirmations:
            raise ValueError("history must cover at least the confirmation depth")
        self.rpc = rpc
        self.addresses = [to_checksum_address(a) for a in addresses]
        self.confirmations = confirmations
        self.decoder = decoder
        self.max_block_range = max_block_range
        self.history = history
        self._from_block = from_block
        self._next = from_block  # first block not scanned yet
        self._retractable_from = from_block  # delivered logs from here on are remembered
        self._hashes: dict[int, bytes] = {}  # block -> hash, for reorg detection
        self._delivered: dict[int, list[ChainLog]] = {}  # block -> logs delivered from it

    @property
    def scanned_to(self) -> int:
        """The last block scanned (its logs delivered), -1 before the first scan."""
        return self._next - 1

    def poll(self, head: int | None = None) -> list[WatchRecord]:
        """Retractions for dropped blocks, then the newly confirmed logs, in chain order.
        ``head``: the newest block number, when the caller has just read it (else read)."""
        records: list[WatchRecord] = list(self._check_reorg())
        if head is None:
            head = self.rpc.block_number()
        target = head - self.confirmations + 1
        while self._next <= target:
            end = min(target, self._next + self.max_block_range - 1)
            scanned = self._scan(self._next, end)
            if scanned is None:
                break  # the chain changed under us: the next poll sorts it out
            records.extend(Delivered(log) for log in scanned)
        self._prune()
        return records

    def _check_reorg(self) -> list[Retracted]:
        if not self._hashes:
            return []
        known = sorted(self._hashes, reverse=True)
        fork = None
        for number in known:  # newest first: one call when nothing changed
            if self.rpc.block_hash(number) == self._hashes[number]:
                fork = number
                break
        if fork == known[0]:
            return []
        # Blocks changed. Another chain behind the same URL is not a reorg: say so instead.
        self.rpc.check_chain_id()
        if fork is None:
            if self._retractable_from != self._from_block:
                raise ReorgTooDeep(
                    f"chain {self.rpc.expected_chain_id} at {self.rpc.url} replaced every block "
                    f"the watcher remembers (blocks {known[-1]}..{known[0]}): restart the node "
                    "with a larger watcher history or resync from a finalized block"
                )
            fork = self._from_block - 1  # nothing pruned yet: rescan everything
        retracted: list[Retracted] = []
        for number in sorted(self._delivered, reverse=True):
            if number <= fork:
                break
            retracted.extend(Retracted(log) for log in reversed(self._delivered.pop(number)))
        for number in [n for n in self._hashes if n > fork]:
            del self._hashes[number]
        self._next = fork + 1
        return retracted

    def _scan(self, start: int, end: int) -> list[ChainLog] | None:
        end_hash = self.rpc.block_hash(end)
        if end_hash is None:
            return None
        # The JSON-RPC answer as it is: web3's formatting of every log cost more than
        # the decoding (``_to_log`` reads hex strings).
        raw_logs = self.rpc.raw(
            "eth_getLogs",
            [{"address": self.addresses, "fromBlock": hex(start), "toBlock": hex(end)}],
        )
        logs = [self._to_log(raw) for raw in raw_logs if not raw.get("removed")]
        logs.sort(key=lambda log: (log.block_number, log.log_index))
        block_hashes: dict[int, bytes] = {}
        for log in logs:
            if log.block_number not in block_hashes:
                # The range's end is read again below: no second look at it here.
                current = (
                    end_hash if log.block_number == end else self.rpc.block_hash(log.block_number)
                )
                if current != log.block_hash:
                    return None
                block_hashes[log.block_number] = log.block_hash
        if self.rpc.block_hash(end) != end_hash:
            return None
        for log in logs:
            self._delivered.setdefault(log.block_number, []).append(log)
        self._hashes.update(block_hashes)
        self._hashes[end] = end_hash
        self._next = end + 1
        return logs

    def _to_log(self, raw: Mapping[str, Any]) -> ChainLog:
        return chain_log(raw, self.rpc.expected_chain_id, self.decoder)

    def _prune(self) -> None:
        floor = self._next - self.history
        newest = max(self._hashes, default=None)
        for number in [n for n in self._hashes if n < floor and n != newest]:
            del self._hashes[number]
        for number in [n for n in self._delivered if n < floor]:
            del self._delivered[number]
        self._retractable_from = max(self._retractable_from, floor)
