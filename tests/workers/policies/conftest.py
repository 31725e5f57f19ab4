"""Policy-store fixtures: a private Redis per module, so tests can flush it and stop it at will."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.redis_server import RedisServer, redis_server
from workers.settings import Settings


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture
def store_settings(private_redis: RedisServer) -> Settings:
    import redis

    with redis.Redis.from_url(private_redis.url) as client:
        client.flushdb()
    return Settings(redis_url=private_redis.url, policy_refresh_s=30.0, redis_timeout_s=0.5)
