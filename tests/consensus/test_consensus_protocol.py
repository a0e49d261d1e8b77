"""The node state machine, driven event by event with messages built from real keys.

A ``Puppet`` plays the rest of the committee: it signs observations, proposals and
shares with the other members' own keys, so the node under test sees exactly what honest
peers would send. Then the tests feed it bad input and check that it changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from consensus import bls
from consensus.codec import CodecError, CodecLimits, decode, encode
from consensus.crypto import REAL_CRYPTO
from consensus.events import (
    Action,
    Broadcast,
    CancelTimer,
    Certified,
    EpochStarted,
    MessageReceived,
    ObservationChanged,
    ObservationReady,
    Persist,
    Rejected,
    RequestObservation,
    Send,
    SetTimer,
    Start,
    Timer,
    TimerFired,
    TimerKind,
    Transmit,
)
from consensus.harness import simulated_committee
from consensus.identity import sign_observation
from consensus.messages import (
    Message,
    NewEpoch,
    ObserveReq,
    Proposal,
    RoundCertificates,
    Shares,
    SignedObservation,
)
from consensus.outcome import FactsOutcome, encode_facts
from consensus.pacemaker import leader, progress_timeout
from consensus.protocol import (
    EARLY_ROUND_MAX_DECISIONS,
    ROUND_GAP_FRACTION,
    LocalProtocolError,
    Node,
    compute_reports,
    retransmit_interval,
    transmission_delay,
)
from consensus.report import (
    Action as Verdict,
)
from consensus.report import (
    Certificate,
    Decision,
    make_certificate,
    report_hash,
    verify_certificate,
)
from consensus.safety import DurableStore, PersistedState
from dvpsim.benchmarks.consensus import CountingCrypto
from tests.consensus.worlds import PARAMETERS, committee

CONFIG, KEYS = committee(4, 1, targets=("asset", "payment"))
LEADER = leader(1, CONFIG.n, CONFIG.leader_selection_key)
FOLLOWER = next(i for i in range(CONFIG.n) if i != LEADER)
OUTCOME = FactsOutcome()
LIMITS = CodecLimits.from_config(CONFIG)
SID = b"\x11" * 32
TERMS = b"\x22" * 32


def facts(action: Verdict = Verdict.COMMIT) -> bytes:
    return encode_facts([Decision(SID, action, TERMS)])


def signed(i: int, e: int, r: int, observation: bytes) -> SignedObservation:
    sig = sign_observation(KEYS[i].identity, CONFIG.instance_digest, e, r, i, observation)
    return SignedObservation(e, r, i, observation, sig)


def certificates(proposal: Proposal, signers: Sequence[int]) -> RoundCertificates:
    certs = []
    for report in compute_reports(CONFIG, OUTCOME, proposal):
        digest = report_hash(report)
        certs.append(
            make_certificate(report, {i: bls.sign(KEYS[i].bls_secret, digest) for i in signers})
        )
    return RoundCertificates(proposal.epoch, proposal.round, tuple(certs))


@dataclass
class Driven:
    """A node under test, the time, and everything it sent."""

    node: Node
    now: float = 0.0
    sent: set[bytes] = field(default_factory=set)
    durable: DurableStore = field(default_factory=DurableStore)

    def feed(self, event: object) -> tuple[Action, ...]:
        actions = self.node.handle(event)  # type: ignore[arg-type]
        for a in actions:
            if isinstance(a, Send | Broadcast):
                self.sent.add(a.data)
            if isinstance(a, Persist):
                self.durable.apply(a.update)
        return actions

    def receive(self, sender: int, message: Message | bytes) -> tuple[Action, ...]:
        self.now += 0.01
        data = message if isinstance(message, bytes) else encode(message)
        return self.feed(MessageReceived(self.now, sender, data))

    def fire(self, timer: Timer) -> tuple[Action, ...]:
        return self.feed(TimerFired(self.now, timer))


def start(index: int, persisted: PersistedState | None = None, now: float = 0.0) -> Driven:
    driven = Driven(Node(CONFIG, index, KEYS[index], OUTCOME), now=now)
    driven.feed(Start(now, persisted or PersistedState()))
    return driven


def play_round(
    driven: Driven, e: int, r: int, views: dict[int, bytes], *, certify: bool = True
) -> tuple[Proposal, tuple[Action, ...]]:
    """Run round r of epoch e against a follower: request, observe, propose, certify."""
    leader_of_e = leader(e, CONFIG.n, CONFIG.leader_selection_key)
    driven.receive(leader_of_e, ObserveReq(e, r))
    me = driven.node.index
    driven.feed(ObservationReady(driven.now, e, r, views[me]))
    observers = sorted(views)
    proposal = Proposal(e, r, tuple(signed(i, e, r, views[i]) for i in observers))
    actions = driven.receive(leader_of_e, proposal)
    if certify:
        signers = [i for i in range(CONFIG.n) if i != me][: CONFIG.targets[0].committee.t]
        driven.receive(leader_of_e, certificates(proposal, signers))
    return proposal, actions


# --------------------------------------------------------------------------- happy paths


def test_start_as_follower_and_as_leader() -> None:
    follower = Node(CONFIG, FOLLOWER, KEYS[FOLLOWER], OUTCOME)
    actions = follower.handle(Start(0.0, PersistedState()))
    assert actions[0] == EpochStarted(1, LEADER)
    assert SetTimer(Timer(TimerKind.PROGRESS), CONFIG.delta_progress) in actions
    assert Broadcast(encode(NewEpoch(1))) in actions
    # In the epoch it asked for, the NEW-EPOCH repeat is a heartbeat, every DeltaProgress.
    assert SetTimer(Timer(TimerKind.RESEND), CONFIG.delta_progress) in actions
    assert not any(isinstance(a, RequestObservation) for a in actions)

    lead = Node(CONFIG, LEADER, KEYS[LEADER], OUTCOME)
    actions = lead.handle(Start(0.0, PersistedState()))
    assert Broadcast(encode(ObserveReq(1, 1))) in actions
    # The leader is its own follower: it asks for its own observation at once.
    assert RequestObservation(1, 1) in actions


def test_follower_round_persists_before_it_sends_shares() -> None:
    driven = start(FOLLOWER)
    views = {i: facts() for i in range(CONFIG.n)}
    leader_of_1 = LEADER
    actions = driven.receive(leader_of_1, ObserveReq(1, 1))
    assert actions == (RequestObservation(1, 1),)
    actions = driven.feed(ObservationReady(driven.now, 1, 1, views[FOLLOWER]))
    assert actions == (Send(leader_of_1, encode(signed(FOLLOWER, 1, 1, views[FOLLOWER]))),)
    proposal = Proposal(1, 1, tuple(signed(i, 1, 1, views[i]) for i in range(CONFIG.n)))
    actions = driven.receive(leader_of_1, proposal)
    kinds = [type(a) for a in actions]
    assert kinds == [Persist, Send]
    persist, send = actions
    assert isinstance(persist, Persist) and isinstance(send, Send)
    assert persist.update.signed is not None
    assert persist.update.signed.decisions == (Decision(SID, Verdict.COMMIT, TERMS),)
    shares = decode(send.data, LIMITS)
    assert isinstance(shares, Shares)
    for target, report in enumerate(compute_reports(CONFIG, OUTCOME, proposal)):
        pk = CONFIG.targets[target].committee.public_keys[FOLLOWER]
        assert bls.verify(pk, report_hash(report), shares.shares[target])

    final = certificates(proposal, [0, 1, 2, 3][: CONFIG.targets[0].committee.t])
    actions = driven.receive(leader_of_1, final)
    assert [a for a in actions if isinstance(a, Certified)] == [
        Certified("asset", final.certificates[0]),
        Certified("payment", final.certificates[1]),
    ]
    transmit_timers = [
        a for a in actions if isinstance(a, SetTimer) and a.timer.kind is TimerKind.TRANSMIT
    ]
    for timer in transmit_timers:
        delay = transmission_delay(CONFIG, timer.timer.target, 1, 1, FOLLOWER)
        assert delay is not None and timer.at == pytest.approx(driven.now + delay)
    driven.now = max(t.at for t in transmit_timers) if transmit_timers else driven.now
    transmitted = [a for t in transmit_timers for a in driven.fire(t.timer)]
    assert all(isinstance(a, Transmit) for a in transmitted)
    for a in transmitted:
        assert isinstance(a, Transmit)
        verify_certificate(a.certificate, CONFIG.targets[CONFIG.target_index(a.target)].committee)


def test_transmission_schedule_staggers_members() -> None:
    for target in range(len(CONFIG.targets)):
        delays = sorted(transmission_delay(CONFIG, target, 5, 3, i) for i in range(CONFIG.n))  # type: ignore[type-var]
        # Schedule (1, 1, n): one member at once, one a stage later, the rest after that.
        assert delays == [0.0, CONFIG.delta_stage, 2 * CONFIG.delta_stage, 2 * CONFIG.delta_stage]


def test_safety_refuses_a_conflicting_decision_after_a_restart() -> None:
    driven = start(FOLLOWER)
    commit_views = {i: facts(Verdict.COMMIT) for i in range(CONFIG.n)}
    play_round(driven, 1, 1, commit_views)
    persisted = driven.durable.state()
    assert Decision(SID, Verdict.COMMIT, TERMS) in persisted.decisions

    # The node crashes; it comes back with what it persisted, in epoch 1.
    restarted = start(FOLLOWER, persisted, now=driven.now + 1)
    abort_views = {i: facts(Verdict.ABORT) for i in range(CONFIG.n)}
    _, actions = play_round(restarted, 1, 2, abort_views, certify=False)
    assert not any(isinstance(a, Persist) for a in actions)
    (send,) = [a for a in actions if isinstance(a, Send)]
    shares = decode(send.data, restarted.node._limits)
    assert isinstance(shares, Shares)
    assert shares.shares == (b"", b"")  # refused for every target

    # And it never signs round 1 again, whatever the proposal.
    again = start(FOLLOWER, persisted, now=driven.now + 2)
    again.receive(LEADER, ObserveReq(1, 1))
    proposal = Proposal(1, 1, tuple(signed(i, 1, 1, commit_views[i]) for i in range(CONFIG.n)))
    actions = again.receive(LEADER, proposal)
    assert len(actions) == 1 and isinstance(actions[0], Rejected)


def test_a_proposal_sent_again_costs_its_new_observations_and_a_forgery_is_refused() -> None:
    """Observations a follower checked once in a round are not checked again; a forged
    one (another observation under a real signature) is still refused, every time."""
    counting = CountingCrypto(REAL_CRYPTO)
    driven = Driven(Node(CONFIG, FOLLOWER, KEYS[FOLLOWER], OUTCOME, crypto=counting))
    driven.feed(Start(0.0, PersistedState()))
    driven.receive(LEADER, ObserveReq(1, 1))
    driven.feed(ObservationReady(driven.now, 1, 1, facts()))
    honest = [signed(i, 1, 1, facts()) for i in range(CONFIG.n)]
    last = honest[-1]
    assert last.observer != FOLLOWER
    forged = SignedObservation(1, 1, last.observer, facts(Verdict.ABORT), last.signature)
    replayed = Proposal(1, 1, (*honest[:-1], forged))
    others = CONFIG.n - 1
    for checks in (others, 1):  # the first time all, then only the forged one again
        counting.calls.clear()
        actions = driven.receive(LEADER, replayed)
        assert len(actions) == 1 and isinstance(actions[0], Rejected)
        assert "does not verify" in actions[0].reason
        assert counting.calls == {"verify_observation": checks}
    counting.calls.clear()
    actions = driven.receive(LEADER, Proposal(1, 1, tuple(honest)))
    assert any(isinstance(a, Send) for a in actions)  # signed: its shares go out
    assert counting.calls["verify_observation"] == 1  # only the one not seen before


def test_follower_signs_at_most_one_proposal_per_round() -> None:
    driven = start(FOLLOWER)
    views = {i: facts(Verdict.COMMIT) for i in range(CONFIG.n)}
    proposal, _ = play_round(driven, 1, 1, views, certify=False)
    other = Proposal(1, 1, proposal.observations[:3])
    actions = driven.receive(LEADER, other)
    assert len(actions) == 1 and isinstance(actions[0], Rejected)
    assert "second, different PROPOSAL" in actions[0].reason
    # The same proposal again: the cached shares are resent, nothing is signed anew.
    before = driven.node.snapshot()
    actions = driven.receive(LEADER, proposal)
    assert len(actions) == 1 and isinstance(actions[0], Send)
    assert driven.node.snapshot() == before


def _drive_leader(view: bytes | None = None) -> tuple[Driven, Proposal]:
    driven = start(LEADER)
    views = {i: view or facts() for i in range(CONFIG.n)}
    driven.feed(ObservationReady(driven.now, 1, 1, views[LEADER]))
    for i in range(CONFIG.n):
        if i != LEADER:
            driven.receive(i, signed(i, 1, 1, views[i]))
    driven.now += CONFIG.delta_grace
    actions = driven.fire(Timer(TimerKind.GRACE, 1, 1))
    (broadcast,) = [a for a in actions if isinstance(a, Broadcast)]
    proposal = decode(broadcast.data, LIMITS)
    assert isinstance(proposal, Proposal)
    return driven, proposal


def _finish(driven: Driven, proposal: Proposal) -> None:
    """Every follower's shares for the leader's ``proposal``: the round certifies."""
    reports = compute_reports(CONFIG, OUTCOME, proposal)
    for i in range(CONFIG.n):
        if i != LEADER:
            shares = tuple(bls.sign(KEYS[i].bls_secret, report_hash(rep)) for rep in reports)
            driven.receive(i, Shares(proposal.epoch, proposal.round, shares))


def test_new_work_starts_the_next_round_once_the_last_one_finished() -> None:
    """ObservationChanged: a finished round is followed at once by the next one (but
    not before ROUND_GAP_FRACTION of DeltaRound after its start), not at DeltaRound."""
    driven, proposal = _drive_leader()
    # While the round is open, news changes nothing: it will be in the next round.
    assert driven.feed(ObservationChanged(driven.now)) == ()
    _finish(driven, proposal)
    assert ROUND_GAP_FRACTION * CONFIG.delta_round <= driven.now < CONFIG.delta_round
    actions = driven.feed(ObservationChanged(driven.now))
    assert CancelTimer(Timer(TimerKind.ROUND, 1, 1)) in actions
    assert Broadcast(encode(ObserveReq(1, 2))) in actions
    # Nothing new: the next round waits for DeltaRound as before.
    assert SetTimer(Timer(TimerKind.ROUND, 1, 2), driven.now + CONFIG.delta_round) in actions


def test_new_work_after_a_busy_round_waits_for_delta_round() -> None:
    """Under load a full DeltaRound gathers a bigger batch: no early round after a round
    that decided EARLY_ROUND_MAX_DECISIONS or more (all targets together)."""
    per_target = EARLY_ROUND_MAX_DECISIONS // len(CONFIG.targets)
    busy = encode_facts(
        [Decision(bytes([i]) * 32, Verdict.COMMIT, TERMS) for i in range(1, per_target + 1)]
    )
    driven, proposal = _drive_leader(busy)
    _finish(driven, proposal)
    assert driven.now >= ROUND_GAP_FRACTION * CONFIG.delta_round
    assert driven.feed(ObservationChanged(driven.now)) == ()


def test_new_work_right_after_a_round_waits_for_the_minimum_gap() -> None:
    slow = simulated_committee(4, 1, seed=1, **{**PARAMETERS, "delta_round": 1.0})[0]
    node = Node(slow, LEADER, KEYS[LEADER], OUTCOME)
    node.handle(Start(0.0, PersistedState()))
    node.handle(ObservationReady(0.0, 1, 1, facts()))
    for i in range(CONFIG.n):
        if i != LEADER:
            sig = sign_observation(KEYS[i].identity, slow.instance_digest, 1, 1, i, facts())
            so = SignedObservation(1, 1, i, facts(), sig)
            node.handle(MessageReceived(0.01, i, encode(so)))
    actions = node.handle(TimerFired(0.01 + slow.delta_grace, Timer(TimerKind.GRACE, 1, 1)))
    (broadcast,) = [a for a in actions if isinstance(a, Broadcast)]
    proposal = decode(broadcast.data, CodecLimits.from_config(slow))
    assert isinstance(proposal, Proposal)
    reports = compute_reports(slow, OUTCOME, proposal)
    for i in range(CONFIG.n):
        if i != LEADER:
            shares = tuple(bls.sign(KEYS[i].bls_secret, report_hash(rep)) for rep in reports)
            node.handle(MessageReceived(0.1, i, encode(Shares(1, 1, shares))))
    gap = ROUND_GAP_FRACTION * slow.delta_round
    assert gap > 0.1
    # Finished before the gap: the round timer moves in to the gap, no round yet.
    assert node.handle(ObservationChanged(0.1)) == (SetTimer(Timer(TimerKind.ROUND, 1, 1), gap),)
    actions = node.handle(TimerFired(gap, Timer(TimerKind.ROUND, 1, 1)))
    assert Broadcast(encode(ObserveReq(1, 2))) in actions


def test_new_work_is_no_reason_for_a_follower_to_do_anything() -> None:
    driven = start(FOLLOWER)
    before = driven.node.snapshot()
    assert driven.feed(ObservationChanged(0.1)) == ()
    assert driven.node.snapshot() == before


def test_leader_drops_an_invalid_share_and_certifies_with_the_others() -> None:
    driven, proposal = _drive_leader()
    reports = compute_reports(CONFIG, OUTCOME, proposal)
    followers = [i for i in range(CONFIG.n) if i != LEADER]
    bad, good = followers[0], followers[1:]
    wrong = bls.sign(KEYS[bad].bls_secret, b"\x00" * 32)
    actions = driven.receive(bad, Shares(1, 1, (wrong, b"\x01" * 96)))
    assert not any(isinstance(a, Broadcast) for a in actions)
    final: RoundCertificates | None = None
    for i in good:
        shares = tuple(bls.sign(KEYS[i].bls_secret, report_hash(rep)) for rep in reports)
        for a in driven.receive(i, Shares(1, 1, shares)):
            if isinstance(a, Broadcast):
                message = decode(a.data, LIMITS)
                assert isinstance(message, RoundCertificates)
                final = message
    assert final is not None
    for target, cert in enumerate(final.certificates):
        verify_certificate(cert, CONFIG.targets[target].committee)
        assert not cert.signers >> bad & 1


def test_pacemaker_joins_on_f_plus_one_and_moves_on_2f_plus_one() -> None:
    driven = start(FOLLOWER)
    others = [i for i in range(CONFIG.n) if i != FOLLOWER]
    actions = driven.receive(others[0], NewEpoch(2))  # f = 1: one request is not enough
    assert not any(isinstance(a, Broadcast) for a in actions)
    actions = driven.receive(others[1], NewEpoch(2))  # f+1: join
    assert Broadcast(encode(NewEpoch(2))) in actions
    # The node's own request counts: 3 = 2f+1 asked for 2, so it moves.
    assert EpochStarted(2, leader(2, CONFIG.n, CONFIG.leader_selection_key)) in actions
    assert driven.node.epoch == 2


def test_progress_timeout_and_r_max_ask_for_a_new_epoch() -> None:
    driven = start(FOLLOWER)
    driven.now = CONFIG.delta_progress
    actions = driven.fire(Timer(TimerKind.PROGRESS))
    assert Broadcast(encode(NewEpoch(2))) in actions
    other = start(FOLLOWER)
    actions = other.receive(LEADER, ObserveReq(1, CONFIG.r_max + 1))
    assert Broadcast(encode(NewEpoch(2))) in actions


def test_a_pending_new_epoch_request_repeats_every_delta_resend_then_slows_down() -> None:
    """Regression (n = 31 thrash): every member repeated NEW-EPOCH every DeltaResend even
    when nobody asked for a change, n(n-1) messages each time. Only a pending request is
    repeated that often; in the epoch it asked for, a member repeats every DeltaProgress."""
    driven = start(FOLLOWER)
    driven.now = CONFIG.delta_progress
    actions = driven.fire(Timer(TimerKind.PROGRESS))
    assert Broadcast(encode(NewEpoch(2))) in actions
    resend = SetTimer(Timer(TimerKind.RESEND), driven.now + CONFIG.delta_resend)
    assert resend in actions
    driven.now += CONFIG.delta_resend
    actions = driven.fire(Timer(TimerKind.RESEND))
    assert Broadcast(encode(NewEpoch(2))) in actions
    assert SetTimer(Timer(TimerKind.RESEND), driven.now + CONFIG.delta_resend) in actions
    others = [i for i in range(CONFIG.n) if i != FOLLOWER]
    driven.receive(others[0], NewEpoch(2))
    driven.receive(others[1], NewEpoch(2))  # 2f+1 with its own: it moves to epoch 2
    assert driven.node.epoch == 2
    driven.now += CONFIG.delta_resend
    actions = driven.fire(Timer(TimerKind.RESEND))
    assert Broadcast(encode(NewEpoch(2))) in actions
    assert SetTimer(Timer(TimerKind.RESEND), driven.now + CONFIG.delta_progress) in actions


def test_epochs_without_a_certificate_wait_longer_for_progress() -> None:
    """Regression (n = 31 thrash): on an overloaded machine a round took longer than
    DeltaProgress, so every epoch timed out before its first certificate. After an epoch
    without one, the next waits twice DeltaProgress (at most); a certificate resets it."""
    assert [progress_timeout(6.0, k) for k in (0, 1, 2, 9)] == [6.0, 12.0, 12.0, 12.0]
    driven = start(FOLLOWER)
    others = [i for i in range(CONFIG.n) if i != FOLLOWER]
    progress = Timer(TimerKind.PROGRESS)
    timeouts = []
    for epoch in (2, 3, 4):
        driven.receive(others[0], NewEpoch(epoch))
        actions = driven.receive(others[1], NewEpoch(epoch))  # f+1 asked: join, then move
        assert driven.node.epoch == epoch
        (timer,) = [a for a in actions if isinstance(a, SetTimer) and a.timer == progress]
        timeouts.append(round(timer.at - driven.now, 9))
    # Epoch 1 had no certificate either, but it was not entered after a failed one.
    dp = CONFIG.delta_progress
    assert timeouts == [dp, 2 * dp, 2 * dp]
    views = {i: facts() for i in range(CONFIG.n)}
    play_round(driven, 4, 1, views)  # certified: progress
    driven.receive(others[0], NewEpoch(5))
    actions = driven.receive(others[1], NewEpoch(5))
    assert SetTimer(progress, driven.now + dp) in actions


def test_a_leader_resends_an_unanswered_request_less_and_less_often() -> None:
    """Regression (n = 31 thrash): the leader resent its request to every member that had
    not answered every DeltaResend, so overloaded members got more and more copies. The
    interval doubles per resend, up to DeltaProgress."""
    driven = start(LEADER)
    request = encode(ObserveReq(1, 1))
    timer = Timer(TimerKind.RETRANSMIT, 1, 1)
    driven.now = CONFIG.delta_resend  # the first resend: DeltaResend after the request
    for interval in (0.8, 1.5, 1.5):  # 0.4 * 2, then 0.4 * 4 capped at DeltaProgress 1.5
        actions = driven.fire(timer)
        assert sum(a == Send(j, request) for a in actions for j in range(CONFIG.n)) == 3
        assert SetTimer(timer, driven.now + interval) in actions
        driven.now += interval
    assert retransmit_interval(0, 0.4, 1.5) == 0.4


def test_runtime_errors_are_raised_not_reported() -> None:
    node = Node(CONFIG, FOLLOWER, KEYS[FOLLOWER], OUTCOME)
    with pytest.raises(LocalProtocolError, match="Start"):
        node.handle(TimerFired(0.0, Timer(TimerKind.PROGRESS)))
    node.handle(Start(1.0, PersistedState()))
    with pytest.raises(LocalProtocolError, match="backwards"):
        node.handle(TimerFired(0.5, Timer(TimerKind.PROGRESS)))
    with pytest.raises(LocalProtocolError, match="invalid sender"):
        node.handle(MessageReceived(2.0, FOLLOWER, encode(NewEpoch(2))))
    with pytest.raises(LocalProtocolError, match="Start given twice"):
        node.handle(Start(3.0, PersistedState()))
    with pytest.raises(LocalProtocolError, match="does not match"):
        Node(CONFIG, FOLLOWER, KEYS[LEADER], OUTCOME)
    driven = start(FOLLOWER)
    driven.receive(LEADER, ObserveReq(1, 1))
    with pytest.raises(LocalProtocolError, match="max_observation_bytes"):
        driven.feed(ObservationReady(driven.now, 1, 1, b"x" * (CONFIG.max_observation_bytes + 1)))


# --------------------------------------------------------------------------- bad input


def _mid_round_follower() -> tuple[Driven, list[tuple[int, bytes]]]:
    """A follower that completed rounds 1 and 2 and is in the middle of round 3, and
    every message it received on the way."""
    driven = start(FOLLOWER)
    received: list[tuple[int, bytes]] = []
    views = {i: facts() for i in range(CONFIG.n)}
    original = driven.receive

    def recording(sender: int, message: Message | bytes) -> tuple[Action, ...]:
        data = message if isinstance(message, bytes) else encode(message)
        received.append((sender, data))
        return original(sender, data)

    driven.receive = recording  # type: ignore[method-assign]
    driven.receive(LEADER, NewEpoch(1))
    play_round(driven, 1, 1, views)
    play_round(driven, 1, 2, views)
    driven.receive(LEADER, ObserveReq(1, 3))
    driven.feed(ObservationReady(driven.now, 1, 3, views[FOLLOWER]))
    driven.receive = original  # type: ignore[method-assign]
    return driven, received


MID_ROUND, RECEIVED = _mid_round_follower()


def _corrupt_certificate(cert: Certificate, how: int) -> Certificate:
    if how == 0:  # drop a signer from the bitmap
        return Certificate(cert.report, cert.signers & (cert.signers - 1), cert.signature)
    if how == 1:  # claim another signer
        return Certificate(cert.report, cert.signers ^ 0b1111, cert.signature)
    if how == 2:  # another report under the same signature
        report = cert.report
        return Certificate(
            type(report)(report.config_digest, report.epoch, report.round, ()),
            cert.signers,
            cert.signature,
        )
    return Certificate(cert.report, cert.signers, bls.sign(KEYS[0].bls_secret, b"forged"))


@st.composite
def bad_inputs(draw: st.DrawFn) -> tuple[int, bytes]:
    """A sender and bytes that an honest follower must refuse without changing."""
    sender = draw(st.sampled_from([i for i in range(CONFIG.n) if i != FOLLOWER]))
    views = {i: facts() for i in range(CONFIG.n)}
    kind = draw(st.integers(0, 9))
    if kind == 0:  # junk
        return sender, draw(st.binary(max_size=300))
    if kind == 1:  # oversized
        return sender, b"\x80" * (CONFIG.message_limit + draw(st.integers(1, 100)))
    if kind == 2:  # a replay of anything received before
        return draw(st.sampled_from(RECEIVED))
    if kind == 3:  # a received message with one bit flipped
        replay_sender, data = draw(st.sampled_from(RECEIVED))
        position = draw(st.integers(0, len(data) - 1))
        flipped = bytearray(data)
        flipped[position] ^= 1 << draw(st.integers(0, 7))
        # A flip can turn one well-formed message into another (round 3 into round 35,
        # which from the leader legitimately means "new epoch"): only malformed ones here.
        try:
            decode(bytes(flipped), LIMITS)
        except CodecError:
            return replay_sender, bytes(flipped)
        assume(False)
    if kind == 4:  # round 3's proposal with one observation signed by the wrong key
        observations = [signed(i, 1, 3, views[i]) for i in range(CONFIG.n)]
        victim = draw(st.integers(0, CONFIG.n - 1))
        forger = (victim + 1) % CONFIG.n
        bad_sig = sign_observation(
            KEYS[forger].identity, CONFIG.instance_digest, 1, 3, victim, b"lie"
        )
        observations[victim] = SignedObservation(1, 3, victim, b"lie", bad_sig)
        return LEADER, encode(Proposal(1, 3, tuple(observations)))
    if kind == 5:  # round 3's proposal, but from a member that does not lead
        proposal = Proposal(1, 3, tuple(signed(i, 1, 3, views[i]) for i in range(CONFIG.n)))
        return draw(
            st.sampled_from([i for i in range(CONFIG.n) if i not in (LEADER, FOLLOWER)])
        ), encode(proposal)
    if kind == 6:  # a proposal with fewer observations than the quorum
        return LEADER, encode(Proposal(1, 3, (signed(0, 1, 3, views[0]),)))
    if kind == 7:  # certificates for round 3 that do not verify
        proposal = Proposal(1, 3, tuple(signed(i, 1, 3, views[i]) for i in range(CONFIG.n)))
        final = certificates(proposal, [0, 1, 2, 3][: CONFIG.targets[0].committee.t])
        how = draw(st.integers(0, 3))
        target = draw(st.integers(0, 1))
        certs = list(final.certificates)
        certs[target] = _corrupt_certificate(certs[target], how)
        return sender, encode(RoundCertificates(1, 3, tuple(certs)))
    if kind == 8:  # messages for the wrong epoch, or signed for another epoch
        e = draw(st.sampled_from([2, 3, 100]))
        return LEADER, encode(
            draw(
                st.sampled_from(
                    [
                        ObserveReq(e, 4),
                        Proposal(e, 4, tuple(signed(i, e, 4, views[i]) for i in range(CONFIG.n))),
                    ]
                )
            )
        )
    # kind 9: messages only a leader accepts, sent to a follower
    return sender, encode(
        draw(st.sampled_from([signed(sender, 1, 3, views[sender]), Shares(1, 3, (b"", b""))]))
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(bad_inputs())
def test_bad_input_is_rejected_without_a_state_change(bad: tuple[int, bytes]) -> None:
    sender, data = bad
    node = MID_ROUND.node
    before = node.snapshot()
    actions = node.handle(MessageReceived(MID_ROUND.now, sender, data))
    assert node.snapshot() == before
    for action in actions:
        # Allowed: a refusal, or resending bytes the node already sent (the answer to a
        # duplicate request), nothing else.
        assert isinstance(action, Rejected) or (
            isinstance(action, Send) and action.data in MID_ROUND.sent
        ), action


def test_stale_timers_and_observations_change_nothing() -> None:
    node = MID_ROUND.node
    before = node.snapshot()
    for event in (
        TimerFired(MID_ROUND.now, Timer(TimerKind.GRACE, 1, 3)),  # never set on a follower
        TimerFired(MID_ROUND.now, Timer(TimerKind.TRANSMIT, 9, 9, 0)),
        ObservationReady(MID_ROUND.now, 1, 3, b"again"),  # already answered
        ObservationReady(MID_ROUND.now, 1, 2, b"old"),
    ):
        actions = node.handle(event)
        assert all(isinstance(a, Rejected) and a.sender is None for a in actions)
        assert node.snapshot() == before


def _leader_collecting_shares() -> tuple[Driven, Proposal]:
    """The leader of epoch 1 after proposing round 1, holding its own share only."""
    driven, proposal = _drive_leader()
    return driven, proposal


LEADING, LEADING_PROPOSAL = _leader_collecting_shares()


@st.composite
def bad_inputs_for_the_leader(draw: st.DrawFn) -> tuple[int, bytes]:
    sender = draw(st.sampled_from([i for i in range(CONFIG.n) if i != LEADER]))
    reports = compute_reports(CONFIG, OUTCOME, LEADING_PROPOSAL)
    valid = tuple(bls.sign(KEYS[sender].bls_secret, report_hash(r)) for r in reports)
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return sender, draw(st.binary(max_size=300))
    if kind == 1:  # valid shares, but for another round or epoch
        e, r = draw(st.sampled_from([(1, 2), (1, 0 + 7), (2, 1), (9, 1)]))
        return sender, encode(Shares(e, r, valid))
    if kind == 2:  # an observation after the proposal, or signed by someone else
        observation = signed(sender, 1, 1, facts())
        if draw(st.booleans()):
            forged = sign_observation(
                KEYS[LEADER].identity, CONFIG.instance_digest, 1, 1, sender, b"x"
            )
            observation = SignedObservation(1, 1, sender, b"x", forged)
        return sender, encode(observation)
    if kind == 3:  # one member's observation sent by another
        other = draw(st.sampled_from([i for i in range(CONFIG.n) if i not in (sender,)]))
        return sender, encode(signed(other, 1, 1, facts()))
    if kind == 4:  # a proposal or a request from a member that does not lead
        return sender, encode(draw(st.sampled_from([ObserveReq(1, 2), LEADING_PROPOSAL])))
    if kind == 5:  # the wrong number of shares cannot even be decoded
        return sender, encode(Shares(1, 1, valid[:1]))
    # kind 6: certificates that do not verify
    cert = make_certificate(reports[0], {sender: valid[0]})  # one signer: too few
    return sender, encode(RoundCertificates(1, 1, (cert, cert)))


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(bad_inputs_for_the_leader())
def test_bad_input_to_a_leader_is_rejected_without_a_state_change(bad: tuple[int, bytes]) -> None:
    sender, data = bad
    node = LEADING.node
    before = node.snapshot()
    actions = node.handle(MessageReceived(LEADING.now, sender, data))
    assert node.snapshot() == before
    assert all(isinstance(a, Rejected) for a in actions), actions


def test_a_wrongly_signed_share_costs_only_its_sender_its_place() -> None:
    """Shares are checked in aggregate, so a bad one is kept until the aggregate fails;
    then it is dropped and its sender (only it can send its own share) is excluded from
    the round. Every other member's share still counts."""
    driven, proposal = _drive_leader()
    reports = compute_reports(CONFIG, OUTCOME, proposal)
    followers = [i for i in range(CONFIG.n) if i != LEADER]
    liar = followers[0]
    wrong = tuple(bls.sign(KEYS[liar].bls_secret, b"\x01" * 32) for _ in reports)
    driven.receive(liar, Shares(1, 1, wrong))
    honest = followers[1]
    good = tuple(bls.sign(KEYS[honest].bls_secret, report_hash(r)) for r in reports)
    actions = driven.receive(honest, Shares(1, 1, good))  # t = 3 shares: aggregate fails
    assert not any(isinstance(a, Broadcast) for a in actions)
    # The liar cannot try again in this round.
    retry = tuple(bls.sign(KEYS[liar].bls_secret, report_hash(r)) for r in reports)
    actions = driven.receive(liar, Shares(1, 1, retry))
    assert len(actions) == 1 and isinstance(actions[0], Rejected)
    last = followers[2]
    good = tuple(bls.sign(KEYS[last].bls_secret, report_hash(r)) for r in reports)
    actions = driven.receive(last, Shares(1, 1, good))
    (broadcast,) = [a for a in actions if isinstance(a, Broadcast)]
    final = decode(broadcast.data, LIMITS)
    assert isinstance(final, RoundCertificates)
    for target, cert in enumerate(final.certificates):
        verify_certificate(cert, CONFIG.targets[target].committee)
        assert cert.signers == (1 << LEADER) | (1 << honest) | (1 << last)
