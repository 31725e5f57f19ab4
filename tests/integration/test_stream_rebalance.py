"""A rebalance that hands a partition straight back to its consumer must not skip the records in flight.

kafka-python 3 keeps a partition's fetch position when the same consumer is assigned it again, but the
worker drops its unanswered records on revoke. Unless it seeks back to the first unacknowledged one they
are never read again: lost verdicts, and offsets committed past them. Scoring is slowed down so that
records are surely in flight when a second group member joins and forces the rebalance.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from schemas.policy import TenantPolicy
from tests.integration.stream_support import (
    committed,
    delete_topics_of,
    end_offsets,
    event,
    isolated,
    keyed,
    produce,
    reading,
    start_in_thread,
)
from workers.clients import kafka as kafka_clients
from workers.clients.kafka import ensure_topics
from workers.engine import Engine, ScoreRequest, ScoreResult
from workers.policies.redis_store import RedisPolicyStore
from workers.serving.pool import ModelPools
from workers.settings import ModelSpec, Settings

pytestmark = pytest.mark.integration

EVENTS = 24
LATER = 8
SLOW_S = 1.5


class SlowEngine:
    """The tiny guard, one and a half seconds per call: batches stay in flight across a rebalance."""

    def __init__(self, spec: ModelSpec, settings: Settings) -> None:
        from workers.serving.local_engine import LocalEngine

        self._inner = LocalEngine(spec, settings)

    @property
    def model_name(self) -> str:
        return self._inner.model_name

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        time.sleep(SLOW_S)
        return self._inner.score(requests)


def slow_engine(spec: ModelSpec, settings: Settings) -> Engine:
    return SlowEngine(spec, settings)


@pytest.fixture
def mine(settings: Settings, tiny_guard_path: Path) -> Iterator[Settings]:
    models = {"default": ModelSpec(path=tiny_guard_path, replicas=1, num_cpus=0.25)}
    isolated_settings = isolated(
        settings,
        models=models,
        device="cpu",
        worker_num_cpus=0.1,
        topic_partitions=1,
        stream_workers=1,
        batch_size=4,
        replica_max_batch=4,
    )
    yield isolated_settings
    delete_topics_of(isolated_settings)


@contextmanager
def second_member(settings: Settings) -> Iterator[None]:
    """A second member of the stream's group (on a topic of its own) for the block: the group rebalances
    when it joins and when it leaves. It keeps polling on its own thread, as a live member must; one that
    stops would hold every later rebalance of the group for its whole rebalance timeout."""
    other = f"{settings.consumer_group}.other"
    ensure_topics(settings, [other])
    joiner = kafka_clients.reader(settings, group_id=settings.consumer_group)
    joiner.subscribe([other])
    stop, joined = threading.Event(), threading.Event()

    def spin() -> None:
        while not stop.is_set():
            joiner.poll(timeout_ms=200)
            if joiner.assignment():
                joined.set()
        joiner.close()

    thread = threading.Thread(target=spin, name="second-member", daemon=True)
    thread.start()
    try:
        assert joined.wait(60), "the second member never joined the group"
        yield
    finally:
        stop.set()
        thread.join(30)


def test_partition_kept_through_a_rebalance_rereads_what_was_in_flight(
    mine: Settings, ray_local: Any
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    with RedisPolicyStore(mine) as store:
        store.put(TenantPolicy(tenant_id=tenant))
    pools = ModelPools.start(mine, ready_timeout_s=300, engine_factory=slow_engine)
    try:

        def events(first: int, last: int) -> list[tuple[bytes, bytes]]:
            return [
                keyed(tenant, f"c{i % 3}", event(tenant, f"c{i % 3}", f"e{i}", f"hi {i}"))
                for i in range(first, last)
            ]

        produce(mine, events(0, EVENTS))
        running = start_in_thread(mine, pools)
        with reading(mine, [mine.verdict_topic]) as reader:
            reader.until(lambda o: len(o.records) >= 1, timeout_s=120, what="the first verdict")
            with second_member(mine):  # the worker revokes its partition mid-flight and gets it back
                # Records read after the rebalance get answered and committed: had the worker skipped
                # the dropped ones, these commits would pass them for good (no later re-read finds them).
                produce(mine, events(EVENTS, EVENTS + LATER))
                out = reader.until(
                    lambda o: len(set(o.event_ids(mine.verdict_topic))) >= EVENTS + LATER,
                    timeout_s=120,
                    what=f"a verdict for each of the {EVENTS + LATER} events",
                )
            report = running.stop()
        assert set(out.event_ids(mine.verdict_topic)) == {f"e{i}" for i in range(EVENTS + LATER)}
        assert report.in_flight == 0
        assert committed(mine) == end_offsets(mine)
    finally:
        pools.shutdown()
