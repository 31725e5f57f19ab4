"""Real Kafka, Redis and Ray for integration tests, started once per test run through infra/.

``infra.local.up`` is idempotent: services a developer (or an earlier run) already started are reused and
left running afterwards, so repeated runs don't pay the broker's start-up. Every test under this folder is
marked ``integration`` (deselect with ``-m "not integration"``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local import InfraStatus, up
from tests.integration.stream_support import delete_topics_of, isolated
from workers.serving.pool import ModelPools
from workers.settings import ModelSpec, Settings

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def infra_status() -> InfraStatus:
    """The services as `up` left them (raises with the service's log tail if one can't start)."""
    return up(Settings())


@pytest.fixture(scope="session")
def settings(infra_status: InfraStatus) -> Settings:
    """Settings pointing at the running services (from GUARDSTREAM_* env, defaults otherwise)."""
    return Settings()


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    return settings.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(settings: Settings) -> str:
    return settings.redis_url


@pytest.fixture(scope="session")
def ray_local(settings: Settings, ray_session: None) -> None:
    """The run's local Ray (``ray_session``), once the services are up."""


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test (``make_topic("verdicts", partitions=4)``); deleted after."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="guardstream-tests")
    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 1) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    yield make
    try:
        if created:
            admin.delete_topics(created)
    except KafkaError:
        pass  # a leftover test topic is harmless; never fail a test on cleanup
    finally:
        admin.close()


# --- the fault suite: one tiny-guard replica per module, topics and group of each test's own ----------------
@pytest.fixture(scope="module")
def fault_base(settings: Settings, tiny_guard_path: Path) -> Settings:
    models = {"default": ModelSpec(path=tiny_guard_path, replicas=1, num_cpus=0.25)}
    return settings.model_copy(update={"models": models, "device": "cpu", "worker_num_cpus": 0.1})


@pytest.fixture(scope="module")
def fault_pools(ray_local: Any, fault_base: Settings) -> Iterator[ModelPools]:
    started = ModelPools.start(fault_base, ready_timeout_s=300)
    yield started
    started.shutdown()


@pytest.fixture
def fault_isolate(fault_base: Settings) -> Iterator[Callable[..., Settings]]:
    made: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        made.append(isolated(fault_base, **overrides))
        return made[-1]

    yield make
    for settings in made:
        delete_topics_of(settings)
