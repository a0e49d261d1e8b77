"""Reading a scraped Prometheus endpoint in tests: parse it with ``prometheus_client.parser``
(the reference parser) and compute a quantile from a histogram's cumulative buckets, the
way PromQL's ``histogram_quantile`` does (linear within the bucket)."""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

#: What prometheus_client's ProcessCollector exports on Linux.
PROCESS_METRICS = (
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
)


def scrape(url: str) -> dict[str, Metric]:
    """Every metric family of the endpoint, by name (counters without ``_total``)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def histogram_quantile(family: Metric, q: float, **labels: str) -> float:
    """The ``q`` quantile of the series of ``family`` with ``labels``, summed over any
    other label; NaN without observations. Needs the ``_bucket`` series (a summary with
    only ``_count`` and ``_sum`` cannot answer)."""
    assert family.type == "histogram", f"{family.name} is a {family.type}, not a histogram"
    buckets: dict[float, float] = {}
    for sample in family.samples:
        if not sample.name.endswith("_bucket"):
            continue
        if any(sample.labels.get(k) != v for k, v in labels.items()):
            continue
        bound = float(sample.labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + sample.value
    assert math.inf in buckets, f"{family.name}{labels} has no +Inf bucket"
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, running in ordered:
        if running >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: its lower edge, as PromQL
            return lower + (bound - lower) * (rank - below) / max(running - below, 1e-12)
        lower, below = bound, running
    return lower
