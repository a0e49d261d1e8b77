"""The real-mode network fault layer against an in-memory transport: frames pass until a
plan appears, then the plan's windows decide what is lost, doubled or held back."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from consensus.network import LinkFault, Partition
from node.netfaults import PLAN_CHECK_S, FaultyTransport, Plan, PlanFile, plan_json, read_plan
from node.rpcfaults import RpcWindow
from tests.node.test_runtime import MemoryTransport


def test_a_plan_reads_back_as_the_same_windows() -> None:
    partitions = (Partition(1.5, 4.0, (0, 2), one_way=True),)
    links = (LinkFault(2.0, 3.0, frozenset({1}), frozenset(), delay=0.1, jitter=0.01),)
    rpc = (RpcWindow(1.0, 2.0), RpcWindow(3.0, float("inf"), "fake-locks"))
    assert read_plan(plan_json(partitions, links, rpc)) == Plan(partitions, links, rpc)


def test_frames_pass_until_a_plan_appears_then_its_windows_apply(tmp_path: Path) -> None:
    network: dict[int, MemoryTransport] = {}
    inner = MemoryTransport(0, 4, network)
    for peer in (1, 2, 3):
        MemoryTransport(peer, 4, network)
    plan = tmp_path / "faults.json"
    faulty = FaultyTransport(inner, PlanFile(plan))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(faulty.run)
            faulty.send(1, b"before")  # no plan yet: straight through
            now = time.time()
            plan.write_text(
                plan_json(
                    (Partition(now - 1, now + 60, (0,)),),
                    (LinkFault(now - 1, now + 60, frozenset({0}), frozenset({3}), delay=0.2),),
                )
            )
            await trio.sleep(PLAN_CHECK_S + 0.05)  # the layer looks again
            faulty.broadcast(b"during")
            await trio.sleep(0.05)
            assert inner.sent == [(1, b"before")]  # 0 is alone on its side: all lost
            assert faulty.lost["partition"] == 3
            plan.write_text(
                plan_json(
                    (), (LinkFault(now - 1, now + 60, frozenset({0}), frozenset({3}), delay=0.2),)
                )
            )
            await trio.sleep(PLAN_CHECK_S + 0.05)
            faulty.send(3, b"late")
            faulty.send(2, b"now")
            await trio.sleep(0.05)
            assert inner.sent[-1] == (2, b"now")  # the delayed frame is still held
            await trio.sleep(0.3)
            assert inner.sent[-1] == (3, b"late") and faulty.delayed == 1
            nursery.cancel_scope.cancel()

    trio.run(main)
