"""The node's Prometheus endpoint: rounds, certificates, messages, decisions, transmissions
and latencies (histograms), read from the runtime's counters at scrape time, and the
process's own metrics (``process_*``: CPU, memory, open files).

It binds 127.0.0.1 unless told otherwise and uses a registry of its own, so two nodes in
one process (tests) do not collide. It never changes the runtime's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from node.latency import LatencyHistogram


def histogram_family(name: str, text: str, histogram: LatencyHistogram) -> HistogramMetricFamily:
    """A latency histogram as Prometheus' cumulative ``le`` buckets, with its count and sum."""
    buckets = [
        ("+Inf" if bound == float("inf") else repr(bound), running)
        for bound, running in histogram.cumulative()
    ]
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=histogram.sum)


class RuntimeCollector(Collector):
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        stats = self.runtime.stats
        yield CounterMetricFamily(
            "dvpsim_rounds", "Rounds this node was asked to observe", value=stats.rounds_observed
        )
        yield CounterMetricFamily(
            "dvpsim_certificates", "Certificates this node accepted", value=stats.certificates
        )
        yield CounterMetricFamily("dvpsim_epochs", "Epochs this node entered", value=stats.epochs)
        yield CounterMetricFamily(
            "dvpsim_rejected", "Peer messages or stale events refused", value=stats.rejected
        )
        yield CounterMetricFamily(
            "dvpsim_persists", "Safety store writes (fsynced)", value=stats.persists
        )
        decisions = CounterMetricFamily(
            "dvpsim_decisions", "Decisions in certified reports", labels=["action"]
        )
        for action, count in sorted(stats.decisions.items()):
            decisions.add_metric([action], count)
        yield decisions
        transmissions = CounterMetricFamily(
            "dvpsim_transmissions", "Transmission results", labels=["target", "result"]
        )
        for key, count in sorted(stats.transmissions.items()):
            target, _, result = key.partition(":")
            transmissions.add_metric([target, result], count)
        yield transmissions
        for name, histogram, text in (
            (
                "dvpsim_certify_latency_seconds",
                stats.certify_latency,
                "Observe request to certificate (a round's latency)",
            ),
            ("dvpsim_transmit_latency_seconds", stats.transmit_latency, "Transmission duration"),
            (
                "dvpsim_settlement_latency_seconds",
                stats.settlement_latency,
                "Settlement first served in an observation until every leg applied a decision",
            ),
        ):
            yield histogram_family(name, text, histogram)
        yield GaugeMetricFamily(
            "dvpsim_observation_largest_bytes",
            "Largest observation this node sent (limit: timing.max_observation_bytes)",
            value=stats.observation_largest_bytes,
        )
        yield CounterMetricFamily(
            "dvpsim_settlements_refused",
            "Settlements a chain's admission refused at their lock (SettlementRefused seen)",
            value=stats.refused,
        )
        yield CounterMetricFamily(
            "dvpsim_observation_settlements_left_out",
            "Open settlements queued behind the ones an observation served, summed over rounds",
            value=stats.observation_left_out,
        )
        for name, text, value in (
            ("dvpsim_settlements_queued", "Open settlements queued now", stats.queued),
            (
                "dvpsim_settlements_queued_peak",
                "Most settlements queued at once",
                stats.queued_peak,
            ),
            (
                "dvpsim_oldest_queued_seconds",
                "How long the first queued settlement has been first in line",
                stats.oldest_queued_s,
            ),
            (
                "dvpsim_oldest_queued_seconds_peak",
                "Longest any settlement was first in line in the queue",
                stats.oldest_queued_peak_s,
            ),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        transport = self.runtime.transport.metrics()
        yield CounterMetricFamily(
            "dvpsim_messages_in", "Frames received from peers", value=transport.frames_in
        )
        yield CounterMetricFamily(
            "dvpsim_messages_out", "Frames sent to peers", value=transport.frames_out
        )
        yield CounterMetricFamily(
            "dvpsim_malformed_frames",
            "Peer streams closed for broken framing",
            value=transport.malformed,
        )
        yield GaugeMetricFamily(
            "dvpsim_peers_connected",
            "Committee links up",
            value=len(self.runtime.transport.connected_peers()),
        )
        yield GaugeMetricFamily(
            "dvpsim_safety_decisions",
            "Decisions in the safety store",
            value=self.runtime.store.decision_count,
        )


def serve_metrics(runtime: Any, host: str = "127.0.0.1", port: int = 0) -> int:
    """Start the endpoint in a daemon thread; returns the bound port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    ProcessCollector(registry=registry)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
