"""Batches the stream worker has sent to the model pools and not yet answered.

Each batch is one ``ModelPools.submit`` (its ``PendingScore`` holds a Ray ``ObjectRef``); the worker keeps
polling Kafka while it scores and asks here, without blocking, which batches are done. Every way a call can
go wrong — the pool rejects it (unknown model), the replica raises, a replica stays dead after the pool's
retry, or it outlives ``score_timeout_s`` — comes back as an error string, so the worker applies the
tenant's ``on_error`` instead of stalling.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray

from workers.engine import ScoreRequest, ScoreResult
from workers.logging import get_logger

log = get_logger(__name__)


@dataclass
class InFlight:
    """One submitted batch: its items (the worker's), the pool's ``PendingScore`` and when it was sent."""

    model: str
    items: list[Any]
    pending: Any
    started: float
    size: int


Finished = tuple[InFlight, list[ScoreResult] | None, str | None]


class Scoring:
    """Tracks in-flight pool calls; ``finished`` returns (batch, results or None, error or None)."""

    def __init__(self, pools: Any, *, timeout_s: float) -> None:
        self._pools = pools
        self._timeout_s = timeout_s
        self._in_flight: list[InFlight] = []
        self._failed_now: list[Finished] = []
        self._names: dict[str, str] = {}

    @property
    def pending(self) -> int:
        return len(self._in_flight) + len(self._failed_now)

    def submit(self, model: str, items: list[Any], requests: Sequence[ScoreRequest]) -> None:
        """Send ``requests`` (one per item) as one call per target replica (conversation affinity)."""
        try:
            parts = self._pools.partition(model, requests)
        except Exception as exc:
            batch = InFlight(model, items, None, time.monotonic(), len(requests))
            self._failed_now.append((batch, None, _describe(exc)))
            return
        for replica, indices in parts:
            batch = InFlight(model, [items[i] for i in indices], None, time.monotonic(), len(indices))
            try:
                batch.pending = self._pools.submit(model, [requests[i] for i in indices], replica)
            except Exception as exc:
                self._failed_now.append((batch, None, _describe(exc)))
                continue
            self._in_flight.append(batch)

    def finished(self) -> list[Finished]:
        """Batches that are done, failed or timed out; never blocks."""
        out, self._failed_now = self._failed_now, []
        if not self._in_flight:
            return out
        refs = [b.pending.ref for b in self._in_flight]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)
        ready_set = set(ready)
        now = time.monotonic()
        still: list[InFlight] = []
        for batch in self._in_flight:
            if batch.pending.ref in ready_set:
                done = self._poll(batch)
                if done is None:
                    still.append(batch)  # re-sent to another replica: wait for it like a new call
                else:
                    out.append(done)
            elif now - batch.started > self._timeout_s:
                out.append(self._get(batch, timeout_s=0.0))  # the pool cancels it and raises
            else:
                still.append(batch)
        self._in_flight = still
        return out

    def wait(self, timeout_s: float) -> None:
        """Block until one batch is done or ``timeout_s`` passed (used while draining)."""
        if self._in_flight:
            ray.wait([b.pending.ref for b in self._in_flight], num_returns=1, timeout=timeout_s)

    def forget(self) -> None:
        """Drop every in-flight batch (after a rewind their answers would be stale)."""
        self._in_flight, self._failed_now = [], []

    def model_name(self, model: str) -> str:
        """The pool's model description for verdicts, asked once per pool (skipped events ask too, so a
        pool that can't answer, e.g. one the deployment lacks, is named by its pool name, warned once)."""
        if model not in self._names:
            try:
                self._names[model] = str(self._pools.model_label(model))
            except Exception as exc:
                log.warning("model_name_unavailable", model=model, error=_describe(exc))
                self._names[model] = model
        return self._names[model]

    def _poll(self, batch: InFlight) -> Finished | None:
        """A ready batch's outcome, or None if the pool re-sent it (its replica died); never blocks."""
        try:
            got = self._pools.poll(batch.pending)
        except Exception as exc:
            return (batch, None, _describe(exc))
        if isinstance(got, list):
            return self._check(batch, got)
        batch.pending = got
        return None

    def _get(self, batch: InFlight, *, timeout_s: float | None) -> Finished:
        """Collect through the pool: it retries a batch whose replica died, and keeps its load counts."""
        try:
            results = self._pools.result(batch.pending, timeout_s=timeout_s)
        except Exception as exc:
            return (batch, None, _describe(exc))
        return self._check(batch, results)

    @staticmethod
    def _check(batch: InFlight, results: Any) -> Finished:
        if not isinstance(results, list) or len(results) != batch.size:
            got = len(results) if isinstance(results, list) else type(results).__name__
            return (batch, None, f"pool returned {got} results for {batch.size} requests")
        return (batch, results, None)


def _describe(exc: BaseException) -> str:
    """One line; Ray wraps remote errors in long multi-line tracebacks."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]
