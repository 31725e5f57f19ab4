"""``Telemetry``: the driver's side of the metrics. Asks every actor for its snapshot, reads consumer lag,
decides readiness, and serves it all (``pipelines.telemetry.server``).

Two daemon threads, each every ``settings.metrics_refresh_s``:

- *collect*: one ``metrics`` call per stream worker and replica, awaited together for at most one interval.
  A call still unanswered is not re-sent (an actor being restarted would pile calls up) and its actor counts
  as not ready; its last snapshot stays in the totals. A replica is ready when it answered; a pool is ready
  when one of its replicas is (``guardstream_replicas_ready``).
- *lag*: ``workers.metrics.lag.LagReader``; a failed reading (broker down) keeps the last values.

Readiness (``/readyz``): the pools have started and loaded their models, the workers have started, every
worker answered and has received its partition assignment, and every pool has a ready replica.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import ray
from prometheus_client import CollectorRegistry

from pipelines.telemetry.server import MetricsServer, Readiness
from workers.logging import get_logger
from workers.metrics.aggregate import Aggregator, Labels
from workers.metrics.lag import LagReader
from workers.metrics.snapshot import MetricsSnapshot
from workers.settings import Settings

log = get_logger(__name__)


class Telemetry:
    """Created before the pools start (so ``/readyz`` can say 503 while models load); ``close`` at exit."""

    def __init__(self, settings: Settings, *, serve: bool = True) -> None:
        self._settings = settings
        self.aggregator = Aggregator(max_tenants=settings.metrics_max_tenants)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.aggregator)
        self._lock = threading.Lock()
        self._collecting = threading.Lock()  # the collect thread and ``finish`` share ``_pending``
        self._pools: Any = None
        self._workers: dict[str, Any] = {}
        self._generation = 0
        self._problems: list[str] = []
        self._pending: dict[str, Any] = {}
        self._stopping = False
        self._finished = False
        self._stop = threading.Event()
        self._lag = LagReader(settings)
        self.server: MetricsServer | None = None
        if serve:
            port = settings.metrics_port
            self.server = MetricsServer(settings.metrics_host, port, self.registry, self.readiness)
            log.info("metrics_serving", url=self.server.url())
        self._threads = [
            threading.Thread(target=self._every, args=(self.collect,), name="metrics-collect", daemon=True),
            threading.Thread(target=self._every, args=(self.read_lag,), name="metrics-lag", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # --- what the driver tells us -----------------------------------------------------------------------
    def attach(self, *, pools: Any = None, workers: dict[str, Any] | None = None) -> None:
        """The pools have loaded / the workers (by worker id) have started: ask them for metrics from now."""
        with self._lock:
            self._pools = pools if pools is not None else self._pools
            self._workers = dict(workers) if workers is not None else self._workers
            self._generation += 1
            self._problems = ["first health check of the started actors is pending"]

    def stopping(self) -> None:
        """The stream drains: not ready any more."""
        self._stopping = True

    def finish(self) -> None:
        """Collect the drained workers' final counts, then stop asking: the actors are about to be killed."""
        self.collect()
        with self._lock:
            self._finished = True

    def close(self) -> None:
        """Stop the threads and the server (``finish`` collected the final counts)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._settings.metrics_refresh_s + 10)
        if self.server is not None:
            self.server.close()
        self._lag.close()

    # --- readiness --------------------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        with self._lock:
            reasons = ["stream is draining"] if self._stopping else []
            if self._pools is None:
                reasons.append("model pools are starting (loading their models)")
            if not self._workers:
                reasons.append("stream workers are not started")
            reasons += self._problems
        return Readiness(ready=not reasons, reasons=reasons)

    # --- the two loops ----------------------------------------------------------------------------------
    def collect(self) -> None:
        """One round of ``metrics`` calls, waiting at most one refresh interval for the answers."""
        with self._collecting:
            self._collect()

    def _collect(self) -> None:
        with self._lock:
            if self._finished:
                return
            generation, workers, pools = self._generation, dict(self._workers), self._pools
        targets = _targets(workers, pools)
        for source, send in targets.items():
            if source not in self._pending:  # still unanswered from an earlier round: don't pile up
                self._pending[source] = send()
        refs = list(self._pending.values())
        if not refs:
            return
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=self._settings.metrics_refresh_s)
        snapshots = self._take(set(done))
        problems = []
        for worker_id in workers:
            snapshot = snapshots.get(f"worker:{worker_id}")
            if snapshot is None:
                problems.append(f"stream worker {worker_id}: did not answer its health check")
            else:
                problems += snapshot.problems
        ready = _replicas_ready(pools, snapshots)
        problems += [
            f"model pool {pool!r}: no replica answered its health check" for pool, n in ready.items() if not n
        ]
        self.aggregator.set_gauge(
            "guardstream_replicas_ready", {(("pool", pool),): float(n) for pool, n in ready.items()}
        )
        with self._lock:
            if generation == self._generation:  # an attach during this round waits for the next one
                self._problems = problems

    def read_lag(self) -> None:
        try:
            lag = self._lag.read()
        except Exception as exc:  # a broker outage must not end the thread; the last values stay
            log.warning("consumer_lag_unavailable", error=_first_line(exc))
            return
        series: dict[Labels, float] = {
            (("partition", str(p)), ("topic", t)): float(n) for (t, p), n in lag.items()
        }
        self.aggregator.set_gauge("guardstream_consumer_lag", series)

    def _take(self, done: set[Any]) -> dict[str, MetricsSnapshot]:
        """Ingest the answered calls; returns their snapshots by source."""
        snapshots: dict[str, MetricsSnapshot] = {}
        for source, ref in list(self._pending.items()):
            if ref not in done:
                continue
            del self._pending[source]
            try:
                snapshot = MetricsSnapshot.model_validate(ray.get(ref, timeout=0))
            except Exception as exc:  # a dead actor: not ready; its totals stay
                log.warning("metrics_call_failed", source=source, error=_first_line(exc))
                continue
            self.aggregator.ingest(snapshot)
            snapshots[source] = snapshot
        return snapshots

    def _every(self, step: Callable[[], None]) -> None:
        while not self._stop.wait(self._settings.metrics_refresh_s):
            try:
                step()
            except Exception:
                log.exception("metrics_refresh_failed", step=step.__name__)


def _targets(workers: dict[str, Any], pools: Any) -> dict[str, Callable[[], Any]]:
    """Source name → a function sending that actor's ``metrics`` call."""
    calls: dict[str, Callable[[], Any]] = {f"worker:{wid}": w.metrics.remote for wid, w in workers.items()}
    if pools is not None:
        for pool in pools.models:
            for index, replica in enumerate(pools.replicas(pool)):
                label = f"{pool}-{index}"
                calls[f"replica:{label}"] = functools.partial(replica.metrics.remote, label)
    return calls


def _replicas_ready(pools: Any, snapshots: dict[str, MetricsSnapshot]) -> dict[str, int]:
    if pools is None:
        return {}
    return {
        pool: sum(1 for i in range(len(pools.replicas(pool))) if f"replica:{pool}-{i}" in snapshots)
        for pool in pools.models
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
