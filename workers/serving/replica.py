"""``GuardReplica``: a Ray actor holding one scoring engine, batching calls from every stream worker.

Why an async actor with a queue: each stream worker sends one call per micro-batch, and at low traffic
those batches are small. A forward pass costs roughly the same for 2 or 20 short conversations, so the
replica coalesces calls that arrive within ``settings.replica_batch_wait_ms`` (or pile up while a forward
is running) into one forward of up to ``settings.replica_max_batch`` requests, then hands each caller its
own slice. This is Ray Serve's ``@serve.batch`` pattern, written plainly. The model runs on one executor
thread so the event loop keeps accepting calls during a forward.

Fault tolerance is Ray's: ``max_restarts`` brings a dead replica back (reloading the model) and
``max_task_retries`` re-runs the calls that were in flight on it, so a killed replica loses no request.

Only this module and ``workers.serving.pool`` import Ray; the engine (torch) is imported inside the actor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray

from workers.engine import Engine, ScoreRequest, ScoreResult
from workers.errors import ScoringError
from workers.logging import configure_logging, get_logger
from workers.metrics.replica import ReplicaMetrics
from workers.metrics.snapshot import MetricsSnapshot
from workers.settings import ModelSpec, Settings

log = get_logger(__name__)

EngineFactory = Callable[[ModelSpec, Settings], Engine]


@dataclass
class _Call:
    requests: list[ScoreRequest]
    future: asyncio.Future[list[ScoreResult]] = field(repr=False)


@dataclass
class ReplicaStats:
    """Counters a test or an operator can read through ``GuardReplica.stats``."""

    calls: int = 0
    requests: int = 0
    forward_batches: int = 0
    failed_batches: int = 0


class GuardReplicaImpl:
    """The actor body; ``GuardReplica`` is its Ray actor class and ``start_replica`` starts one."""

    def __init__(
        self,
        model_name: str,
        spec: ModelSpec,
        settings: Settings,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        # An actor process starts with structlog's defaults; the command's format and level apply here too.
        configure_logging(settings.log_format, settings.log_level)
        self._pool_name = model_name
        self._engine = (engine_factory or _local_engine)(spec, settings)
        self._max_batch = settings.replica_max_batch
        self._wait_s = settings.replica_batch_wait_ms / 1000
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guard-forward")
        self._queue: asyncio.Queue[_Call] | None = None
        self._carry: _Call | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._stats = ReplicaStats()
        self._metrics = ReplicaMetrics(model_name)
        log.info("replica_ready", pool=model_name, model=self._engine.model_name)

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score one caller's batch; it may share a forward pass with other callers' batches."""
        if not requests:
            return []
        queue = self._ensure_batcher()
        call = _Call(list(requests), asyncio.get_running_loop().create_future())
        self._stats.calls += 1
        self._stats.requests += len(call.requests)
        await queue.put(call)
        return await call.future

    async def model_name(self) -> str:
        """The engine's description (e.g. ``llama-guard-3 @ /models/...``), written into verdicts."""
        return self._engine.model_name

    async def ping(self) -> str:
        """Answers once the model is loaded; the pool waits on it before declaring itself ready."""
        return self._pool_name

    async def stats(self) -> dict[str, int]:
        return dict(vars(self._stats))

    async def metrics(self, replica: str) -> MetricsSnapshot:
        """Forward timings and prefix-cache counters for the driver; ``replica`` is this one's label."""
        cache_stats = getattr(self._engine, "cache_stats", None)
        return self._metrics.snapshot(replica, cache_stats() if cache_stats is not None else None)

    def _ensure_batcher(self) -> asyncio.Queue[_Call]:
        if self._queue is None or self._batcher is None or self._batcher.done():
            self._queue = asyncio.Queue()
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop(self._queue))
        return self._queue

    async def _batch_loop(self, queue: asyncio.Queue[_Call]) -> None:
        while True:
            calls = await self._collect(queue)
            await self._forward(calls)

    async def _collect(self, queue: asyncio.Queue[_Call]) -> list[_Call]:
        """The next forward batch: whole calls only, up to ``replica_max_batch`` requests (a single larger
        call goes alone), waiting at most ``replica_batch_wait_ms`` after the first call for others."""
        first, self._carry = self._carry or await queue.get(), None
        calls, size = [first], len(first.requests)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while size < self._max_batch:
            try:
                if queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    call = await asyncio.wait_for(queue.get(), remaining)
                else:
                    call = queue.get_nowait()
            except TimeoutError:
                break
            if size + len(call.requests) > self._max_batch:
                self._carry = call
                break
            calls.append(call)
            size += len(call.requests)
        return calls

    async def _forward(self, calls: list[_Call]) -> None:
        batch = [request for call in calls for request in call.requests]
        self._stats.forward_batches += 1
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._engine.score, batch)
            if len(results) != len(batch):
                raise ScoringError(f"engine returned {len(results)} results for {len(batch)} requests")
        except Exception as exc:
            self._metrics.forward(len(batch), time.perf_counter() - started)
            self._stats.failed_batches += 1
            log.exception("replica_forward_failed", pool=self._pool_name, size=len(batch))
            error = exc if isinstance(exc, ScoringError) else ScoringError(f"{type(exc).__name__}: {exc}")
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(error)
            return
        self._metrics.forward(len(batch), time.perf_counter() - started)
        offset = 0
        for call in calls:
            part, offset = results[offset : offset + len(call.requests)], offset + len(call.requests)
            if not call.future.done():
                call.future.set_result(part)


# Every stream worker may have a call waiting here while a forward runs, hence the high concurrency.
GuardReplica: Any = ray.remote(max_concurrency=1000)(GuardReplicaImpl)  # type: ignore[call-overload]


def start_replica(
    model_name: str,
    spec: ModelSpec,
    settings: Settings,
    engine_factory: EngineFactory | None = None,
    *,
    name: str | None = None,
) -> Any:
    """Start one replica actor with the spec's resources and the restart policy.

    Returns the handle at once; ``ping`` answers once the model is loaded. ``engine_factory`` (default:
    ``LocalEngine``) is the seam for other runtimes; it is pickled to the actor.
    """
    options = GuardReplica.options(
        num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus,
        max_restarts=settings.replica_max_restarts,
        max_task_retries=settings.replica_max_task_retries,
        name=name,
    )
    return options.remote(model_name, spec, settings, engine_factory)


def _local_engine(spec: ModelSpec, settings: Settings) -> Engine:
    from workers.serving.local_engine import LocalEngine  # torch: only inside the actor

    return LocalEngine(spec, settings)
