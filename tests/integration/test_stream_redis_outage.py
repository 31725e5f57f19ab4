"""Redis going down mid-stream: workers keep moderating on cached policies and say so (``policy_stale``).

Uses a throwaway ``redis-server`` on a free port: the shared one (6379) belongs to every other test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.policy import TenantPolicy
from tests.helpers.redis_server import RedisServer, redis_server
from tests.integration.stream_support import (
    delete_topics_of,
    event,
    isolated,
    keyed,
    produce,
    reading,
    streaming,
)
from workers.policies.redis_store import RedisPolicyStore
from workers.serving.pool import ModelPools
from workers.settings import ModelSpec, Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def outage_settings(
    settings: Settings, tiny_guard_path: Path, private_redis: RedisServer
) -> Iterator[Settings]:
    models = {"default": ModelSpec(path=tiny_guard_path, replicas=1, num_cpus=0.25)}
    made = isolated(
        settings,
        models=models,
        device="cpu",
        worker_num_cpus=0.1,
        stream_workers=1,
        redis_url=private_redis.url,
        redis_timeout_s=0.5,
        policy_refresh_s=0.5,
    )
    yield made
    delete_topics_of(made)


def test_stream_keeps_going_on_cached_policies_while_redis_is_down(
    ray_local: Any, outage_settings: Settings, private_redis: RedisServer
) -> None:
    settings = outage_settings
    acme = f"acme-{uuid.uuid4().hex[:8]}"
    with RedisPolicyStore(settings) as store:
        stored = store.put(TenantPolicy(tenant_id=acme, threshold=0.35))
    pools = ModelPools.start(settings, ready_timeout_s=300)
    try:
        with reading(settings, [settings.verdict_topic]) as reader, streaming(settings, pools) as running:
            before = [keyed(acme, "c", event(acme, "c", f"before-{i}", f"hi {i}")) for i in range(5)]
            produce(settings, before)
            reader.until(lambda out: len(out.records) == 5, timeout_s=120, what="verdicts before outage")
            private_redis.stop()
            during = [keyed(acme, "c", event(acme, "c", f"during-{i}", f"hi {i}")) for i in range(5)]
            produce(settings, during)
            out = reader.until(lambda o: len(o.records) == 10, timeout_s=60, what="verdicts during outage")
            report = running.stop()
    finally:
        pools.shutdown()
    verdicts = {v["event_id"]: v for v in out.on(settings.verdict_topic)}
    assert set(verdicts) == {f"{p}-{i}" for p in ("before", "during") for i in range(5)}
    for event_id, verdict in verdicts.items():
        assert verdict["threshold"] == 0.35 and verdict["policy_version"] == stored.version
        assert verdict["policy_stale"] is event_id.startswith("during"), verdict
    assert report.dead_letters == 0 and report.scoring_errors == 0
