"""The leader's proposal carries a quorum of observations (``proposal_observers``), not
all it received: every follower checks each observation a proposal carries, so a quorum
instead of n cuts the largest part of a round's crypto. These tests hold the cut to the
rules it must keep: the quorum is the one the keyed order picks, every member's
observation is carried in some rounds, and a fact or value only Byzantine members report
is never certified from a quorum, nor is a proposal with a fabricated observation signed.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import bls
from consensus.checkers import check_agreement, check_fact_validity
from consensus.codec import CodecLimits, decode, encode
from consensus.crypto import REAL_CRYPTO
from consensus.events import (
    Broadcast,
    MessageReceived,
    ObservationReady,
    Persist,
    Rejected,
    Send,
    Start,
    Timer,
    TimerFired,
    TimerKind,
)
from consensus.harness import Schedule
from consensus.identity import sign_observation
from consensus.messages import ObserveReq, Proposal, Shares, SignedObservation
from consensus.outcome import FactsOutcome, encode_facts
from consensus.pacemaker import leader
from consensus.protocol import Node, compute_reports, proposal_observers
from consensus.report import Action, Decision, report_hash
from consensus.safety import PersistedState
from dvpsim.benchmarks.consensus import CountingCrypto
from tests.consensus.worlds import Adversary, Fact, FactWorld, committee, simulate

CONFIG, KEYS = committee(4, 1)
LEADER = leader(1, CONFIG.n, CONFIG.leader_selection_key)
FOLLOWER = next(i for i in range(CONFIG.n) if i != LEADER)
BYZANTINE = next(i for i in range(CONFIG.n) if i not in (LEADER, FOLLOWER))
OUTCOME = FactsOutcome()
LIMITS = CodecLimits.from_config(CONFIG)
SEEN = Decision(b"\x11" * 32, Action.COMMIT, b"\x22" * 32)
INVENTED = Decision(b"\x33" * 32, Action.ABORT, b"\x44" * 32)
WIDE, _ = committee(7, 2)


def signed(i: int, e: int, r: int, observation: bytes) -> SignedObservation:
    sig = sign_observation(KEYS[i].identity, CONFIG.instance_digest, e, r, i, observation)
    return SignedObservation(e, r, i, observation, sig)


def test_the_leader_proposes_the_quorum_the_keyed_order_picks() -> None:
    counting = CountingCrypto(REAL_CRYPTO)
    node = Node(CONFIG, LEADER, KEYS[LEADER], OUTCOME, crypto=counting)
    node.handle(Start(0.0, PersistedState()))
    view = encode_facts([SEEN])
    node.handle(ObservationReady(0.0, 1, 1, view))
    for i in range(CONFIG.n):
        if i != LEADER:
            node.handle(MessageReceived(0.01, i, encode(signed(i, 1, 1, view))))
    actions = node.handle(TimerFired(0.01 + CONFIG.delta_grace, Timer(TimerKind.GRACE, 1, 1)))
    (broadcast,) = [a for a in actions if isinstance(a, Broadcast)]
    proposal = decode(broadcast.data, LIMITS)
    assert isinstance(proposal, Proposal)
    carried = [so.observer for so in proposal.observations]
    assert len(carried) == CONFIG.quorum < CONFIG.n
    assert carried == proposal_observers(CONFIG, 1, 1, range(CONFIG.n))
    # Checked on arrival until the quorum was in; the late one only if it was picked.
    late = max(i for i in range(CONFIG.n) if i != LEADER)
    assert counting.calls["verify_observation"] == CONFIG.quorum - 1 + (late in carried)


def test_a_late_observation_that_does_not_verify_is_dropped_when_picked() -> None:
    """After the quorum, observations are kept unchecked; the proposal checks those it
    picks, drops a bad one (its sender is rejected) and carries the next in the order."""
    order = proposal_observers(CONFIG, 1, 1, range(CONFIG.n))
    bad = next(i for i in order if i != LEADER)
    node = Node(CONFIG, LEADER, KEYS[LEADER], OUTCOME)
    node.handle(Start(0.0, PersistedState()))
    view = encode_facts([SEEN])
    node.handle(ObservationReady(0.0, 1, 1, view))
    good = [i for i in range(CONFIG.n) if i not in (LEADER, bad)]
    for i in good:
        node.handle(MessageReceived(0.01, i, encode(signed(i, 1, 1, view))))
    forged = SignedObservation(
        1, 1, bad, encode_facts([INVENTED]), signed(bad, 1, 1, view).signature
    )
    assert node.handle(MessageReceived(0.02, bad, encode(forged))) == ()  # kept, unchecked
    actions = node.handle(TimerFired(0.01 + CONFIG.delta_grace, Timer(TimerKind.GRACE, 1, 1)))
    assert Rejected(bad, "OBSERVATION signature does not verify") in actions
    (broadcast,) = [a for a in actions if isinstance(a, Broadcast)]
    proposal = decode(broadcast.data, LIMITS)
    assert isinstance(proposal, Proposal)
    assert [so.observer for so in proposal.observations] == sorted([LEADER, *good])
    assert forged not in proposal.observations


@settings(max_examples=50, deadline=None, database=None)
@given(
    st.integers(1, 2**32 - 1),
    st.integers(1, 10_000),
    st.sets(st.integers(0, WIDE.n - 1)),
)
def test_the_chosen_observers_are_a_quorum_of_those_that_arrived(
    epoch: int, round_: int, arrived: set[int]
) -> None:
    chosen = proposal_observers(WIDE, epoch, round_, arrived)
    assert chosen == sorted(set(chosen))
    assert set(chosen) <= arrived
    assert len(chosen) == min(WIDE.quorum, len(arrived))
    assert chosen == proposal_observers(WIDE, epoch, round_, sorted(arrived, reverse=True))


def test_every_member_is_carried_in_some_rounds_and_left_out_of_others() -> None:
    everyone = range(WIDE.n)
    carried = [set(proposal_observers(WIDE, 1, r, everyone)) for r in range(1, 41)]
    for member in everyone:
        times = sum(member in c for c in carried)
        assert 0 < times < len(carried), member


def _follower_at_round_1() -> Node:
    node = Node(CONFIG, FOLLOWER, KEYS[FOLLOWER], OUTCOME)
    node.handle(Start(0.0, PersistedState()))
    node.handle(MessageReceived(0.01, LEADER, encode(ObserveReq(1, 1))))
    node.handle(ObservationReady(0.02, 1, 1, encode_facts([SEEN])))
    return node


def test_a_fact_only_a_byzantine_member_reports_is_not_certified_from_a_quorum() -> None:
    """Quorum 2f+1 = 3 of 4, one of them Byzantine and inventing a fact, correctly signed
    with its own key: the follower signs the fact the honest two saw and not the invented
    one (f+1 = 2 reports needed, the quorum holds f+1 honest members)."""
    node = _follower_at_round_1()
    observations = {
        LEADER: signed(LEADER, 1, 1, encode_facts([SEEN])),
        FOLLOWER: signed(FOLLOWER, 1, 1, encode_facts([SEEN])),
        BYZANTINE: signed(BYZANTINE, 1, 1, encode_facts([SEEN, INVENTED])),
    }
    proposal = Proposal(1, 1, tuple(observations[j] for j in sorted(observations)))
    assert len(proposal.observations) == CONFIG.quorum
    actions = node.handle(MessageReceived(0.03, LEADER, encode(proposal)))
    (persist,) = [a for a in actions if isinstance(a, Persist)]
    assert persist.update.signed is not None
    assert persist.update.signed.decisions == (SEEN,)
    (send,) = [a for a in actions if isinstance(a, Send)]
    shares = decode(send.data, LIMITS)
    assert isinstance(shares, Shares)
    (report,) = compute_reports(CONFIG, OUTCOME, proposal)
    assert report.decisions == (SEEN,)
    pk = CONFIG.targets[0].committee.public_keys[FOLLOWER]
    assert bls.verify(pk, report_hash(report), shares.shares[0])


def test_a_quorum_with_one_fabricated_observation_is_not_signed() -> None:
    """A Byzantine leader's quorum in which one honest member's observation is replaced
    (the invented fact under that member's real signature of another observation): the
    follower refuses it and its state does not change."""
    node = _follower_at_round_1()
    honest = signed(BYZANTINE, 1, 1, encode_facts([SEEN]))
    fabricated = SignedObservation(1, 1, BYZANTINE, encode_facts([INVENTED]), honest.signature)
    observations = sorted(
        [signed(LEADER, 1, 1, encode_facts([INVENTED])), fabricated, signed(FOLLOWER, 1, 1, b"")],
        key=lambda so: so.observer,
    )
    before = node.snapshot()
    actions = node.handle(
        MessageReceived(0.03, LEADER, encode(Proposal(1, 1, tuple(observations))))
    )
    assert len(actions) == 1 and isinstance(actions[0], Rejected)
    assert "does not verify" in actions[0].reason
    assert node.snapshot() == before


def test_liars_among_seven_never_get_an_invented_fact_certified() -> None:
    """n = 7, f = 2, proposals of 5: two lying observers (COMMIT and ABORT flipped, one
    fact invented) and a run long enough for every member to lead."""
    config, keys = committee(7, 2)
    world = FactWorld((Fact(0, (1,) * 7, (0.0,) * 7), Fact(1, (2,) * 7, (0.5,) * 7)))
    adversary = Adversary(((1, ("liar",)), (4, ("liar",))))
    _, result = simulate(config, keys, world, Schedule(seed=3, duration=4.0), adversary)
    assert result.certified
    assert check_agreement(config, result.sightings).ok
    verdict = check_fact_validity(config, result.sightings, [o[4] for o in result.observations])
    assert verdict.ok, verdict.detail
