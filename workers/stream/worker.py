"""``StreamWorker``: the Ray actor that runs one stream loop (one Kafka consumer of the group).

The loop runs on a thread of its own so the actor keeps answering ``stats``/``drain`` while it consumes.
A loop that fails unexpectedly (a bug, a broker gone for longer than the client retries) is rebuilt with a
fresh consumer after a short backoff: the group rebalances and the uncommitted records are re-delivered,
so nothing is lost. If the actor process itself dies, Ray restarts it (``max_restarts``) and the
constructor starts consuming again from the committed offsets.
"""

from __future__ import annotations

import threading
from typing import Any

import ray

from workers.logging import configure_logging, get_logger
from workers.metrics.snapshot import MetricsSnapshot
from workers.metrics.stream import StreamMetrics
from workers.settings import Settings
from workers.stream.items import Pools, WorkerStats
from workers.stream.loop import StreamLoop

log = get_logger(__name__)

RESTART_BACKOFF_S = 2.0


class StreamWorkerImpl:
    """The actor body; ``start_stream_workers`` wraps it with the settings' resources."""

    def __init__(self, settings: Settings, pools: Pools, worker_id: str) -> None:
        configure_logging(settings.log_format, settings.log_level)
        self._settings = settings
        self._pools = pools
        self._worker_id = worker_id
        self._stop = threading.Event()
        self._loop: StreamLoop | None = None
        self._final: WorkerStats | None = None
        self._metrics = StreamMetrics(worker_id, max_tenants=settings.metrics_max_tenants)
        self._store: Any = None
        self._earlier = WorkerStats(worker_id=worker_id)
        """Counters of loops that failed and were rebuilt, so a report covers the worker's whole life."""
        self._thread = threading.Thread(target=self._run, name=f"stream-{worker_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from workers.policies.redis_store import RedisPolicyStore

        store = self._store = RedisPolicyStore(self._settings)
        try:
            while not self._stop.is_set():
                try:
                    self._loop = StreamLoop(
                        self._settings, self._pools, store, worker_id=self._worker_id, metrics=self._metrics
                    )
                    self._final = combined(self._earlier, self._loop.run(self._stop))
                except Exception:
                    log.exception("stream_loop_failed_restarting", worker=self._worker_id)
                    self._metrics.consumer_rebuilt()
                    if self._loop is not None:
                        self._earlier = combined(self._earlier, self._loop.stats())
                        self._loop = None
                    self._stop.wait(RESTART_BACKOFF_S)
        finally:
            store.close()

    def ping(self) -> str:
        return self._worker_id

    def stats(self) -> dict[str, Any]:
        """Live counters (see ``WorkerStats``), as a dict so the driver needs no worker imports."""
        if self._final is not None and not self._thread.is_alive():
            return self._final.model_dump()
        if self._loop is None:
            return self._earlier.model_dump()
        return combined(self._earlier, self._loop.stats()).model_dump()

    def metrics(self) -> MetricsSnapshot:
        """Metrics and readiness for the ``stream`` driver (``pipelines.telemetry``)."""
        live = self.stats()
        reloads = getattr(self._store, "reloads", None)
        return self._metrics.snapshot(
            in_flight=live["in_flight"], running=live["running"], policy_reloads=reloads
        )

    def drain(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Stop polling, finish in-flight batches, produce, commit, leave the group; returns final stats."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.warning("stream_worker_drain_timeout", worker=self._worker_id)
        return self.stats()

    stop = drain


def combined(earlier: WorkerStats, current: WorkerStats) -> WorkerStats:
    """``current`` with the counters of the loops before it added (a rebuilt loop starts from zero)."""
    counters = ("consumed", "verdicts", "dead_letters", "scoring_errors", "batches")
    update = {name: getattr(earlier, name) + getattr(current, name) for name in counters}
    update["committed"] = {**earlier.committed, **current.committed}
    return current.model_copy(update=update)


def stream_worker_class(settings: Settings) -> Any:
    """``StreamWorkerImpl`` as a Ray actor with fractional CPU and restart on death."""
    remote: Any = ray.remote  # its stubs lack actor-only options such as max_concurrency
    return remote(
        num_cpus=settings.worker_num_cpus,
        max_restarts=-1,
        max_concurrency=4,  # stats/drain while the constructor's thread consumes
    )(StreamWorkerImpl)


def start_stream_workers(settings: Settings, pools: Pools, *, prefix: str = "w") -> list[Any]:
    """Start ``settings.stream_workers`` actors (one consumer each, same group); returns their handles."""
    cls = stream_worker_class(settings)
    return [cls.remote(settings, pools, f"{prefix}{i}") for i in range(settings.stream_workers)]


# The name the rest of guardstream (and the issue) uses for the actor class.
StreamWorker = StreamWorkerImpl
