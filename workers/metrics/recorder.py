"""An actor's own metric registry, built from the catalogue, and its snapshot for the driver.

Why a registry per actor rather than Prometheus' global one or Ray's metrics API: the stream workers and
replicas are separate processes (on separate nodes in a cluster), and the one ``/metrics`` endpoint is
served by the ``stream`` driver. Each actor records into its own ``CollectorRegistry`` (prometheus_client's
counters and histograms, so bucket and label handling are the library's) and answers a cheap ``metrics``
call with a ``MetricsSnapshot``; the driver merges them (``workers.metrics.aggregate``). Nothing depends on
Ray's metrics agent or a Prometheus per node.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from workers.metrics.catalog import CATALOG, MetricSpec
from workers.metrics.snapshot import MetricsSnapshot, Sample


def _build(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    if spec.kind == "counter":
        return Counter(spec.family, spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.family, spec.help, spec.labels, registry=registry)
    return Histogram(spec.family, spec.help, spec.labels, registry=registry, buckets=spec.buckets)


class ActorRecorder:
    """The metrics of one actor process: ``metric(name)`` to record, ``snapshot`` to hand over."""

    def __init__(
        self, source: Literal["worker", "replica"], source_id: str, *, external: frozenset[str] = frozenset()
    ) -> None:
        """``external``: counters whose value someone else keeps (``set_total``), not built here."""
        self.source = f"{source}:{source_id}"
        self.instance = uuid.uuid4().hex
        self._registry = CollectorRegistry(auto_describe=False)
        self._metrics = {
            s.name: _build(s, self._registry)
            for s in CATALOG
            if s.source == source and s.name not in external
        }
        self._totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def metric(self, name: str) -> Any:
        """The prometheus_client object for a catalogue name (``guardstream_..._total`` for counters)."""
        return self._metrics[name]

    def set_total(self, name: str, value: float, **labels: str) -> None:
        """A counter kept by someone else (e.g. the prefix cache's hit count), copied in before a snapshot."""
        self._totals[(name, tuple(sorted(labels.items())))] = value

    def snapshot(self, problems: list[str] | None = None) -> MetricsSnapshot:
        samples = [
            Sample(name=s.name, labels=dict(s.labels), value=s.value)
            for family in self._registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        ]
        samples += [Sample(name=n, labels=dict(lbl), value=v) for (n, lbl), v in self._totals.items()]
        return MetricsSnapshot(
            source=self.source, instance=self.instance, samples=samples, problems=problems or []
        )
