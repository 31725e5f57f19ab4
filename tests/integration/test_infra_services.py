"""The services infra/ starts are real and configured for what the stream needs: acks=all round trips,
transactions (exactly-once), Redis, Ray."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from infra.local import InfraStatus, up
from workers.settings import Settings


def _consume(bootstrap: str, topic: str, expected: int, **config: object) -> list[tuple[bytes, bytes]]:
    """Read ``expected`` records from the start of ``topic`` (bounded wait, no sleeps)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **config,
    )
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend((r.key, r.value) for r in records)
    finally:
        consumer.close()
    return got


def test_up_is_idempotent(infra_status: InfraStatus, settings: Settings) -> None:
    again = up(settings)
    assert again.all_answering
    assert [s.pid for s in again.services] == [s.pid for s in infra_status.services]


def test_produce_consume_round_trip_with_acks_all(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    from kafka import KafkaProducer

    topic = make_topic("roundtrip", partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    sent = [(f"acme:c{i}".encode(), f"event-{i}".encode()) for i in range(10)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=30)
    producer.close()

    assert sorted(_consume(kafka_bootstrap, topic, len(sent))) == sorted(sent)


def test_transactions_commit_and_abort(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    """Exactly-once needs the transaction coordinator: a read_committed consumer sees only committed data."""
    from kafka import KafkaProducer

    topic = make_topic("txn")
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"test-txn-{uuid.uuid4().hex[:8]}"
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, key=b"k", value=b"aborted")
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send(topic, key=b"k", value=b"committed-1")
    producer.send(topic, key=b"k", value=b"committed-2")
    producer.commit_transaction()
    producer.close()

    got = _consume(kafka_bootstrap, topic, 2, isolation_level="read_committed")
    assert [value for _, value in got] == [b"committed-1", b"committed-2"]


def test_redis_answers(redis_url: str) -> None:
    import redis

    key = f"guardstream:test:{uuid.uuid4().hex}"
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        client.set(key, "1", ex=60)
        assert client.get(key) == b"1"
        client.delete(key)


@pytest.mark.usefixtures("ray_local")
def test_ray_runs_a_task() -> None:
    import ray

    @ray.remote
    def add(x: int) -> int:
        return x + 1

    assert ray.get(add.remote(41), timeout=60) == 42
