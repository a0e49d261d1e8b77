"""The node's latency histograms: fixed buckets, inclusive upper bounds, and an exposition
from which Prometheus' reference parser and a PromQL-style quantile read them back."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from node.latency import ROUND_BUCKETS, SETTLEMENT_BUCKETS, TRANSMIT_BUCKETS, LatencyHistogram
from node.metrics import histogram_family
from tests.prometheus_text import histogram_quantile


def test_buckets_cover_the_measured_ranges() -> None:
    assert ROUND_BUCKETS[0] <= 0.001 and ROUND_BUCKETS[-1] >= 10  # ms .. s
    assert SETTLEMENT_BUCKETS[0] <= 0.1 and SETTLEMENT_BUCKETS[-1] >= 300  # 0.1 .. 300 s
    assert TRANSMIT_BUCKETS[0] <= 0.01 and TRANSMIT_BUCKETS[-1] >= 300
    with pytest.raises(ValueError):
        LatencyHistogram((1.0, 0.5))


def test_observations_fall_in_inclusive_buckets() -> None:
    h = LatencyHistogram((0.1, 1.0, 10.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 3.0, 99.0):
        h.observe(seconds)
    assert h.counts == [2, 2, 1, 1]
    assert h.cumulative() == [(0.1, 2), (1.0, 4), (10.0, 5), (math.inf, 6)]
    assert h.count == 6 and h.sum == pytest.approx(103.65)
    assert h.quantile(0.5) == 1.0 and h.quantile(0.99) == math.inf
    assert LatencyHistogram((1.0,)).quantile(0.99) is None


def test_exposition_parses_and_gives_a_p99() -> None:
    h = LatencyHistogram(ROUND_BUCKETS)
    for i in range(1000):
        h.observe(0.002 + i * 0.0004)  # 2 ms .. ~0.4 s, uniform
    family = histogram_family("dvpsim_certify_latency_seconds", "round latency", h)

    class One(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            yield family

    registry = CollectorRegistry()
    registry.register(One())
    text = generate_latest(registry).decode()
    (parsed,) = text_string_to_metric_families(text)
    assert parsed.type == "histogram"
    names = {s.name for s in parsed.samples}
    assert names == {
        "dvpsim_certify_latency_seconds_bucket",
        "dvpsim_certify_latency_seconds_count",
        "dvpsim_certify_latency_seconds_sum",
    }
    p99 = histogram_quantile(parsed, 0.99)
    # The true p99 is ~0.398 s: a histogram places it in its bucket, (0.25, 0.5].
    assert 0.25 < p99 <= 0.5 and h.quantile(0.99) == 0.5
