"""The consensus configuration every committee member shares, and its checks.

A committee of ``n`` oracle nodes, at most ``f`` of them Byzantine, runs OCR-style rounds
that end in one BLS threshold certificate per *target* (a verifier contract on one chain,
or the bank). The parameters keep OCR's names and meanings:

- ``delta_progress``: a node asks for a new epoch (leader) when no round of the current
  epoch has produced a certificate for this long.
- ``delta_resend``: interval at which a node re-broadcasts a pending NEW-EPOCH request
  (once in the epoch it asked for, every ``delta_progress``), and after which a leader
  first resends the request of an unfinished round (lost messages; then twice as long
  each time, up to ``delta_progress``).
- ``delta_round``: minimum time between the starts of two rounds of one leader.
- ``delta_grace``: after the observation quorum is in, the leader waits this long for
  slower observations before it proposes.
- ``delta_stage``: delay between two stages of the staggered transmission schedule.
- ``r_max``: rounds per epoch; a follower asks for a new leader when asked for more.
- ``transmission_schedule`` (OCR's ``S``): how many nodes transmit in each stage.
- ``observation_quorum``: observations the leader needs before it proposes (2f+1 default).

Times are float seconds of whatever clock the runtime drives the node with (virtual in
the simulation, wall-clock in real mode). Each target's committee (``CommitteeConfig``)
carries its own threshold ``t``; the default floor((n+f)/2)+1 makes two quorums share an
honest member. Lower thresholds (down to f+1, what price-feed OCR uses) let conflicting
decisions be certified and are refused unless ``allow_unsafe_threshold`` is set, which
exists so reviewers can watch that setting break.

This module must never accept a configuration that breaks a check below, and does no I/O.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Final

import msgpack

from consensus.identity import identity_key_valid
from consensus.report import CommitteeConfig, config_digest, default_threshold

__all__ = [
    "ED25519_PUBLIC_KEY_LENGTH",
    "MAX_NODES",
    "ConfigError",
    "ConsensusConfig",
    "Target",
    "default_schedule",
]


def default_schedule(n: int) -> tuple[int, ...]:
    """The transmission schedule when none is given: one member, another one, then all."""
    return (1, 1, n)


#: The signer bitmap travels as a msgpack uint64 between nodes.
MAX_NODES: Final = 64
ED25519_PUBLIC_KEY_LENGTH: Final = 32
_MAX_TARGETS: Final = 16
_MAX_TARGET_NAME: Final = 32
# Bytes a message needs beyond its payloads (map keys, headers, integers); generous.
_ENVELOPE_BYTES: Final = 256
_PER_OBSERVATION_OVERHEAD: Final = 128
_PER_DECISION_BYTES: Final = 80
_CERTIFICATE_OVERHEAD: Final = 256


class ConfigError(ValueError):
    """A consensus configuration breaks a rule; the message names the field and the fix."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a round's reports go: a name the outcome function uses, and the committee
    configuration that target verifies certificates against."""

    name: str
    committee: CommitteeConfig


def _finite_non_negative(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} ({value!r}) must be a finite number of seconds")
    if value < 0:
        raise ConfigError(f"{name} ({value}) must be non-negative; set it to 0 or more")


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """Shared parameters of one committee. Construct it with keywords; ``None`` fields get
    their defaults (observation quorum 2f+1, schedule (1, 1, n), message limit from the
    payload limits). Raises ConfigError on any invalid combination."""

    f: int
    identity_keys: tuple[bytes, ...]  # Ed25519 public keys, node index order
    targets: tuple[Target, ...]
    leader_selection_key: bytes  # >= 16 B, keys the leader permutation
    delta_progress: float = 10.0
    delta_resend: float = 2.0
    delta_round: float = 1.0
    delta_grace: float = 0.5
    delta_stage: float = 5.0
    r_max: int = 20
    observation_quorum: int | None = None
    transmission_schedule: tuple[int, ...] | None = None
    max_observation_bytes: int = 4096
    max_decisions_per_report: int = 256
    max_message_bytes: int | None = None
    allow_unsafe_threshold: bool = False
    #: sha256 of the canonical encoding of everything above: binds signed observations
    #: to this committee and configuration.
    instance_digest: bytes = field(init=False, default=b"")
    target_digests: tuple[bytes, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self._check_committee()
        self._check_timing()
        self._check_quorums()
        self._check_limits()
        object.__setattr__(
            self, "target_digests", tuple(config_digest(t.committee) for t in self.targets)
        )
        object.__setattr__(self, "instance_digest", self._digest())

    # ------------------------------------------------------------------ derived values

    @property
    def n(self) -> int:
        return len(self.identity_keys)

    @property
    def quorum(self) -> int:
        """The observation quorum after defaults."""
        assert self.observation_quorum is not None  # set in __post_init__
        return self.observation_quorum

    @property
    def schedule(self) -> tuple[int, ...]:
        """The transmission schedule after defaults."""
        assert self.transmission_schedule is not None  # set in __post_init__
        return self.transmission_schedule

    @property
    def message_limit(self) -> int:
        """The largest encoded message a node accepts, after defaults."""
        assert self.max_message_bytes is not None  # set in __post_init__
        return self.max_message_bytes

    def target_index(self, name: str) -> int:
        for i, target in enumerate(self.targets):
            if target.name == name:
                return i
        raise KeyError(name)

    # ------------------------------------------------------------------ checks

    def _check_committee(self) -> None:
        if not isinstance(self.f, int) or isinstance(self.f, bool) or self.f < 0:
            raise ConfigError(f"f ({self.f!r}) must be a non-negative integer")
        if not isinstance(self.identity_keys, tuple):
            raise ConfigError("identity_keys must be a tuple of 32-byte Ed25519 public keys")
        n = len(self.identity_keys)
        if not 1 <= n <= MAX_NODES:
            raise ConfigError(f"committee size n={n} must be between 1 and {MAX_NODES}")
        if not 3 * self.f < n:
            raise ConfigError(
                f"f={self.f} must be less than n/3 (n={n}); use at least {3 * self.f + 1} nodes"
            )
        for i, key in enumerate(self.identity_keys):
            if not isinstance(key, bytes) or len(key) != ED25519_PUBLIC_KEY_LENGTH:
                raise ConfigError(f"identity_keys[{i}] must be a 32-byte Ed25519 public key")
            if not identity_key_valid(key):
                # Observations are verified by ZIP-215's rules (consensus.identity), under
                # which a small-order key's signatures are forgeable by anyone.
                raise ConfigError(
                    f"identity_keys[{i}] is not a valid Ed25519 public key (not a canonical "
                    "point of the prime-order subgroup); use the key a node's keystore made"
                )
        if len(set(self.identity_keys)) != n:
            raise ConfigError("identity_keys repeat a key; every node needs its own identity")
        if not isinstance(self.leader_selection_key, bytes) or len(self.leader_selection_key) < 16:
            raise ConfigError("leader_selection_key must be at least 16 bytes")
        if not isinstance(self.targets, tuple) or not 1 <= len(self.targets) <= _MAX_TARGETS:
            raise ConfigError(f"targets must be a tuple of 1 to {_MAX_TARGETS} Target")
        names: set[str] = set()
        for target in self.targets:
            if not isinstance(target, Target):
                raise ConfigError("targets must contain Target values")
            name = target.name
            if (
                not isinstance(name, str)
                or not 1 <= len(name) <= _MAX_TARGET_NAME
                or not name.isascii()
            ):
                raise ConfigError(
                    f"target name {name!r} must be 1 to {_MAX_TARGET_NAME} ASCII characters"
                )
            if name in names:
                raise ConfigError(f"target name {name!r} is used twice; names must be unique")
            names.add(name)
            self._check_target_committee(target)

    def _check_target_committee(self, target: Target) -> None:
        committee = target.committee
        n = len(self.identity_keys)
        where = f"target {target.name!r}"
        if committee.n != n:
            raise ConfigError(
                f"{where}: committee has {committee.n} keys but the consensus has {n} nodes"
            )
        if committee.f != self.f:
            raise ConfigError(f"{where}: committee f={committee.f} differs from f={self.f}")
        t = committee.t
        if t > n - self.f:
            raise ConfigError(
                f"{where}: threshold t={t} exceeds n-f={n - self.f}; "
                "the honest nodes alone could never certify (lower t)"
            )
        safe = default_threshold(n, self.f)
        if t < safe and not self.allow_unsafe_threshold:
            raise ConfigError(
                f"{where}: threshold t={t} is below floor((n+f)/2)+1={safe}, which lets "
                "conflicting decisions both be certified; raise t or set allow_unsafe_threshold"
            )

    def _check_timing(self) -> None:
        for name in ("delta_progress", "delta_resend", "delta_round", "delta_grace", "delta_stage"):
            _finite_non_negative(name, getattr(self, name))
        # Zero would make a node resend or re-elect in a loop at one instant.
        if self.delta_progress <= 0:
            raise ConfigError("delta_progress must be positive")
        if self.delta_resend <= 0:
            raise ConfigError("delta_resend must be positive")
        if not self.delta_round < self.delta_progress:
            raise ConfigError(
                f"delta_round ({self.delta_round}) must be less than delta_progress "
                f"({self.delta_progress}); otherwise every epoch times out before its round"
            )
        if not self.delta_grace < self.delta_progress:
            raise ConfigError(
                f"delta_grace ({self.delta_grace}) must be less than delta_progress "
                f"({self.delta_progress}); otherwise no proposal precedes the epoch timeout"
            )
        # *Less* than 255, as in OCR: the leader asks for round r_max + 1 to end an epoch.
        if not isinstance(self.r_max, int) or not 0 < self.r_max < 255:
            raise ConfigError(f"r_max ({self.r_max!r}) must be greater than 0 and less than 255")

    def _check_quorums(self) -> None:
        n, f = len(self.identity_keys), self.f
        if self.observation_quorum is None:
            object.__setattr__(self, "observation_quorum", 2 * f + 1)
        q = self.observation_quorum
        if not isinstance(q, int) or not 2 * f + 1 <= q <= n - f:
            raise ConfigError(
                f"observation_quorum ({q!r}) must be between 2f+1={2 * f + 1} and n-f={n - f}"
            )
        if self.transmission_schedule is None:
            object.__setattr__(self, "transmission_schedule", default_schedule(n))
        schedule = self.transmission_schedule
        if not isinstance(schedule, tuple) or not 1 <= len(schedule) < 1000:
            raise ConfigError("transmission_schedule must be a tuple of 1 to 999 stage sizes")
        for i, size in enumerate(schedule):
            if not isinstance(size, int) or not 0 <= size <= n:
                raise ConfigError(f"transmission_schedule[{i}] ({size!r}) must be in [0, n={n}]")
        if sum(schedule) < min(f + 1, n):
            raise ConfigError(
                f"transmission_schedule {schedule} names {sum(schedule)} transmitters; "
                f"at least f+1={f + 1} are needed so an honest node transmits"
            )

    def _check_limits(self) -> None:
        if not isinstance(self.max_observation_bytes, int) or self.max_observation_bytes < 1:
            raise ConfigError("max_observation_bytes must be a positive integer")
        if not isinstance(self.max_decisions_per_report, int) or self.max_decisions_per_report < 1:
            raise ConfigError("max_decisions_per_report must be a positive integer")
        n = len(self.identity_keys)
        proposal = _ENVELOPE_BYTES + n * (self.max_observation_bytes + _PER_OBSERVATION_OVERHEAD)
        final = _ENVELOPE_BYTES + len(self.targets) * (
            _CERTIFICATE_OVERHEAD + self.max_decisions_per_report * _PER_DECISION_BYTES
        )
        needed = max(proposal, final)
        if self.max_message_bytes is None:
            object.__setattr__(self, "max_message_bytes", needed)
        elif not isinstance(self.max_message_bytes, int) or self.max_message_bytes < needed:
            raise ConfigError(
                f"max_message_bytes ({self.max_message_bytes!r}) must be at least {needed} "
                "to carry a full proposal and certificate; raise it or lower the payload limits"
            )

    def _digest(self) -> bytes:
        fields = [
            b"dvpsim/consensus-config/v1",
            self.f,
            list(self.identity_keys),
            [[t.name, d] for t, d in zip(self.targets, self.target_digests, strict=True)],
            self.leader_selection_key,
            [
                repr(self.delta_progress),
                repr(self.delta_resend),
                repr(self.delta_round),
                repr(self.delta_grace),
                repr(self.delta_stage),
            ],
            self.r_max,
            self.observation_quorum,
            list(self.schedule),
            self.max_observation_bytes,
            self.max_decisions_per_report,
            self.max_message_bytes,
        ]
        packed: bytes = msgpack.packb(fields, use_bin_type=True)
        return hashlib.sha256(packed).digest()
