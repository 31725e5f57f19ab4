"""``StreamWorker``: the Ray actor that runs one stream loop (one Kafka consumer of the group).

The loop runs on a thread of its own so the actor keeps answering ``stats``/``drain`` while it consumes.
A loop that fails unexpectedly (a bug, a broker gone for longer than the client retries) is rebuilt with a
fresh consumer after a short backoff: the group rebalances and the uncommitted records are re-delivered, so
nothing is lost. ``StreamStopped`` is not retried (a record's dead letter could not be produced, or a batch
cannot be decoded and the settings say stop): it stops the worker with the error in its stats (``fatal``),
because every rebuild would re-read the same record and fail the same way; the driver then stops the stream
with that error. If the actor process itself dies, Ray restarts it (``max_restarts``) and the constructor
starts consuming again from the committed offsets; the driver waits for it (``pipelines.stream.tally``).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import ray

from workers.errors import ConsumerStuckError, StreamStopped
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
        self._leave = threading.Event()
        self._loop: StreamLoop | None = None
        self._final: WorkerStats | None = None
        self._metrics = StreamMetrics(worker_id, max_tenants=settings.metrics_max_tenants)
        self._store: Any = None
        self._earlier = WorkerStats(worker_id=worker_id)
        """Counters of loops that failed and were rebuilt, so a report covers the worker's whole life."""
        self._fatal: str | None = None
        self._incarnation = uuid.uuid4().hex[:12]
        """New in every actor process: the driver tells a restarted actor (counters from zero) by it."""
        self._thread = threading.Thread(target=self._run, name=f"stream-{worker_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from workers.policies.redis_store import RedisPolicyStore

        store = self._store = RedisPolicyStore(self._settings)
        last_failure = ""
        try:
            while not self._stop.is_set():
                try:
                    self._loop = StreamLoop(
                        self._settings, self._pools, store, worker_id=self._worker_id, metrics=self._metrics
                    )
                    self._final = combined(self._earlier, self._loop.run(self._stop, self._leave))
                except StreamStopped as exc:
                    self._fatal = str(exc)
                    log.error("stream_worker_stopped", worker=self._worker_id, error=self._fatal)
                    self._final = combined(self._earlier, self._loop.stats()) if self._loop else self._earlier
                    return
                except Exception as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                    if failure != last_failure:
                        log.exception("stream_loop_failed_restarting", worker=self._worker_id)
                    else:  # the same failure again: one line, not another multi-kilobyte traceback
                        log.error(
                            "stream_loop_failed_restarting", worker=self._worker_id, error=failure, again=True
                        )
                    last_failure = failure
                    self._metrics.consumer_rebuilt()
                    if self._loop is not None:
                        self._earlier = combined(self._earlier, self._loop.stats())
                        self._loop = None
                    if isinstance(exc, ConsumerStuckError):
                        fired = self._earlier.watchdog_rebuilds + 1
                        self._earlier = self._earlier.model_copy(update={"watchdog_rebuilds": fired})
                    self._stop.wait(RESTART_BACKOFF_S)
        finally:
            store.close()

    def ping(self) -> str:
        return self._worker_id

    def stats(self) -> dict[str, Any]:
        """Live counters (see ``WorkerStats``) and this process's ``incarnation``, as a dict so the driver
        needs no worker imports."""
        if self._final is not None and not self._thread.is_alive():
            stats = self._final
        elif self._loop is None:
            stats = self._earlier
        else:
            stats = combined(self._earlier, self._loop.stats())
        return {**stats.model_dump(), "incarnation": self._incarnation, "fatal": self._fatal}

    def metrics(self) -> MetricsSnapshot:
        """Metrics and readiness for the ``stream`` driver (``pipelines.telemetry``)."""
        live = self.stats()
        reloads = getattr(self._store, "reloads", None)
        return self._metrics.snapshot(
            in_flight=live["in_flight"], running=live["running"], policy_reloads=reloads
        )

    def finish(self, timeout_s: float) -> bool:
        """Stop polling, finish in-flight batches, produce and commit, but stay in the group; True once
        done (``drain`` then leaves)."""
        self._stop.set()
        loop = self._loop
        if loop is None or not self._thread.is_alive():
            return True
        return loop.drained.wait(timeout_s)

    def drain(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Stop polling, finish in-flight batches, produce, commit, leave the group; returns final stats."""
        self._stop.set()
        self._leave.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.warning("stream_worker_drain_timeout", worker=self._worker_id)
        return self.stats()

    stop = drain


def combined(earlier: WorkerStats, current: WorkerStats) -> WorkerStats:
    """``current`` with the counters of the loops before it added (a rebuilt loop starts from zero)."""
    counters = ("consumed", "verdicts", "dead_letters", "scoring_errors", "batches", "watchdog_rebuilds")
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
