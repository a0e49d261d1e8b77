"""Byzantine members that speak DvP: the consensus behaviours, given DvP lies.

A Byzantine member runs the honest ``NodeDriver``; its consensus node is wrapped by the
behaviours of ``consensus.byzantine`` (the honest logic exists once). This module names
them for scenario files and node configs, and gives the two that must understand what is
observed the DvP facts of ``node.dvp``:

=================  ====================================================================
behaviour          what the member does
=================  ====================================================================
silent             takes part in nothing
lie                observes falsely, by ``lie`` (below), what its own trackers saw
withhold-shares    never sends BLS shares
invalid-shares     sends shares that do not verify
sign-anything      signs every proposal it receives, ignoring its safety record
equivocate         as leader, tells two sides of the honest followers two stories: the
                   commit side (the fewest that certify with it) gets its proposals;
                   the abort side never a COMMIT: a variant that claims every asset
                   leg expired and hides payments, or nothing; it signs both and
                   certifies each it can (``consensus.byzantine.EquivocatingLeader``)
replay             re-sends old messages to random members
flood              sends junk, oversized and useless well-formed messages
mutate             ByzzFuzz-style small-scope mutations of what it sends: epoch or round
                   moved by one, an earlier proposal or observation sent again, one
                   decision of a certificate flipped
=================  ====================================================================

Scenarios also know ``twins`` (``TWINS``): the member runs as two copies, each the whole
node (its driver, with the behaviours above if the table lists any, honest otherwise)
with the member's keys and a safety store of its own, as a misconfigured high-availability
pair would. It is not a wrapper: the worlds deploy the second copy (``scenarios.sim`` a
second driver, ``scenarios.real`` a second node process), so it is not in ``BEHAVIOURS``.

Lies (``lie = ...``), applied to the facts the member's own trackers produced:

- ``claim-payment``: the payment leg held and paid (PREPARED, COMMITTED) where it was not;
- ``claim-lock``: the asset leg locked (PREPARED) where it was not;
- ``claim-expiry``: the asset leg expired (EXPIRED) where it did not;
- ``hide-payment`` / ``hide-lock``: leaves out what the payment / asset leg did.

A fact counts only when f+1 members observed it, so f liars change nothing; members that
list each other in one coalition follow one plan (the same lie, every variant signed).
The terms hashes a lie needs come from what the member saw (the asset chain's creation
event gives every settlement's terms): a liar knows no more than an honest member.

This module must never give a member another member's secret: a behaviour signs with the
wrapped node's own keys only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from chain_adapters.model import terms_hash
from consensus.byzantine import (
    Behaviour,
    ByzantineContext,
    ByzantineNode,
    EquivocatingLeader,
    Flood,
    InvalidShares,
    LyingObserver,
    Mutate,
    Replay,
    SignAnything,
    Silent,
    WithholdShares,
)
from consensus.messages import Proposal, SignedObservation
from consensus.outcome import OutcomeFunction
from consensus.protocol import Node, NodeKeys
from node.dvp import Fact, FactKind, ObservationError, decode_observation, encode_observation
from node.legs import SettlementBook
from node.modes import MODES

__all__ = ["BEHAVIOURS", "LIES", "TWINS", "ByzantineSpec", "dvp_lie", "wrapper"]

BEHAVIOURS: Final = (
    "silent",
    "lie",
    "withhold-shares",
    "invalid-shares",
    "sign-anything",
    "equivocate",
    "replay",
    "flood",
    "mutate",
)
#: Two copies of one member (module docstring): a deployment, not a wrapper.
TWINS: Final = "twins"
LIES: Final = ("claim-payment", "claim-lock", "claim-expiry", "hide-payment", "hide-lock")


@dataclass(frozen=True)
class ByzantineSpec:
    """What one Byzantine member does: its behaviours, the lie it tells (for "lie"), the
    coalition it colludes with (itself included) and the seed of its own choices."""

    behaviours: tuple[str, ...]
    coalition: frozenset[int]
    lie: str = "claim-payment"
    seed: int = 0


def _facts(observation: bytes) -> set[Fact]:
    try:
        return set(decode_observation(observation))
    except ObservationError:
        return set()


def _leg_hashes(
    mode: str, facts: set[Fact], book: SettlementBook
) -> dict[tuple[bytes, str], bytes]:
    """(settlement, leg) -> terms hash, from the facts and, for the asset leg, from the
    terms the asset chain announced (the observation's open settlements only)."""
    hashes = {(f.settlement_id, f.target): f.terms_hash for f in facts}
    asset = MODES[mode].asset_leg
    # Only the settlements the member's own observation serves: a lie is as bounded as
    # the honest observation it rewrites (the oldest open settlements, ``node.driver``).
    for sid in {f.settlement_id for f in facts}:
        terms = book.terms.get(sid)
        if terms is not None and sid not in book.settled:
            hashes.setdefault((sid, asset), terms_hash(terms))
    return hashes


def _told(mode: str, kind: str, facts: set[Fact], book: SettlementBook) -> set[Fact]:
    """``facts`` with lie ``kind`` told about every open settlement."""
    legs = MODES[mode]
    hashes = _leg_hashes(mode, facts, book)
    told = set(facts)
    for (sid, leg), digest in sorted(hashes.items()):
        if kind == "claim-payment" and leg == legs.payment_leg:
            told |= {
                Fact(sid, leg, FactKind.PREPARED, digest),
                Fact(sid, leg, FactKind.COMMITTED, digest),
            }
        elif kind == "claim-lock" and leg == legs.asset_leg:
            told.add(Fact(sid, leg, FactKind.PREPARED, digest))
        elif kind == "claim-expiry" and leg == legs.asset_leg:
            told.add(Fact(sid, leg, FactKind.EXPIRED, digest))
    hidden = {"hide-payment": legs.payment_leg, "hide-lock": legs.asset_leg}.get(kind)
    if hidden is not None:
        done = (FactKind.PREPARED, FactKind.COMMITTED)
        told = {f for f in told if not (f.target == hidden and f.kind in done)}
    return told


def dvp_lie(mode: str, kind: str, book: SettlementBook) -> Callable[[random.Random, bytes], bytes]:
    """A ``LyingObserver`` lie: the observation with lie ``kind`` told (module docstring)."""
    if kind not in LIES:
        raise ValueError(f"unknown lie {kind!r}: use one of {', '.join(LIES)}")

    def lie(rng: random.Random, observation: bytes) -> bytes:
        return encode_observation(_told(mode, kind, _facts(observation), book))

    return lie


def _abort_story(mode: str, book: SettlementBook) -> Callable[[ByzantineContext, Proposal], bytes]:
    """The equivocating leader's own observation in its abort story: what the other
    members observed, with every asset leg expired, no payment made and nothing
    committed."""
    legs = MODES[mode]

    def own(ctx: ByzantineContext, proposal: Proposal) -> bytes:
        facts: set[Fact] = set()
        for so in proposal.observations:
            if so.observer != ctx.index:
                facts |= _facts(so.observation)
        told = _told(mode, "claim-expiry", facts, book)
        return encode_observation(
            f
            for f in told
            if f.kind is not FactKind.COMMITTED
            and not (f.target == legs.payment_leg and f.kind is FactKind.PREPARED)
        )

    return own


def _abort_support(so: SignedObservation) -> int:
    """How much an observation helps the abort story: its expiries, less what it saw
    committed."""
    facts = _facts(so.observation)
    return sum(f.kind is FactKind.EXPIRED for f in facts) - sum(
        f.kind is FactKind.COMMITTED for f in facts
    )


def _behaviour(name: str, spec: ByzantineSpec, mode: str, book: SettlementBook) -> Behaviour:
    if name == "lie":
        return LyingObserver(lie=dvp_lie(mode, spec.lie, book))
    if name == "equivocate":
        return EquivocatingLeader(own_observation=_abort_story(mode, book), support=_abort_support)
    simple: dict[str, Callable[[], Behaviour]] = {
        "silent": Silent,
        "withhold-shares": WithholdShares,
        "invalid-shares": InvalidShares,
        "sign-anything": SignAnything,
        "replay": Replay,
        "flood": Flood,
        "mutate": Mutate,
    }
    if name not in simple:
        raise ValueError(f"unknown behaviour {name!r}: use one of {', '.join(BEHAVIOURS)}")
    return simple[name]()


def wrapper(
    spec: ByzantineSpec, mode: str, keys: NodeKeys, outcome: OutcomeFunction, book: SettlementBook
) -> Callable[[Node], ByzantineNode]:
    """Wraps a driver's honest consensus node with ``spec``'s behaviours; ``keys`` are the
    member's own, ``book`` what its own trackers saw."""
    behaviours = [_behaviour(name, spec, mode, book) for name in spec.behaviours]

    def wrap(node: Node) -> ByzantineNode:
        rng = random.Random(f"{spec.seed}/{node.index}")
        ctx = ByzantineContext(
            node.config, node.index, keys, outcome, spec.coalition, rng, crypto=node.crypto
        )
        return ByzantineNode(node, ctx, behaviours)

    return wrap
