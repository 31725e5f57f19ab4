"""``ModelPools``: one pool of ``GuardReplica`` actors per configured model, and how callers reach them.

Tenant policies route by model name (``TenantPolicy.route.model``), so pools are keyed by the names in
``settings.models``; two tenants can run on different checkpoints in one deployment.

Why a plain picklable object holding actor handles rather than another actor in front of the replicas: a
router actor would add a hop and become the one thing every batch waits on. ``ModelPools`` is created once
by the driver (``ModelPools.start``) and passed to each stream-worker actor as an argument; every copy
dispatches directly to the replicas. Batching across workers happens in the replicas themselves. A copy
carries the replicas' *names*, not their handles (``__reduce__``), and looks them up where it lands: an
actor handle among a restartable actor's constructor arguments makes Ray log an error on every start
(ray-project/ray#53727), and a name still resolves after that replica restarts.

Dispatch is conversation-affine: ``partition`` groups a batch's requests by the replica that owns their
``affinity`` (``tenant:conversation``, ``routing.py``), so a conversation's events meet the replica whose
KV cache holds its history; requests without one, or whose owner is saturated or was just found dead, go
least-outstanding (per copy, ties broken at random so workers spread out). ``submit`` returns at once, so
a stream worker can keep polling Kafka while batches score, and ``result`` collects. A call slower than
``settings.score_timeout_s`` raises ``ScoringError``; a replica that died and could not be recovered by
Ray's own task retries is retried once on another one.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError, RayTaskError

from workers.engine import ScoreRequest, ScoreResult
from workers.errors import ScoringError, UnknownModelError
from workers.logging import get_logger
from workers.serving.replica import EngineFactory, start_replica
from workers.serving.routing import partition
from workers.settings import Settings

log = get_logger(__name__)

_REPLICA_GONE = (RayActorError, ActorUnavailableError)


@dataclass
class PendingScore:
    """A submitted batch: ``ref`` is a Ray ObjectRef (usable with ``ray.wait``); pass it to ``result``."""

    model: str
    requests: list[ScoreRequest]
    ref: Any
    replica: int
    submitted_at: float
    attempt: int = 0


class ModelPools:
    """Replica handles per model name, plus the dispatch, timeout and retry rules around them."""

    def __init__(
        self, settings: Settings, replicas: dict[str, list[Any]], names: dict[str, list[str]] | None = None
    ) -> None:
        self._settings = settings
        self._names = names
        self._timeout_s = settings.score_timeout_s
        self._replicas = {name: list(handles) for name, handles in replicas.items()}
        self._outstanding = {name: [0] * len(handles) for name, handles in self._replicas.items()}
        self._down: dict[str, dict[int, float]] = {name: {} for name in self._replicas}
        self._max_outstanding = settings.affinity_max_outstanding
        self._down_s = settings.replica_down_s
        self._labels: dict[str, str] = {}

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        ready_timeout_s: float = 600.0,
        engine_factory: EngineFactory | None = None,
    ) -> ModelPools:
        """Start ``spec.replicas`` actors for every model in ``settings.models`` and wait until all load."""
        tag = uuid.uuid4().hex[:8]  # several deployments (or tests) may share one Ray cluster
        names = {
            model: [f"guardstream-{tag}-{model}-{i}" for i in range(spec.replicas)]
            for model, spec in settings.models.items()
        }
        replicas = {
            model: [start_replica(model, spec, settings, engine_factory, name=n) for n in names[model]]
            for model, spec in settings.models.items()
        }
        pools = cls(settings, replicas, names)
        try:
            pools.wait_ready(ready_timeout_s)
        except BaseException:
            pools.shutdown()
            raise
        return pools

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle by replica names (module docstring); a copy starts with fresh load and health views."""
        if self._names is None:
            return (_rebuild, (self._settings, self._replicas, None, self._labels))
        return (_rebuild, (self._settings, None, self._names, self._labels))

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._replicas)

    def replicas(self, model: str) -> list[Any]:
        """The actor handles of one pool (e.g. for a test to kill one)."""
        return list(self._handles(model))

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        """Block until every replica has loaded its model; cache each pool's model label."""
        pings = [h.ping.remote() for handles in self._replicas.values() for h in handles]
        labels = {name: handles[0].model_name.remote() for name, handles in self._replicas.items()}
        try:
            ray.get(pings, timeout=timeout_s)
            self._labels = dict(zip(labels, ray.get(list(labels.values()), timeout=timeout_s), strict=True))
        except GetTimeoutError as exc:
            raise ScoringError(f"model replicas did not load within {timeout_s:g}s") from exc
        except (RayTaskError, *_REPLICA_GONE) as exc:
            raise ScoringError(f"a model replica failed to start: {exc}") from exc
        log.info("model_pools_ready", pools={n: len(h) for n, h in self._replicas.items()})

    def model_label(self, model: str) -> str:
        """What verdicts name as the model, e.g. ``llama-guard-3 @ /models/x`` (after ``wait_ready``)."""
        self._handles(model)
        if model not in self._labels:
            self._labels[model] = ray.get(self._replicas[model][0].model_name.remote(), timeout=60)
        return self._labels[model]

    def partition(self, model: str, requests: Sequence[ScoreRequest]) -> list[tuple[int | None, list[int]]]:
        """Indices of ``requests`` grouped by target replica (None: least loaded); submit each group."""
        handles = self._handles(model)
        now = time.monotonic()
        live = [i for i in range(len(handles)) if self._down[model].get(i, 0.0) <= now]
        keys = [r.affinity for r in requests]
        return partition(keys, live, self._outstanding[model], self._max_outstanding)

    def submit(
        self, model: str, requests: Sequence[ScoreRequest], replica: int | None = None
    ) -> PendingScore:
        """Send one batch to ``replica`` (from ``partition``) or the least-loaded one; returns at once."""
        return self._send(model, list(requests), attempt=0, avoid=None, prefer=replica)

    def result(self, pending: PendingScore, timeout_s: float | None = None) -> list[ScoreResult]:
        """Block for a submitted batch's results (same order as its requests).

        Raises ``ScoringError`` on timeout (``settings.score_timeout_s`` from submit, unless given), model
        error, or a replica that stayed dead after one retry elsewhere.
        """
        while True:
            try:
                results: list[ScoreResult] = ray.get(pending.ref, timeout=self._remaining(pending, timeout_s))
            except (TimeoutError, RayError) as exc:
                pending = self._recover(pending, exc)
                continue
            self._done(pending)
            return results

    def poll(self, pending: PendingScore) -> list[ScoreResult] | PendingScore:
        """``result`` without waiting, for a batch ``ray.wait`` reported ready: its results, or, if its
        replica died, the batch re-sent to another replica (a new ``PendingScore`` to wait for).

        The stream's poll thread uses this: ``result`` would block in ``ray.get`` on the re-sent call for up
        to ``score_timeout_s``, far past the consumer's ``max_poll_interval``. Raises like ``result``.
        """
        try:
            results: list[ScoreResult] = ray.get(pending.ref, timeout=0)
        except TimeoutError:  # not ready after all (ray's GetTimeoutError is one)
            return pending
        except RayError as exc:
            return self._recover(pending, exc)
        self._done(pending)
        return results

    def score(self, model: str, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Partition, submit and wait: the blocking form; results in request order."""
        parts = [
            (indices, self.submit(model, [requests[i] for i in indices], replica))
            for replica, indices in self.partition(model, requests)
        ]
        out: dict[int, ScoreResult] = {}
        for indices, pending in parts:
            out.update(zip(indices, self.result(pending), strict=True))
        return [out[i] for i in range(len(requests))]

    def engine(self, model: str) -> PooledEngine:
        """One pool seen through the ``Engine`` interface (for code written against it)."""
        self._handles(model)
        return PooledEngine(self, model)

    def shutdown(self) -> None:
        """Kill every replica actor (no restart)."""
        for handles in self._replicas.values():
            for handle in handles:
                ray.kill(handle, no_restart=True)

    # --- internals ------------------------------------------------------------------------------------
    def _handles(self, model: str) -> list[Any]:
        try:
            return self._replicas[model]
        except KeyError:
            raise UnknownModelError(
                f"no model pool named {model!r} (configured: {', '.join(sorted(self._replicas))}); "
                "add it to GUARDSTREAM_MODELS or fix the tenant policy's route.model"
            ) from None

    def _send(
        self,
        model: str,
        requests: list[ScoreRequest],
        *,
        attempt: int,
        avoid: int | None,
        prefer: int | None = None,
    ) -> PendingScore:
        handles = self._handles(model)
        load = self._outstanding[model]
        if prefer is not None and prefer != avoid and 0 <= prefer < len(handles):
            index = prefer
        else:
            now = time.monotonic()
            up = [i for i in range(len(handles)) if i != avoid and self._down[model].get(i, 0.0) <= now]
            candidates = up or [i for i in range(len(handles)) if i != avoid] or list(range(len(handles)))
            least = min(load[i] for i in candidates)
            index = random.choice([i for i in candidates if load[i] == least])
        load[index] += 1
        ref = handles[index].score.remote(requests)
        return PendingScore(model, requests, ref, index, time.monotonic(), attempt)

    def _recover(self, pending: PendingScore, exc: BaseException) -> PendingScore:
        """A retried call for a replica that is gone; otherwise raise the failure as ``ScoringError``."""
        if isinstance(exc, _REPLICA_GONE):
            return self._retry(pending, exc)
        self._done(pending)
        if isinstance(exc, TimeoutError):  # ray's GetTimeoutError is one
            ray.cancel(pending.ref)
            raise ScoringError(f"scoring {len(pending.requests)} requests timed out") from None
        cause = exc.cause if isinstance(exc, RayTaskError) else exc
        raise ScoringError(f"model pool {pending.model!r}: {cause or exc}") from exc

    def _retry(self, pending: PendingScore, exc: BaseException) -> PendingScore:
        self._done(pending)
        if pending.attempt >= 1:
            raise ScoringError(f"model pool {pending.model!r}: replica died twice: {exc}") from exc
        log.warning("replica_died_retrying", model=pending.model, replica=pending.replica, error=str(exc))
        self._down[pending.model][pending.replica] = time.monotonic() + self._down_s
        retried = self._send(pending.model, pending.requests, attempt=1, avoid=pending.replica)
        retried.submitted_at = pending.submitted_at
        return retried

    def _remaining(self, pending: PendingScore, timeout_s: float | None) -> float:
        budget = self._timeout_s if timeout_s is None else timeout_s
        return max(0.0, budget - (time.monotonic() - pending.submitted_at))

    def _done(self, pending: PendingScore) -> None:
        load = self._outstanding[pending.model]
        load[pending.replica] = max(0, load[pending.replica] - 1)


class PooledEngine:
    """A model pool behind the ``Engine`` protocol: ``score`` blocks until the pool answers."""

    def __init__(self, pools: ModelPools, model: str) -> None:
        self._pools = pools
        self._model = model

    @property
    def model_name(self) -> str:
        return self._pools.model_label(self._model)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self._pools.score(self._model, requests)


def _rebuild(
    settings: Settings,
    replicas: dict[str, list[Any]] | None,
    names: dict[str, list[str]] | None,
    labels: dict[str, str],
) -> ModelPools:
    """Unpickle a ``ModelPools``: handles looked up by name in this process's Ray namespace."""
    if replicas is None:
        assert names is not None
        replicas = {model: [ray.get_actor(n) for n in ns] for model, ns in names.items()}
    pools = ModelPools(settings, replicas, names)
    pools._labels = dict(labels)
    return pools
