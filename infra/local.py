"""Start, stop and inspect the local Kafka, Redis and Ray that guardstream runs on.

``python -m infra.local install|up|down|status`` (the Makefile's `setup` runs `install`); the CLI's
`guardstream infra ...` calls the same functions. `up` is idempotent: what already answers is reused, so a
test session, the demo and a person's shell can all call it.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict

from infra.install import install, kafka_jars_current
from infra.kafka_local import KafkaService
from infra.redis_local import RedisService
from infra.secure_local import secure_services, write_env_files
from infra.service import LocalService, ServiceStatus
from workers.logging import configure_logging, get_logger
from workers.settings import Settings, get_settings

log = get_logger(__name__)


class InfraStatus(BaseModel):
    """Every service's status, in start order."""

    model_config = ConfigDict(frozen=True)

    services: list[ServiceStatus]

    @property
    def all_answering(self) -> bool:
        return all(s.answering for s in self.services)


def services(settings: Settings) -> list[LocalService]:
    """The services infra/ manages, in start order: the secured pair when ``settings.infra_secure``."""
    if settings.infra_secure:
        return secure_services(settings)
    return [KafkaService(settings), RedisService(settings)]


def ray_status(settings: Settings) -> ServiceStatus:
    """Ray isn't a daemon here: each command starts a local Ray in-process unless an address is set."""
    if settings.ray_address:
        return ServiceStatus(
            name="ray",
            address=settings.ray_address,
            answering=False,
            managed=False,
            detail="joined by each command (not probed)",
        )
    return ServiceStatus(
        name="ray",
        address="local",
        answering=True,
        managed=False,
        detail="started in-process by each command (ray.init)",
    )


def up(settings: Settings) -> InfraStatus:
    """Start what isn't running, then wait until every service answers (bounded by the settings)."""
    if not kafka_jars_current() and KafkaService(settings).local:
        install()
    started = [(svc, svc.start()) for svc in services(settings)]
    for svc, pid in started:
        svc.wait_ready(pid, settings.infra_start_timeout_s)
    if settings.infra_secure:
        for path in write_env_files(settings):
            log.info("secure_env_written", path=str(path))
    return status(settings)


def down(settings: Settings) -> list[str]:
    """Stop the services this state dir started (never ones it didn't); the names stopped."""
    return [svc.name for svc in reversed(services(settings)) if svc.stop()]


def status(settings: Settings) -> InfraStatus:
    return InfraStatus(services=[*(svc.status() for svc in services(settings)), ray_status(settings)])


def main(argv: list[str]) -> int:
    """Tiny entry point without typer so `make setup` works before the CLI is importable."""
    settings = get_settings()
    configure_logging(fmt="console", level=settings.log_level)
    command = argv[0] if argv else "status"
    if command == "install":
        install()
    elif command == "up":
        print(up(settings).model_dump_json(indent=2))
    elif command == "down":
        print("stopped:", ", ".join(down(settings)) or "nothing")
    elif command == "status":
        print(status(settings).model_dump_json(indent=2))
    else:
        print("usage: python -m infra.local install|up|down|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
