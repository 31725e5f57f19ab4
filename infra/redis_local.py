"""The dev/CI Redis: Debian's ``redis-server`` with infra/redis/redis.conf, run detached."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

from infra.errors import InstallError
from infra.service import LocalService
from workers.clients.security import redact_url, redis_security_kwargs

REDIS_CONF = Path(__file__).resolve().parent / "redis" / "redis.conf"


def parse_redis_url(url: str) -> tuple[str, int]:
    """Host and port of a ``redis://host:port/db`` URL (port 6379 when omitted)."""
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"} or not parsed.hostname:
        raise ValueError(f"redis_url must look like redis://host:port/0, got {redact_url(url)!r}")
    return parsed.hostname, parsed.port or 6379


class RedisService(LocalService):
    name = "redis"
    grace_s = 10.0

    @property
    def address(self) -> str:
        return redact_url(self.settings.redis_url)

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_redis_url(self.settings.redis_url)

    @property
    def marker(self) -> str:
        return "redis-server"

    def prepare(self) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise InstallError("redis-server not found: run `make setup` (python -m infra.local install)")
        host, port = self.host_port
        return [
            binary,
            str(REDIS_CONF),
            "--bind",
            host,
            "--port",
            str(port),
            "--dir",
            str(self.home / "data"),
            "--logfile",
            "",
        ]

    def probe(self) -> bool:
        import redis

        client = redis.Redis.from_url(
            self.settings.redis_url,
            **redis_security_kwargs(self.settings),
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
