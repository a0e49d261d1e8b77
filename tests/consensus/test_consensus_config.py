"""ConsensusConfig: OCR's parameter checks, thresholds, and clear one-line errors."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.config import ConfigError, ConsensusConfig, Target
from consensus.harness import simulated_committee
from consensus.report import CommitteeConfig, default_threshold


def _base(n: int = 4, f: int = 1) -> ConsensusConfig:
    return simulated_committee(n, f, seed=5, targets=("asset", "payment"))[0]


def _with(config: ConsensusConfig, **changes: Any) -> ConsensusConfig:
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    fields.update(changes)
    return ConsensusConfig(**fields)


def _committee(config: ConsensusConfig, **changes: Any) -> CommitteeConfig:
    return dataclasses.replace(config.targets[0].committee, **changes)


def test_defaults() -> None:
    config = _base()
    assert config.n == 4
    assert config.quorum == 3  # 2f+1
    assert config.schedule == (1, 1, 4)
    assert config.targets[0].committee.t == default_threshold(4, 1) == 3
    assert config.message_limit >= config.n * config.max_observation_bytes
    assert len(config.instance_digest) == 32
    assert config.target_index("payment") == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"delta_round": 10.0}, "delta_round (10.0) must be less than delta_progress"),
        ({"delta_grace": 11.0}, "delta_grace (11.0) must be less than delta_progress"),
        ({"delta_progress": 0.0}, "delta_progress must be positive"),
        ({"delta_resend": 0.0}, "delta_resend must be positive"),
        ({"delta_stage": -1.0}, "delta_stage (-1.0) must be non-negative"),
        ({"delta_grace": float("nan")}, "delta_grace (nan) must be a finite number"),
        ({"r_max": 0}, "r_max (0) must be greater than 0 and less than 255"),
        ({"r_max": 255}, "r_max (255)"),
        ({"observation_quorum": 2}, "observation_quorum (2) must be between 2f+1=3 and n-f=3"),
        ({"observation_quorum": 4}, "observation_quorum (4)"),
        ({"transmission_schedule": ()}, "transmission_schedule must be a tuple"),
        ({"transmission_schedule": (1,)}, "at least f+1=2 are needed"),
        ({"transmission_schedule": (5,)}, "transmission_schedule[0] (5) must be in [0, n=4]"),
        ({"max_message_bytes": 100}, "max_message_bytes (100) must be at least"),
        ({"leader_selection_key": b"short"}, "leader_selection_key must be at least 16 bytes"),
        ({"f": 2}, "f=2 must be less than n/3"),
        ({"f": -1}, "must be a non-negative integer"),
    ],
)
def test_invalid_parameters_are_rejected_with_a_clear_message(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        _with(_base(), **changes)
    assert "\n" not in str(raised.value)


def test_identity_and_target_checks() -> None:
    config = _base()
    with pytest.raises(ConfigError, match="repeat a key"):
        _with(config, identity_keys=(config.identity_keys[0],) * 4)
    with pytest.raises(ConfigError, match=r"identity_keys\[1\] must be a 32-byte"):
        _with(config, identity_keys=(config.identity_keys[0], b"x") + config.identity_keys[2:])
    with pytest.raises(ConfigError, match="used twice"):
        _with(config, targets=(config.targets[0], config.targets[0]))
    with pytest.raises(ConfigError, match="targets must be a tuple of 1"):
        _with(config, targets=())
    bigger = simulated_committee(7, 2, seed=5)[0].targets[0]
    with pytest.raises(ConfigError, match="committee has 7 keys but the consensus has 4 nodes"):
        _with(config, targets=(bigger,))
    other_f = Target("asset", _committee(config, f=0, t=3))
    with pytest.raises(ConfigError, match="committee f=0 differs from f=1"):
        _with(config, targets=(other_f,))


def test_thresholds() -> None:
    config = _base()
    unsafe = Target("asset", _committee(config, t=2))
    with pytest.raises(ConfigError, match="below floor\\(\\(n\\+f\\)/2\\)\\+1=3"):
        _with(config, targets=(unsafe,))
    assert _with(config, targets=(unsafe,), allow_unsafe_threshold=True).targets[0].committee.t == 2
    too_high = Target("asset", _committee(config, t=4))
    with pytest.raises(ConfigError, match="exceeds n-f=3"):
        _with(config, targets=(too_high,))


@given(n=st.integers(1, 40), f=st.integers(0, 13))
def test_default_threshold_makes_two_quorums_share_an_honest_member(n: int, f: int) -> None:
    if not 3 * f < n:
        return
    t = default_threshold(n, f)
    # Two sets of t members among n overlap in at least 2t - n members: more than f.
    assert 2 * t - n >= f + 1
    # And the honest members alone reach t.
    assert t <= n - f
    # f+1, price-feed OCR's threshold, does not have the first property once f >= 1.
    if f >= 1:
        assert 2 * (f + 1) - n < f + 1


def test_instance_digest_binds_the_configuration() -> None:
    config = _base()
    assert _with(config).instance_digest == config.instance_digest
    assert _with(config, delta_grace=0.25).instance_digest != config.instance_digest
    assert _with(config, r_max=3).instance_digest != config.instance_digest
