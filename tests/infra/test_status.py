"""Status of services nobody runs, and the Redis command line, without starting anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra.local import InfraStatus, ray_status, status
from infra.redis_local import REDIS_CONF, RedisService, parse_redis_url
from infra.service import ServiceStatus
from workers.settings import Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_running_is_reported_as_not_answering(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{_closed_port()}",
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
    )
    infra = status(settings)
    assert [s.name for s in infra.services] == ["kafka", "redis", "ray"]
    kafka, redis, _ = infra.services
    assert not kafka.answering and not kafka.managed and kafka.pid is None
    assert not redis.answering and redis.detail == "not running"
    assert not infra.all_answering


def test_status_round_trips_as_json() -> None:
    infra = InfraStatus(
        services=[ServiceStatus(name="redis", address="redis://x:1/0", answering=True, managed=False)]
    )
    assert InfraStatus.model_validate_json(infra.model_dump_json()) == infra
    assert infra.all_answering


def test_ray_status_follows_the_address_setting() -> None:
    assert ray_status(Settings()).address == "local"
    joined = ray_status(Settings(ray_address="ray://head:10001"))
    assert joined.address == "ray://head:10001" and not joined.managed


def test_redis_command_line_uses_the_project_config(tmp_path: Path) -> None:
    svc = RedisService(Settings(state_dir=tmp_path, redis_url="redis://127.0.0.1:16380/0"))
    argv = svc.argv()
    assert argv[1] == str(REDIS_CONF)
    assert argv[argv.index("--port") + 1] == "16380"
    assert argv[argv.index("--dir") + 1] == str(tmp_path.resolve() / "redis" / "data")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", ("127.0.0.1", 6379)),
        ("redis://cache.internal/2", ("cache.internal", 6379)),
    ],
)
def test_parse_redis_url(url: str, expected: tuple[str, int]) -> None:
    assert parse_redis_url(url) == expected


def test_parse_redis_url_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="redis://"):
        parse_redis_url("http://127.0.0.1:6379")
