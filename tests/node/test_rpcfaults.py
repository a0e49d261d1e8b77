"""A lying chain endpoint, as both worlds apply it to a member's readings."""

from __future__ import annotations

from chain_adapters.model import Leg, LegLocked, SettlementCreated, State
from node.legs import EscrowRecord
from node.rpcfaults import RpcWindow, active, lie_about
from tests.node.test_legs import COORDINATOR, created, locked, terms


def test_fake_locks_report_a_lock_for_every_creation_and_hide_locks_hides_them() -> None:
    t = terms(1)
    made = EscrowRecord(created(t))
    told = lie_about([made], "fake-locks")
    assert told[0] == made
    fake = told[1].event
    assert isinstance(fake, LegLocked)
    assert (fake.emitter, fake.settlement_id, fake.leg, fake.state) == (
        COORDINATOR,
        t.settlement_id,
        Leg.ASSET,
        State.PREPARED,
    )
    assert (fake.party, fake.amount) == (t.seller, t.asset_amount)
    real_lock = EscrowRecord(locked(t))
    assert lie_about([made, real_lock], "hide-locks") == (made,)
    assert isinstance(lie_about([made], "hide-locks")[0].event, SettlementCreated)


def test_the_window_in_force() -> None:
    windows = (RpcWindow(1.0, 2.0), RpcWindow(2.0, float("inf"), "hide-locks"))
    assert active(windows, 0.5) is None
    assert active(windows, 1.5) == windows[0]
    assert active(windows, 10**9) == windows[1]
