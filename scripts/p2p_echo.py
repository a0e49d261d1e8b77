"""Run one libp2p transport node from the command line and drive it over stdin/stdout.

A test and measurement harness for `node.p2p.P2PTransport`: start one process per
committee member, then send it JSON commands, one per line, on stdin; it answers with
JSON events, one per line, on stdout. It echoes pings, counts data frames per sender
(distinct sequence numbers, duplicates, one-way latency from the shared monotonic clock)
and reports the transport's metrics and its own RSS.

    python scripts/p2p_echo.py --index 1 --seed-hex <64 hex> \\
        --listen /ip4/127.0.0.1/tcp/4002 \\
        --peer /ip4/127.0.0.1/tcp/4001/p2p/<id0> --peer /p2p/<id1> --peer ...

Commands: {"cmd": "wait_links", "timeout": s} | {"cmd": "send", "count": n, "size": b,
"to": [indices] or null, "interval": s} | {"cmd": "ping", "count": n, "interval": s,
"timeout": s} | {"cmd": "wait_received", "per_peer": n, "from": [indices], "timeout": s}
| {"cmd": "stats"} | {"cmd": "quit"}.

It must never bind anything but the given listen address, and it exits when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from node.identity import IdentityError, identity_from_seed
from node.p2p import P2PConfig, P2PConfigError, P2PListenError, P2PTransport

# kind (1 byte) | origin index (u16) | sequence (u32) | send time, CLOCK_MONOTONIC ns (u64)
HEADER = struct.Struct(">cHIQ")
DATA, PING, PONG = b"D", b"P", b"Q"


@dataclass
class Tally:
    """What this node received from one sender."""

    seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    latencies_ns: list[int] = field(default_factory=list)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[rank]


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class EchoNode:
    def __init__(self, transport: P2PTransport) -> None:
        self.transport = transport
        self.tallies: dict[int, Tally] = {}
        self.rtts_ns: list[int] = []
        self.pongs_changed = trio.Event()
        self.received_changed = trio.Event()
        self.malformed_payloads = 0

    async def receive_loop(self) -> None:
        t = self.transport
        while True:
            frame = await t.receive()
            now = time.monotonic_ns()
            if len(frame.payload) < HEADER.size:
                self.malformed_payloads += 1
                continue
            kind, origin, seq, sent_ns = HEADER.unpack_from(frame.payload)
            if kind == DATA:
                tally = self.tallies.setdefault(frame.peer_index, Tally())
                if seq in tally.seqs:
                    tally.duplicates += 1
                else:
                    tally.seqs.add(seq)
                    tally.latencies_ns.append(now - sent_ns)
                self.received_changed.set()
            elif kind == PING:
                t.send(frame.peer_index, PONG + frame.payload[1:])
            elif kind == PONG and origin == t.self_index:
                self.rtts_ns.append(now - sent_ns)
                self.pongs_changed.set()
            else:
                self.malformed_payloads += 1

    def payload(self, kind: bytes, seq: int, size: int) -> bytes:
        head = HEADER.pack(kind, self.transport.self_index, seq, time.monotonic_ns())
        return head + b"\x00" * max(0, size - len(head))

    def peers(self, to: list[int] | None) -> list[int]:
        t = self.transport
        if to is not None:
            return list(to)
        return [i for i in range(t.committee_size) if i != t.self_index]

    async def command(self, msg: dict[str, Any]) -> bool:
        cmd = msg.get("cmd")
        t = self.transport
        if cmd == "quit":
            return False
        if cmd == "wait_links":
            want = set(self.peers(msg.get("to")))
            with trio.move_on_after(float(msg.get("timeout", 30))):
                while not want <= t.connected_peers():
                    await trio.sleep(0.02)
            up = sorted(t.connected_peers())
            emit("links", up=up, ok=want <= set(up))
        elif cmd == "send":
            count, size = int(msg["count"]), int(msg.get("size", 64))
            interval = float(msg.get("interval", 0))
            start = int(msg.get("start", 0))
            for seq in range(start, start + count):
                for peer in self.peers(msg.get("to")):
                    t.send(peer, self.payload(DATA, seq, size))
                # Yield even without an interval so the writers drain as we go.
                await trio.sleep(interval)
            emit("sent", count=count)
        elif cmd == "ping":
            count, interval = int(msg["count"]), float(msg.get("interval", 0.01))
            peers = self.peers(msg.get("to"))
            self.rtts_ns = []
            for seq in range(count):
                for peer in peers:
                    t.send(peer, self.payload(PING, seq, int(msg.get("size", 64))))
                await trio.sleep(interval)
            with trio.move_on_after(float(msg.get("timeout", 10))):
                while len(self.rtts_ns) < count * len(peers):
                    self.pongs_changed = trio.Event()
                    await self.pongs_changed.wait()
            rtts = sorted(v / 1e6 for v in self.rtts_ns)
            emit(
                "pings",
                expected=count * len(peers),
                received=len(rtts),
                rtt_ms={"p50": percentile(rtts, 0.5), "p99": percentile(rtts, 0.99)},
            )
        elif cmd == "wait_received":
            per_peer = int(msg["per_peer"])
            senders = self.peers(msg.get("from"))

            def done() -> bool:
                return all(len(self.tallies.get(s, Tally()).seqs) >= per_peer for s in senders)

            with trio.move_on_after(float(msg.get("timeout", 30))):
                while not done():
                    self.received_changed = trio.Event()
                    await self.received_changed.wait()
            emit("received", ok=done(), distinct=self.distinct())
        elif cmd == "stats":
            lat = sorted(v / 1e6 for tally in self.tallies.values() for v in tally.latencies_ns)
            emit(
                "stats",
                distinct=self.distinct(),
                duplicates=sum(tally.duplicates for tally in self.tallies.values()),
                one_way_ms={
                    "n": len(lat),
                    "p50": percentile(lat, 0.5),
                    "p99": percentile(lat, 0.99),
                },
                malformed_payloads=self.malformed_payloads,
                metrics=t.metrics().as_dict(),
                rss_bytes=rss_bytes(),
            )
        else:
            emit("error", message=f"unknown command {cmd!r}")
        return True

    def distinct(self) -> dict[str, int]:
        return {str(k): len(v.seqs) for k, v in sorted(self.tallies.items())}


async def command_loop(node: EchoNode) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    pending = b""
    async with stdin:
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                return  # stdin closed: the parent is gone or wants us to stop
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError as error:
                    emit("error", message=f"bad command line: {error}")
                    continue
                if not await node.command(msg):
                    return


async def main_async(args: argparse.Namespace) -> None:
    identity = identity_from_seed(bytes.fromhex(args.seed_hex))
    config = P2PConfig(
        listen_addr=args.listen,
        max_frame_size=args.max_frame_size,
        backoff_max_s=args.backoff_max,
    )
    transport = P2PTransport(identity, args.index, args.peer, config)
    node = EchoNode(transport)
    async with transport, trio.open_nursery() as nursery:
        nursery.start_soon(node.receive_loop)
        emit(
            "ready",
            index=args.index,
            pid=os.getpid(),
            peer_id=identity.peer_id_text,
            addrs=transport.listen_addrs(),
        )
        await command_loop(node)
        nursery.cancel_scope.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, required=True, help="this node's committee index")
    parser.add_argument("--seed-hex", required=True, help="32-byte Ed25519 seed, hex")
    parser.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument(
        "--peer", action="append", required=True, help="member multiaddr, in committee order"
    )
    parser.add_argument("--max-frame-size", type=int, default=1 << 20)
    parser.add_argument("--backoff-max", type=float, default=2.0)
    args = parser.parse_args()
    try:
        trio.run(main_async, args)
    except (IdentityError, P2PConfigError, P2PListenError, ValueError) as error:
        print(f"p2p_echo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
