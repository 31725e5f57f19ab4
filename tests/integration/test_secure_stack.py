"""The secured stack (`infra up --secure`): the stream end to end over SASL_SSL and TLS Redis with ACL users,
plaintext and wrong-password clients refused, and no secret in anything the stream prints or logs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from pydantic import SecretStr

from infra.local import up
from infra.secure_local import REDIS_ADMIN, REDIS_READER, REDIS_WRITER, client_settings
from schemas.policy import TenantPolicy
from tests.integration.stream_support import (
    delete_topics_of,
    event,
    isolated,
    keyed,
    produce,
    reading,
    streaming,
)
from workers.clients import kafka as kafka_clients
from workers.clients.security import redis_security_kwargs
from workers.errors import PolicyStoreUnavailable
from workers.policies.redis_store import RedisPolicyStore
from workers.serving.pool import ModelPools
from workers.settings import ModelSpec, Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure(settings: Settings) -> Settings:
    """The stream workers' view of the secured stack (read-only Redis user), started if needed."""
    base = settings.model_copy(update={"infra_secure": True})
    up(base)
    return client_settings(base)


def _admin(settings: Settings) -> KafkaAdminClient:
    return kafka_clients.admin(
        settings, client_id="guardstream-tests", request_timeout_ms=5000, bootstrap_timeout_ms=5000
    )


def test_plaintext_and_wrong_password_kafka_clients_are_refused(secure: Settings) -> None:
    _admin(secure).close()  # the right credentials work
    plaintext = secure.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    with pytest.raises(KafkaError):
        _admin(plaintext)
    wrong = secure.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    with pytest.raises(KafkaError) as refused:
        _admin(wrong)
    assert "not-the-password" not in str(refused.value)


def _redis(settings: Settings, **overrides: Any) -> redis.Redis:
    kwargs = {**redis_security_kwargs(settings), "socket_timeout": 2.0, **overrides}
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def test_redis_needs_tls_and_a_user_and_the_reader_cannot_write(secure: Settings) -> None:
    assert _redis(secure).ping()
    plain_url = secure.redis_url.replace("rediss://", "redis://")
    plain = {k: v for k, v in redis_security_kwargs(secure).items() if not k.startswith("ssl_")}
    with pytest.raises((redis.RedisError, OSError)):
        redis.Redis.from_url(plain_url, socket_timeout=2.0, **plain).ping()
    with pytest.raises(redis.AuthenticationError):
        _redis(secure, password="not-the-password").ping()
    with pytest.raises(redis.AuthenticationError):
        _redis(secure, username="default", password="").ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        _redis(secure).set("guardstream:policy:intruder", "{}")
    with RedisPolicyStore(secure) as reader, pytest.raises(PolicyStoreUnavailable):
        reader.put(TenantPolicy(tenant_id=f"intruder-{uuid.uuid4().hex[:6]}"))


@pytest.fixture(scope="module")
def secure_pools(secure: Settings, ray_local: Any, tiny_guard_path: Path) -> Iterator[ModelPools]:
    models = {"default": ModelSpec(path=tiny_guard_path, replicas=1, num_cpus=0.25)}
    started = ModelPools.start(
        secure.model_copy(update={"models": models, "device": "cpu"}), ready_timeout_s=300
    )
    yield started
    started.shutdown()


def test_stream_end_to_end_over_sasl_ssl_without_leaking_secrets(
    secure: Settings, secure_pools: ModelPools, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = isolated(
        secure, stream_workers=1, worker_num_cpus=0.1, unknown_tenant="reject", tenant_source="key"
    )
    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    with RedisPolicyStore(client_settings(secure, REDIS_WRITER)) as writer:
        writer.put(TenantPolicy(tenant_id=tenant, threshold=0.5))
    records = [keyed(tenant, f"c{i}", event(tenant, f"c{i}", f"e{i}", f"question {i}")) for i in range(6)]
    records.append((None, b'{"event_id": "broken", "messages": ['))
    # Keyed as another tenant: with tenant_source=key the payload's tenant must match the key's.
    records.append(keyed("kidsplay", "c0", event(tenant, "c0", "spoofed", "question")))
    try:
        produce(settings, records)
        topics = [settings.verdict_topic, settings.dlq_topic]
        with reading(settings, topics) as reader, streaming(settings, secure_pools) as running:
            reader.until(lambda out: len(out.records) >= len(records), timeout_s=180, what="all outputs")
            report = running.stop()
            outputs = reader.read()
    finally:
        delete_topics_of(settings)
    assert set(outputs.event_ids(settings.verdict_topic)) == {f"e{i}" for i in range(6)}
    letters = {d["event_id"]: d["error_code"] for d in outputs.on(settings.dlq_topic)}
    assert letters == {None: "invalid_json", "spoofed": "tenant_mismatch"}
    assert report.consumed >= len(records) and report.scoring_errors == 0
    printed = capfd.readouterr()
    shown = printed.out + printed.err + report.model_dump_json()
    for user in (REDIS_READER, REDIS_WRITER, REDIS_ADMIN):
        password = client_settings(secure, user).redis_password
        assert password is not None and password.get_secret_value() not in shown
    assert secure.kafka_sasl_password is not None
    assert secure.kafka_sasl_password.get_secret_value() not in shown
