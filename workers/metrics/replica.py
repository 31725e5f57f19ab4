"""A guard replica's metrics: forward-batch time and size, and its prefix KV cache.

The cache keeps its own hit/miss counts and byte size (``workers.engine.CacheStats``, read through the
engine when a snapshot is taken), so scoring pays nothing for them; only the forward timing is recorded
on the hot path, once per forward batch, not per request.
"""

from __future__ import annotations

from workers.engine import CacheStats
from workers.metrics.recorder import ActorRecorder
from workers.metrics.snapshot import MetricsSnapshot

HITS = "guardstream_prefix_cache_hits_total"
MISSES = "guardstream_prefix_cache_misses_total"


class ReplicaMetrics:
    """Recorded by ``GuardReplica``; ``snapshot`` is its answer to the driver's ``metrics`` call."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._rec = ActorRecorder("replica", pool, external=frozenset({HITS, MISSES}))
        self._seconds = self._rec.metric("guardstream_score_batch_seconds").labels(pool)
        self._size = self._rec.metric("guardstream_batch_size").labels(pool)

    def forward(self, requests: int, seconds: float) -> None:
        """One forward batch of ``requests`` took ``seconds`` (failed ones too: they cost the same)."""
        self._size.observe(requests)
        self._seconds.observe(seconds)

    def snapshot(self, replica: str, cache: CacheStats | None) -> MetricsSnapshot:
        """``replica``: this replica's label (``<pool>-<index>``), given by the driver that numbers them."""
        self._rec.source = f"replica:{replica}"
        if cache is not None:
            self._rec.set_total(HITS, cache.hits, pool=self.pool)
            self._rec.set_total(MISSES, cache.misses, pool=self.pool)
            self._rec.metric("guardstream_prefix_cache_bytes").labels(replica).set(cache.nbytes)
        return self._rec.snapshot()
