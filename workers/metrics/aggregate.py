"""The driver's merge of every actor's snapshot into one set of metric families for ``/metrics``.

Rules, and why:

- Series with the same name and labels from different actors are summed (counters, histogram buckets and
  sums add; gauges are labelled per worker/replica, so they rarely collide; when they do, the sum is meant).
- Counters stay monotonic across actor restarts: when a ``source`` reports a new ``instance`` (Ray restarted
  the process, whose counters began at zero), the previous instance's last counter and histogram values are
  kept in ``_retired`` and added from then on. Counts the dead process made after its last snapshot are
  lost (at most one refresh interval's worth), which reads in Prometheus as a slower rate, never as a reset.
  A restart of the ``stream`` command itself starts every series from zero: Prometheus' ordinary counter
  reset, which ``rate()`` and ``increase()`` handle.
- Tenant labels are bounded again here (each actor bounds its own, but N actors could each pick different
  tenants): the first ``max_tenants`` seen keep their label, the rest are summed into ``other``.
- Every catalogue family is exported, even before its first sample, so dashboards and alerts find the name.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from workers.metrics.catalog import CATALOG, MetricSpec
from workers.metrics.snapshot import MetricsSnapshot
from workers.metrics.tenants import TenantLabels

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]

_SPEC_OF_SERIES: dict[str, MetricSpec] = {name: spec for spec in CATALOG for name in spec.sample_names}
_SUFFIX_ORDER = {"_bucket": 0, "_count": 1, "_sum": 2}


class Aggregator(Collector):
    """Holds the latest snapshot per actor plus driver-computed gauges; a prometheus_client ``Collector``."""

    def __init__(self, *, max_tenants: int) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, MetricsSnapshot] = {}
        self._retired: defaultdict[SeriesKey, float] = defaultdict(float)
        self._driver: dict[str, dict[Labels, float]] = {}
        self._tenants = TenantLabels(max_tenants)

    def ingest(self, snapshot: MetricsSnapshot) -> None:
        """Replace ``snapshot.source``'s previous snapshot; fold it into the totals if the actor restarted."""
        with self._lock:
            previous = self._current.get(snapshot.source)
            if previous is not None and previous.instance != snapshot.instance:
                for key, value in self._series(previous, monotonic_only=True):
                    self._retired[key] += value
            self._current[snapshot.source] = snapshot

    def set_gauge(self, name: str, values: dict[Labels, float]) -> None:
        """Replace every series of a driver-computed gauge (lag, replicas ready)."""
        if _SPEC_OF_SERIES[name].source != "driver":
            raise ValueError(f"{name} is recorded by actors, not the driver")
        with self._lock:
            self._driver[name] = dict(values)

    def totals(self) -> dict[SeriesKey, float]:
        """Every series' merged value (for tests and the report); what ``collect`` exports."""
        with self._lock:
            merged: defaultdict[SeriesKey, float] = defaultdict(float, self._retired)
            for snapshot in self._current.values():
                for key, value in self._series(snapshot, monotonic_only=False):
                    merged[key] += value
            for name, series in self._driver.items():
                for labels, value in series.items():
                    merged[(name, labels)] = value
        return dict(merged)

    def collect(self) -> Iterator[Metric]:
        by_family: defaultdict[str, list[tuple[SeriesKey, float]]] = defaultdict(list)
        for key, value in self.totals().items():
            by_family[_SPEC_OF_SERIES[key[0]].name].append((key, value))
        for spec in CATALOG:
            metric = Metric(spec.family, spec.help, spec.kind)
            series = sorted(by_family.get(spec.name, []), key=_order)
            if not series and spec.kind == "counter" and not spec.labels:
                series = [((spec.name, ()), 0.0)]
            for (name, labels), value in series:
                metric.add_sample(name, dict(labels), value)
            yield metric

    def _series(
        self, snapshot: MetricsSnapshot, *, monotonic_only: bool
    ) -> Iterator[tuple[SeriesKey, float]]:
        for sample in snapshot.samples:
            spec = _SPEC_OF_SERIES.get(sample.name)
            if spec is None or (monotonic_only and spec.kind == "gauge"):
                continue
            labels = dict(sample.labels)
            if "tenant" in labels:
                labels["tenant"] = self._tenants(labels["tenant"])
            yield (sample.name, tuple(sorted(labels.items()))), sample.value


def _order(item: tuple[SeriesKey, float]) -> tuple[Labels, int, float]:
    """Histogram samples grouped by labels, buckets in ascending ``le`` then count and sum."""
    (name, labels), _ = item
    rest = tuple((k, v) for k, v in labels if k != "le")
    le = dict(labels).get("le")
    suffix = next((order for sfx, order in _SUFFIX_ORDER.items() if name.endswith(sfx)), 0)
    return rest, suffix, float(le) if le is not None else 0.0
