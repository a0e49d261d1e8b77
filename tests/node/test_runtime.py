"""The real runtime on its own: the node driver against fake I/O, on trio's MockClock.

The transport and the targets' pumps are fakes that follow the real ones' contracts
(frames in order per peer, transmissions answered with a result); the safety store is the
real SQLite file. Time is trio's MockClock, jumping to the next timer, so a run of many
virtual seconds takes milliseconds and nothing depends on the machine's speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from consensus.codec import peek_kind
from consensus.events import Broadcast, Persist, Send
from consensus.harness import simulated_committee
from consensus.messages import Kind
from node.driver import (
    DriverConfig,
    DriverTimer,
    DriverTimerKind,
    Effect,
    NodeDriver,
    NodeEvent,
    ReadLeg,
    ReportedFacts,
    TargetSpec,
    Transmit,
)
from node.dvp import Fact, FactKind
from node.runtime import NodeRuntime, TimerQueue
from node.store import SafetyFile
from node.transport import InboundFrame, Transport, TransportClosed, TransportMetrics


class MemoryTransport(Transport):
    """Frames between runtimes of one test, through memory channels (ordered per peer)."""

    def __init__(self, index: int, n: int, network: dict[int, MemoryTransport]) -> None:
        self.index, self.n = index, n
        self.network = network
        network[index] = self
        self.sent: list[tuple[int, bytes]] = []
        self.on_send: list[Any] = []  # checks run at each send (the test's probes)
        self._in, self._out = trio.open_memory_channel[InboundFrame](1000)

    @property
    def self_index(self) -> int:
        return self.index

    @property
    def committee_size(self) -> int:
        return self.n

    @property
    def max_frame_size(self) -> int:
        return 1 << 20

    def send(self, peer_index: int, payload: bytes) -> None:
        self._check_peer(peer_index)
        for probe in self.on_send:
            probe(payload)
        self.sent.append((peer_index, payload))
        peer = self.network.get(peer_index)
        if peer is not None:
            peer._in.send_nowait(InboundFrame(self.index, payload))

    async def receive(self) -> InboundFrame:
        try:
            return await self._out.receive()
        except trio.EndOfChannel:
            raise TransportClosed() from None

    def connected_peers(self) -> frozenset[int]:
        return frozenset(i for i in self.network if i != self.index)

    def metrics(self) -> TransportMetrics:
        return TransportMetrics(self.index, (), 0, 0, 0)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


class FactsPump:
    """A ``file``-kind target: states fixed facts once, answers every transmission "ok"."""

    def __init__(self, name: str, facts: frozenset[Fact]) -> None:
        self.name = name
        self.facts = facts
        self.transmitted: list[Transmit] = []

    async def run(self, emit: Any) -> None:
        await emit(ReportedFacts(0.0, self.name, self.facts))

    async def read(self, effect: ReadLeg) -> tuple[NodeEvent, ...]:
        return ()

    async def transmit(self, effect: Transmit) -> tuple[str, tuple[NodeEvent, ...]]:
        self.transmitted.append(effect)
        await trio.sleep(0.01)  # the target takes a moment
        return "ok", ()

    def close(self) -> None:
        pass


class Recorder:
    """The runtime's trace hook: every effect, with the trio time it was carried out."""

    def __init__(self) -> None:
        self.effects: list[tuple[float, Effect]] = []

    def effect(self, effect: Effect) -> None:
        self.effects.append((trio.current_time(), effect))

    def received(self, sender: int, data: bytes, sender_twin: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


SID = (7).to_bytes(32, "big")
TERMS = b"\x0a" * 32


def committee(n: int, f: int) -> tuple[Any, Any]:
    return simulated_committee(
        n,
        f,
        targets=("chain-A",),
        delta_progress=2.0,
        delta_resend=0.5,
        delta_round=0.2,
        delta_grace=0.01,
        delta_stage=0.5,
    )


def make_runtime(
    index: int, n: int, f: int, tmp: Path, network: dict[int, MemoryTransport]
) -> tuple[NodeRuntime, MemoryTransport, FactsPump, Recorder]:
    config, keys = committee(n, f)
    spec = TargetSpec("chain-A", "A", "file")
    driver = NodeDriver(DriverConfig(config, index, "single-chain-onchain", (spec,)), keys[index])
    transport = MemoryTransport(index, n, network)
    pump = FactsPump("chain-A", frozenset({Fact(SID, "A", FactKind.PREPARED, TERMS)}))
    recorder = Recorder()
    store = SafetyFile(tmp / f"node{index}" / "safety.sqlite")
    runtime = NodeRuntime(driver, transport, store, {"chain-A": pump}, recorder)  # type: ignore[arg-type]
    return runtime, transport, pump, recorder


def run_for(seconds: float, *runtimes: NodeRuntime) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for runtime in runtimes:
                await nursery.start(runtime.run)
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_single_member_certifies_and_transmits_on_virtual_time(tmp_path: Path) -> None:
    runtime, _, pump, recorder = make_runtime(0, 1, 0, tmp_path, {})
    run_for(5.0, runtime)
    assert runtime.stats.certificates >= 5
    commits = [t for t in pump.transmitted if t.certificate.report.decisions]
    assert commits and commits[0].certificate.report.decisions[0].settlement_id == SID
    # The decision it signed is durable in the real safety file.
    assert runtime.store.decision_count == 1
    runtime.close()
    runtime.store.close()


def test_the_runtime_carries_out_one_nodes_effects_in_the_same_order_every_time(
    tmp_path: Path,
) -> None:
    def trace(folder: Path) -> list[str]:
        runtime, _, _, recorder = make_runtime(0, 1, 0, folder, {})
        run_for(3.0, runtime)
        runtime.close()
        runtime.store.close()
        # Up to just before the end: at the end itself the test's own sleep and a timer
        # due at the same instant race (that is the test stopping, not the runtime).
        return [f"{t:.6f} {effect!r}" for t, effect in recorder.effects if t < 2.95]

    first, second = trace(tmp_path / "a"), trace(tmp_path / "b")
    assert len(first) > 50
    assert first == second


def test_shares_never_leave_before_the_decisions_they_sign_are_on_disk(tmp_path: Path) -> None:
    network: dict[int, MemoryTransport] = {}
    parts = [make_runtime(i, 4, 1, tmp_path, network) for i in range(4)]
    checked = []
    for runtime, transport, _, _ in parts:

        def probe(payload: bytes, runtime: NodeRuntime = runtime) -> None:
            if peek_kind(payload) in (Kind.SHARES, Kind.CERTIFICATES):
                signed = runtime.driver.node.safety_decision_count
                assert runtime.store.decision_count >= signed, "shares left before Persist"
                checked.append(payload)

        transport.on_send.append(probe)
    run_for(4.0, *[p[0] for p in parts])
    assert checked, "no shares were sent"
    for runtime, _, _pump, recorder in parts:
        assert runtime.stats.certificates >= 3
        persists = [t for t, e in recorder.effects if isinstance(e, Persist)]
        sends = [t for t, e in recorder.effects if isinstance(e, Send | Broadcast)]
        assert persists and sends
        runtime.close()
        runtime.store.close()
    assert any(p[2].transmitted for p in parts)


def test_timers_due_together_fire_in_the_order_they_were_set() -> None:
    queue = TimerQueue()
    a = DriverTimer(DriverTimerKind.POLL, "a")
    b = DriverTimer(DriverTimerKind.POLL, "b")
    c = DriverTimer(DriverTimerKind.RETRY, "c", 1, 1)
    queue.set(b, 1.0)
    queue.set(a, 1.0)
    queue.set(c, 0.5)
    queue.set(b, 1.0)  # set again: its place is now after a
    queue.cancel(c)
    assert queue.next_deadline() == 1.0
    assert queue.pop_due(0.99) == []
    assert queue.pop_due(1.0) == [a, b]
    assert queue.next_deadline() is None
