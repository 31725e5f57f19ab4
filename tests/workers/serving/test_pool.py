"""ModelPools on a real local Ray with the tiny guard: routing by model name, parity with the in-process
engine, use from another actor, timeouts, unknown models and a replica killed mid-stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from schemas.events import Message
from schemas.taxonomy import Generation, Taxonomy
from tests.helpers.score_requests import assert_same_scores, in_process_scores, make_requests
from workers.engine import Engine, ScoreRequest, ScoreResult
from workers.errors import ScoringError, UnknownModelError
from workers.serving.pool import ModelPools
from workers.settings import ModelSpec, Settings


@pytest.fixture(scope="module")
def pools(tiny_guard_path: Path, ray_session: None) -> Iterator[ModelPools]:
    models = {
        "default": ModelSpec(path=tiny_guard_path, replicas=2, num_cpus=0.25),
        "small": ModelSpec(path=tiny_guard_path, replicas=1, num_cpus=0.25),
    }
    # One call per forward, so a replica killed mid-stream surely has batches in flight.
    settings = Settings(models=models, device="cpu", replica_max_batch=4, replica_batch_wait_ms=0)
    started = ModelPools.start(settings, ready_timeout_s=300)
    yield started
    started.shutdown()


@ray.remote(num_cpus=0.1)
def score_elsewhere(pools: ModelPools, model: str, prefix: str) -> list[ScoreResult]:
    """Stands in for a stream-worker actor that received the pools as an argument."""
    return pools.score(model, make_requests(3, prefix))


def test_every_pool_scores_like_the_in_process_engine(pools: ModelPools, tiny_guard_path: Path) -> None:
    requests = make_requests(8)
    expected = in_process_scores(tiny_guard_path, requests)
    assert set(pools.models) == {"default", "small"}
    for model in pools.models:
        results = pools.score(model, requests)
        assert [r.request_id for r in results] == [r.request_id for r in requests]
        assert_same_scores(results, expected)
        assert pools.model_label(model)


def test_pools_travel_to_other_actors(pools: ModelPools) -> None:
    refs = [score_elsewhere.remote(pools, "default", f"w{k}-") for k in range(3)]
    for k, results in enumerate(ray.get(refs, timeout=120)):
        assert [r.request_id for r in results] == [f"w{k}-{i}" for i in range(3)]


def test_a_copy_carries_replica_names_not_handles(pools: ModelPools) -> None:
    """A restartable actor given actor handles in its constructor arguments makes Ray log an error at every
    start (ray-project/ray#53727); a pickled pool holds only names and resolves them where it lands."""
    import pickle

    from ray.actor import ActorHandle

    reduced = pools.__reduce__()[1]
    settings, handles, names, _labels = reduced
    assert handles is None and not isinstance(settings, ActorHandle)
    assert {m: len(ns) for m, ns in names.items()} == {"default": 2, "small": 1}
    copy = pickle.loads(pickle.dumps(pools))
    assert [r.request_id for r in copy.score("small", make_requests(2, "copy-"))] == ["copy-0", "copy-1"]


def test_submit_returns_at_once_and_spreads_over_replicas(pools: ModelPools) -> None:
    pending = [pools.submit("default", make_requests(2, f"s{k}-")) for k in range(6)]
    assert {p.replica for p in pending} == {0, 1}
    ray.wait([p.ref for p in pending], num_returns=len(pending), timeout=120)
    assert [len(pools.result(p)) for p in pending] == [2] * 6


def test_engine_view_and_unknown_model(pools: ModelPools) -> None:
    engine = pools.engine("small")
    assert isinstance(engine, Engine) and engine.model_name == pools.model_label("small")
    assert len(engine.score(make_requests(1))) == 1
    with pytest.raises(UnknownModelError, match="no model pool named 'nope'"):
        pools.submit("nope", make_requests(1))


def test_timeout_is_a_scoring_error(pools: ModelPools) -> None:
    pending = pools.submit("small", make_requests(16, "slow-"))
    with pytest.raises(ScoringError, match="timed out"):
        pools.result(pending, timeout_s=0.0)


def _conversation(i: int, turn: int) -> ScoreRequest:
    """Turn ``turn`` (1 or 2) of conversation ``i``, prompt side, keyed for affinity."""
    messages = [Message(role="user", content=f"Conversation {i}: " + "tell me about baking bread. " * 5)]
    if turn == 2:
        messages += [
            Message(role="assistant", content="Flour, water, salt."),
            Message(role="user", content="And?"),
        ]
    return ScoreRequest(
        request_id=f"conv{i}-t{turn}",
        messages=tuple(messages),
        side="prompt",
        taxonomy=Taxonomy(generation=Generation.LG3),
        decode_categories_at=None,
        cache_scope="acme",
        affinity=f"acme:conv{i}",
    )


@ray.remote(num_cpus=0.1)
def partition_elsewhere(
    pools: ModelPools, requests: list[ScoreRequest]
) -> list[tuple[int | None, list[int]]]:
    return pools.partition("default", requests)


def test_a_conversation_stays_on_its_replica_and_hits_its_cache(pools: ModelPools) -> None:
    """Every pool copy sends a conversation to the same replica, so its second turn reuses the first
    turn's keys/values there (with random dispatch about half of them would land on a cold replica)."""
    first = [_conversation(i, 1) for i in range(8)]
    second = [_conversation(i, 2) for i in range(8)]
    here = pools.partition("default", first)
    assert ray.get(partition_elsewhere.remote(pools, first), timeout=60) == here
    assert {replica for replica, _ in here} == {0, 1}
    owners = {i: replica for replica, indices in here for i in indices}
    assert {i: r for r, indices in pools.partition("default", second) for i in indices} == owners
    before = pools.score("default", first)
    after = pools.score("default", second)
    for one, two in zip(before, after, strict=True):
        assert two.cached_tokens >= one.cached_tokens + 20, (one, two)


def test_replica_killed_mid_stream_loses_nothing(pools: ModelPools, tiny_guard_path: Path) -> None:
    batches = [make_requests(4, f"k{k}-") for k in range(12)]
    pending = [pools.submit("default", batch) for batch in batches]
    _, in_flight = ray.wait([p.ref for p in pending], num_returns=1, timeout=120)
    ray.kill(pools.replicas("default")[0], no_restart=False)
    assert in_flight, "every batch finished before the kill; the test proves nothing"
    results = [pools.result(p) for p in pending]
    for batch, answer in zip(batches, results, strict=True):
        assert [r.request_id for r in answer] == [r.request_id for r in batch]
    expected = in_process_scores(tiny_guard_path, [r for b in batches for r in b])
    assert_same_scores([r for answer in results for r in answer], expected)
    assert len(pools.score("default", make_requests(2, "after-"))) == 2


def test_a_dead_owner_hands_its_conversations_to_a_live_replica(pools: ModelPools) -> None:
    """The owner of a conversation is gone for good (a restarted one simply takes its calls back: Ray
    retries them there); the call retried elsewhere marks it down, and the conversation's next requests
    go to the other replica. Last in the module: the pool is left with one replica."""
    request = _conversation(100, 1)
    ((home, _),) = pools.partition("default", [request])
    assert home is not None
    ray.kill(pools.replicas("default")[home], no_restart=True)
    pending = pools.submit("default", [request], home)
    (result,) = pools.result(pending)
    assert result.request_id == request.request_id and result.error is None
    ((moved, _),) = pools.partition("default", [_conversation(100, 2)])
    assert moved is not None and moved != home
