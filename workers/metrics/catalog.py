"""Every metric guardstream exports: name, type, labels and meaning, declared once.

The actors record into registries built from these specs (``workers.metrics.recorder``), the driver merges
them under the same specs (``workers.metrics.aggregate``), and the README table and the Grafana dashboard
test read this list, so a name can't drift between what is recorded, served, documented and graphed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Kind = Literal["counter", "gauge", "histogram"]
Source = Literal["worker", "replica", "driver"]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds; chat moderation wants sub-second verdicts, a CPU replica under load takes tens of seconds."""

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class MetricSpec(BaseModel):
    """One metric family. ``name`` is the exported name (counters end in ``_total``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    source: Source
    """Where it is recorded: a stream-worker actor, a replica actor, or the ``stream`` driver itself."""

    @property
    def family(self) -> str:
        """The name prometheus_client's types take (counters without the ``_total`` suffix)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def sample_names(self) -> tuple[str, ...]:
        """The series names that appear on ``/metrics`` for this family."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum")
        return (self.name,)


def _spec(
    name: str, kind: Kind, source: Source, help: str, labels: tuple[str, ...] = (), **kw: Any
) -> MetricSpec:
    return MetricSpec(name=name, kind=kind, help=help, labels=labels, source=source, **kw)


W: Source = "worker"
R: Source = "replica"
D: Source = "driver"

CATALOG: tuple[MetricSpec, ...] = (
    # --- stream workers ---------------------------------------------------------------------------------
    _spec("guardstream_records_consumed_total", "counter", W, "Records polled from the input topic.",
          ("topic", "partition")),
    _spec("guardstream_verdicts_total", "counter", W,
          "Verdicts acknowledged by the broker (skipped and error verdicts included).",
          ("tenant", "side", "unsafe")),
    _spec("guardstream_dead_letters_total", "counter", W,
          "Dead letters acknowledged by the broker, by error code.", ("code",)),
    _spec("guardstream_scoring_errors_total", "counter", W,
          "Events whose scoring failed (their policy's on_error applied), by pool and kind of failure.",
          ("pool", "kind")),
    _spec("guardstream_verdict_latency_seconds", "histogram", W,
          "Seconds from polling a record to the broker acknowledging its verdict or dead letter.",
          buckets=LATENCY_BUCKETS),
    _spec("guardstream_in_flight", "gauge", W,
          "Records a worker has polled whose offsets are not committable yet.", ("worker",)),
    _spec("guardstream_rebalances_total", "counter", W,
          "Partition assignments the workers received (each one's first join included)."),
    _spec("guardstream_consumer_rebuilds_total", "counter", W,
          "Stream loops rebuilt with a fresh consumer after failing (e.g. stuck in a rejoin)."),
    _spec("guardstream_produce_retries_total", "counter", W,
          "Outputs re-sent after the producer's own retries failed."),
    _spec("guardstream_policy_stale_total", "counter", W,
          "Events answered with a stale cached policy because Redis was unreachable.", ("tenant",)),
    _spec("guardstream_policy_reloads_total", "counter", W,
          "Policies fetched from Redis into a worker's cache (first use, expiry or invalidation)."),
    # --- replicas ---------------------------------------------------------------------------------------
    _spec("guardstream_score_batch_seconds", "histogram", R,
          "Seconds one replica forward batch took (all the calls joined into it).", ("pool",),
          buckets=LATENCY_BUCKETS),
    _spec("guardstream_batch_size", "histogram", R, "Requests per replica forward batch.", ("pool",),
          buckets=BATCH_SIZE_BUCKETS),
    _spec("guardstream_prefix_cache_hits_total", "counter", R,
          "Prompt tokens whose keys/values came from a replica's KV tree (not computed).", ("pool",)),
    _spec("guardstream_prefix_cache_misses_total", "counter", R,
          "Prompt tokens looked up in the KV tree and computed because it did not hold them.", ("pool",)),
    _spec("guardstream_prefix_cache_bytes", "gauge", R,
          "Tensor bytes held by a replica's KV tree.", ("replica",)),
    # --- driver -----------------------------------------------------------------------------------------
    _spec("guardstream_consumer_lag", "gauge", D,
          "Input records not yet committed by the consumer group: end offset - committed offset.",
          ("topic", "partition")),
    _spec("guardstream_replicas_ready", "gauge", D,
          "Replicas of a pool that answered the driver's last health check.", ("pool",)),
)  # fmt: skip

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOG}


def exported_series() -> set[str]:
    """Every series name ``/metrics`` can show (histogram ``_bucket``/``_count``/``_sum`` included)."""
    return {name for spec in CATALOG for name in spec.sample_names}
