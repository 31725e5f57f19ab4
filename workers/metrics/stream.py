"""The stream worker's metrics: one small hook per thing that happens in the loop.

The loop and its output stage call these from their one thread; kafka-python's rebalance callbacks
(``assigned``, ``forget``) may run on its I/O thread, and ``snapshot`` runs on the actor's RPC thread, so
the poll times are under a lock (prometheus_client's counters are thread-safe already). One
``StreamMetrics`` lives as long as the worker actor, across loop rebuilds, so its counters never restart
while the process lives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from schemas.verdicts import DeadLetter, Verdict
from workers.engine import ScoreResult
from workers.metrics.recorder import ActorRecorder
from workers.metrics.snapshot import MetricsSnapshot
from workers.metrics.tenants import TenantLabels

Partition = tuple[str, int]
"""(topic, partition): kafka-python's ``TopicPartition`` is one; no Kafka types here."""

RELOADS = "guardstream_policy_reloads_total"
"""Kept by the policy store (``RedisPolicyStore.reloads``), copied in at each snapshot."""

MAX_TRACKED = 1_000_000
"""Poll times kept for latency; past this (a leak, never in normal flow) the oldest are dropped."""


def error_kind(scored: ScoreResult | str | None) -> str:
    """A short, bounded label for why scoring failed (the message itself is for logs, not labels).

    ``scored`` as the loop has it: the batch's error text, or the request's own ``ScoreResult``.
    """
    if isinstance(scored, ScoreResult):
        return "request"  # this request alone (e.g. a taxonomy that can't fit the prompt budget)
    lowered = (scored or "").lower()
    if "unknownmodelerror" in lowered or "no model pool named" in lowered:
        return "unknown_model"
    if "timed out" in lowered or "timeout" in lowered:
        return "timeout"
    if "replica died" in lowered or ("actor" in lowered and "died" in lowered):
        return "replica_lost"
    return "model"


class StreamMetrics:
    """Counters, the latency histogram and readiness of one stream worker."""

    def __init__(self, worker_id: str, *, max_tenants: int) -> None:
        self.worker_id = worker_id
        self._rec = ActorRecorder("worker", worker_id, external=frozenset({RELOADS}))
        self._tenants = TenantLabels(max_tenants)
        self._polled_at: dict[tuple[Partition, int], float] = {}
        self._polled_lock = threading.Lock()  # ``forget`` runs on the rebalance callback's thread
        self._joined = False
        self._consumed = self._rec.metric("guardstream_records_consumed_total")
        self._verdicts = self._rec.metric("guardstream_verdicts_total")
        self._dead = self._rec.metric("guardstream_dead_letters_total")
        self._latency = self._rec.metric("guardstream_verdict_latency_seconds")

    # --- intake and output ------------------------------------------------------------------------------
    def polled(self, tp: Partition, offset: int) -> None:
        """A record was read; its latency runs from now until its output is acknowledged."""
        topic, partition = tp
        self._consumed.labels(topic, str(partition)).inc()
        with self._polled_lock:
            if len(self._polled_at) >= MAX_TRACKED:
                self._polled_at.pop(next(iter(self._polled_at)))
            self._polled_at[((topic, partition), offset)] = time.monotonic()

    def answered(self, tp: Partition, offset: int, body: Verdict | DeadLetter) -> None:
        """The broker acknowledged the record's verdict or dead letter."""
        topic, partition = tp
        with self._polled_lock:
            polled = self._polled_at.pop(((topic, partition), offset), None)
        if polled is not None:
            self._latency.observe(time.monotonic() - polled)
        if isinstance(body, DeadLetter):
            self._dead.labels(body.error_code.value).inc()
        else:
            unsafe = "true" if body.unsafe else "false"
            self._verdicts.labels(self._tenants(body.tenant_id), body.classified, unsafe).inc()

    def forget(self, tps: Iterable[Partition]) -> None:
        """Partitions left this worker: their records will be answered (and timed) by the next owner."""
        lost = {(t, p) for t, p in tps}
        with self._polled_lock:
            for key in [k for k in self._polled_at if k[0] in lost]:
                del self._polled_at[key]

    # --- scoring and policies ---------------------------------------------------------------------------
    def scoring_error(self, pool: str, scored: ScoreResult | str | None) -> None:
        """An event of ``pool`` got its policy's ``on_error`` outcome instead of a score."""
        self._rec.metric("guardstream_scoring_errors_total").labels(pool, error_kind(scored)).inc()

    def policy_stale(self, tenant_id: str) -> None:
        self._rec.metric("guardstream_policy_stale_total").labels(self._tenants(tenant_id)).inc()

    # --- consumer life ----------------------------------------------------------------------------------
    def loop_started(self) -> None:
        """A (new) consumer exists; it is not ready until the group hands it an assignment."""
        self._joined = False

    def assigned(self) -> None:
        """The group gave this consumer its partitions (possibly none: more workers than partitions)."""
        self._joined = True
        self._rec.metric("guardstream_rebalances_total").inc()

    def consumer_rebuilt(self) -> None:
        self._joined = False
        self._rec.metric("guardstream_consumer_rebuilds_total").inc()

    def produce_retry(self) -> None:
        self._rec.metric("guardstream_produce_retries_total").inc()

    # --- hand-over --------------------------------------------------------------------------------------
    def snapshot(
        self, *, in_flight: int, running: bool, policy_reloads: int | None = None
    ) -> MetricsSnapshot:
        """``MetricsSnapshot`` with the gauges read now; ``problems`` say why the worker isn't ready."""
        self._rec.metric("guardstream_in_flight").labels(self.worker_id).set(in_flight)
        if policy_reloads is not None:
            self._rec.set_total(RELOADS, policy_reloads)
        problems = []
        if not running:
            problems.append(f"stream worker {self.worker_id}: not consuming (starting or rebuilding)")
        elif not self._joined:
            problems.append(f"stream worker {self.worker_id}: waiting for its partition assignment")
        return self._rec.snapshot(problems)
