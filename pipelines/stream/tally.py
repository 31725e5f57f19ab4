"""The driver's view of its stream workers, which survives a worker dying and being restarted by Ray.

A stream-worker actor that dies (OOM, ``kill -9``, a lost node) is restarted by Ray (``max_restarts=-1``);
its partitions are re-read from the committed offsets, by the restarted actor or the others after the
rebalance. While that happens the actor answers ``ActorUnavailableError`` (or ``ActorDiedError``), and a
``stream`` command that let that escape exited 1 with records unanswered. Here an unavailable worker keeps
its last known counters (reported ``running: false``, never idle, so ``--idle-exit`` waits for it), and a
restarted one — seen by a new ``incarnation`` in its stats — has its earlier life's counters carried over,
so the report covers the whole run. ``consumed`` then counts records read twice (before and after the
restart); ``verdicts``/``dead_letters`` count outputs, which at-least-once mode may repeat.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from workers.logging import get_logger

log = get_logger(__name__)

COUNTERS = ("consumed", "verdicts", "dead_letters", "scoring_errors", "batches", "watchdog_rebuilds")
STATS_TIMEOUT_S = 10.0
"""How long one worker's ``stats`` may take before it counts as unavailable for this round."""


class WorkerTally:
    """Per-worker stats for the driver loop and the final report; ``restarts`` counts actor restarts."""

    def __init__(self, workers: Sequence[Any]) -> None:
        self._workers = list(workers)
        self._last: list[dict[str, Any]] = [{} for _ in self._workers]
        self._carried: list[dict[str, int]] = [dict.fromkeys(COUNTERS, 0) for _ in self._workers]
        self._down: list[bool] = [False for _ in self._workers]
        self.restarts = 0
        # Learn each worker's first incarnation now: a worker killed before the driver's first periodic
        # ``stats`` would otherwise come back with nothing to compare against, and its restart go uncounted.
        self.stats()

    def stats(self) -> list[dict[str, Any]]:
        """Every worker's counters now (the last known ones for a worker that cannot answer)."""
        return self._gather(lambda worker: worker.stats.remote(), STATS_TIMEOUT_S)

    def drain(self, timeout_s: float) -> list[dict[str, Any]]:
        """Drain every worker concurrently; one that is restarting is retried until ``timeout_s``."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + timeout_s
        # First every worker finishes and commits, then all leave: the first to leave the group starts a
        # rebalance that would fail the commits of the others still draining.
        finishing = [w.finish.remote(max(1.0, timeout_s - 60)) for w in self._workers]
        ray.wait(finishing, num_returns=len(finishing), timeout=max(1.0, timeout_s - 50))
        pending = {
            i: w.drain.remote(max(1.0, deadline - time.monotonic() - 30)) for i, w in enumerate(self._workers)
        }
        final: dict[int, dict[str, Any]] = {}
        while pending and time.monotonic() < deadline:
            for i, ref in list(pending.items()):
                try:
                    final[i] = self._account(i, ray.get(ref, timeout=max(0.1, deadline - time.monotonic())))
                    del pending[i]
                except RayActorError:
                    time.sleep(1.0)  # restarting: ask the new incarnation to drain
                    pending[i] = self._workers[i].drain.remote(max(1.0, deadline - time.monotonic() - 5))
                except GetTimeoutError:
                    break
        for i in pending:
            log.error("stream_worker_drain_failed", worker=self._last[i].get("worker_id", f"#{i}"))
            final[i] = self._unavailable(i)
        return [final[i] for i in range(len(self._workers))]

    def _gather(self, call: Callable[[Any], Any], timeout_s: float) -> list[dict[str, Any]]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        refs = [call(worker) for worker in self._workers]
        deadline = time.monotonic() + timeout_s
        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(self._account(i, ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))))
            except (RayActorError, GetTimeoutError) as exc:
                out.append(self._unavailable(i, exc))
        return out

    def _account(self, i: int, current: dict[str, Any]) -> dict[str, Any]:
        last = self._last[i]
        if last and current.get("incarnation") != last.get("incarnation"):
            self.restarts += 1
            for name in COUNTERS:
                self._carried[i][name] += int(last.get(name, 0))
            log.warning("stream_worker_restarted", worker=current.get("worker_id"), restarts=self.restarts)
        if self._down[i]:
            self._down[i] = False
            log.info("stream_worker_available", worker=current.get("worker_id"))
        self._last[i] = current
        merged = dict(current)
        for name in COUNTERS:
            merged[name] = int(current.get(name, 0)) + self._carried[i][name]
        return merged

    def _unavailable(self, i: int, exc: BaseException | None = None) -> dict[str, Any]:
        if not self._down[i]:
            self._down[i] = True
            log.warning(
                "stream_worker_unavailable",
                worker=self._last[i].get("worker_id", f"#{i}"),
                error=type(exc).__name__ if exc else "drain timeout",
            )
        merged = {**self._last[i], "running": False, "idle_s": 0.0}
        for name in COUNTERS:
            merged[name] = int(self._last[i].get(name, 0)) + self._carried[i][name]
        merged.setdefault("in_flight", 0)
        merged.setdefault("committed", {})
        return merged
