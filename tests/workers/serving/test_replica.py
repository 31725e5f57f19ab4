"""GuardReplica on a real local Ray with the tiny guard: same scores as in-process, batching across
callers, and no lost request when the actor is killed mid-stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from tests.helpers.score_requests import assert_same_scores, cpu_settings, in_process_scores, make_requests
from workers.engine import ScoreResult
from workers.serving.replica import start_replica


@contextmanager
def running_replica(model_path: Path, **overrides: Any) -> Iterator[Any]:
    """A loaded replica actor (``ping`` answered), killed afterwards."""
    replica = start_replica("default", *cpu_settings(model_path, **overrides))
    try:
        assert ray.get(replica.ping.remote(), timeout=300) == "default"
        yield replica
    finally:
        ray.kill(replica)


def test_replica_scores_like_the_in_process_engine(ray_session: None, tiny_guard_path: Path) -> None:
    requests = make_requests(6)
    with running_replica(tiny_guard_path) as replica:
        results = ray.get(replica.score.remote(requests), timeout=120)
        assert [r.request_id for r in results] == [r.request_id for r in requests]
        assert_same_scores(results, in_process_scores(tiny_guard_path, requests))
        assert ray.get(replica.score.remote([])) == []
        assert ray.get(replica.model_name.remote())


def test_calls_from_two_callers_share_forward_batches(ray_session: None, tiny_guard_path: Path) -> None:
    with running_replica(tiny_guard_path, replica_batch_wait_ms=200, replica_max_batch=64) as replica:
        barrier = threading.Barrier(2)
        answers: dict[str, list[ScoreResult]] = {}

        def caller(name: str) -> None:
            barrier.wait()
            refs = [replica.score.remote(make_requests(2, f"{name}-{k}-")) for k in range(3)]
            answers[name] = [r for batch in ray.get(refs, timeout=120) for r in batch]

        threads = [threading.Thread(target=caller, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = ray.get(replica.stats.remote())
        assert stats["calls"] == 6 and stats["requests"] == 12
        assert stats["forward_batches"] < stats["calls"]
        assert sorted(answers) == ["a", "b"] and all(len(v) == 6 for v in answers.values())


def test_killed_replica_loses_no_request(ray_session: None, tiny_guard_path: Path) -> None:
    with running_replica(tiny_guard_path, replica_max_batch=4, replica_batch_wait_ms=0) as replica:
        batches = [make_requests(4, f"b{k}-") for k in range(8)]
        refs = [replica.score.remote(batch) for batch in batches]
        _, in_flight = ray.wait(refs, num_returns=1, timeout=120)
        ray.kill(replica, no_restart=False)
        assert in_flight, "every batch finished before the kill; the test proves nothing"
        results = ray.get(refs, timeout=300)
        for batch, answer in zip(batches, results, strict=True):
            assert [r.request_id for r in answer] == [r.request_id for r in batch]
        expected = in_process_scores(tiny_guard_path, [r for b in batches for r in b])
        assert_same_scores([r for answer in results for r in answer], expected)
